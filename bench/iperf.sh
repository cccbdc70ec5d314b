#!/usr/bin/env bash
# iperf.sh: iperf3 through sluice with proxychains4, the way users run it,
# beside iperf3 direct (and with PEER=dante through Dante too): 1 stream and
# -P 4, each normal and reversed (-R). A proxied run counts only when
# proxychains4 reports each of iperf3's connections (control, and one per
# stream) made through the proxy; otherwise it is a failed run.
# Not measured: --bidir (it works through sluice: TestIperf3Proxychains)
# and -u: proxychains4 hooks TCP connects only, so iperf3 -u under it sends
# its control connection through the proxy and its datagrams straight to
# the server, and its figure is not the proxy's (bench/udp.md measures UDP
# ASSOCIATE with sluice-bench).
#
# usage: bench/iperf.sh [path/to/sluice]     (builds ./cmd/sluice when omitted)
# env:   DURATION=5       seconds per iperf3 run
#        RUNS=3           runs of each; the median is reported
#        PORT_BASE=17300  first of the loopback ports used
#        PEER=            dante: also through Dante (danted), in two more
#                         columns; empty: sluice only
#        OUT=             when set, also write the table to $OUT/iperf.md
#                         (bench/peers.sh includes it in RESULTS.md)
#
# iperf3, proxychains4 and jq are installed with apt-get when missing; no
# service is left running. Everything listens on 127.0.0.1 only and every
# process this script starts is stopped by PID on exit.
set -euo pipefail

# A sluice path relative to the directory this script is run from is made
# absolute before the cd to the repository root.
case ${1:-} in /* | '') ;; */*) set -- "$PWD/$1" "${@:2}" ;; esac
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
RUNS=${RUNS:-3}
OUT=${OUT:-}
PORT_BASE=${PORT_BASE:-17300}
SLUICE=${1:-}
IPERF_PORT=$((PORT_BASE + 1))
PROXY_PORT=$((PORT_BASE + 2))
PEER=${PEER:-}
PEER_PORT=$((PORT_BASE + 3))

# shellcheck source=bench/lib.sh
. bench/lib.sh

for p in $IPERF_PORT $PROXY_PORT ${PEER:+$PEER_PORT}; do port_free "$p"; done
need iperf3 iperf3
need proxychains4 proxychains4
need jq jq
case $PEER in
'') ;;
dante) need danted dante-server ;;
*) die "PEER=$PEER: dante, or empty for none" ;;
esac

if [ -z "$SLUICE" ]; then
	log "building sluice"
	CGO_ENABLED=0 go build -buildvcs=auto -o "$tmp/sluice" ./cmd/sluice
	SLUICE=$tmp/sluice
fi

start iperf3 iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT"
start sluice "$SLUICE" --listen "127.0.0.1:$PROXY_PORT"
wait_port "$IPERF_PORT" iperf3
wait_port "$PROXY_PORT" sluice
if [ "$PEER" = dante ]; then
	danted_cfg "$tmp/danted.conf" "$tmp/danted.out" "$PEER_PORT"
	start dante danted -f "$tmp/danted.conf" -p "$tmp/danted.pid"
	wait_port "$PEER_PORT" dante
fi

# A proxychains4 configuration per proxy port. No quiet_mode: its line per
# connection ("Strict chain ... OK") is how via checks that iperf3's
# connections went through the proxy.
for port in $PROXY_PORT ${PEER:+$PEER_PORT}; do
	printf 'strict_chain\ntcp_read_time_out 15000\ntcp_connect_time_out 8000\n[ProxyList]\nsocks5 127.0.0.1 %s\n' \
		"$port" >"$tmp/proxychains$port.conf"
done

# gbps [WRAPPER...] -- IPERF_ARGS...: run one iperf3 client, print Gbit/s
# received; its stderr (and the wrapper's) goes to $tmp/iperf.err.
gbps() {
	local wrap=()
	while [ "$1" != -- ]; do wrap+=("$1"); shift; done
	shift
	timeout -k 5 $((DURATION + 30)) "${wrap[@]+"${wrap[@]}"}" \
		iperf3 -c 127.0.0.1 -p "$IPERF_PORT" -t "$DURATION" -J "$@" >"$tmp/iperf.json" 2>"$tmp/iperf.err" ||
		{ jq -r '.error // empty' "$tmp/iperf.json" >&2 2>/dev/null || true; echo "failed"; return 0; }
	jq -r '.end.sum_received.bits_per_second / 1e9 * 100 | round / 100' "$tmp/iperf.json"
}

# via PORT IPERF_ARGS...: gbps through proxychains4 and the SOCKS5 proxy on
# PORT; "failed" unless proxychains4 made each of iperf3's connections (its
# control connection and one per stream, -P) through that proxy, so that a
# run that bypassed it never counts as the proxy's.
via() {
	local port=$1 streams=1 prev="" a v n
	shift
	for a in "$@"; do
		if [ "$prev" = -P ]; then streams=$a; fi
		prev=$a
	done
	v=$(gbps proxychains4 -f "$tmp/proxychains$port.conf" -- "$@")
	n=$(grep -c "Strict chain .* 127\.0\.0\.1:$port .* OK\$" "$tmp/iperf.err" || true)
	if [ "$v" != failed ] && [ "$n" -lt $((streams + 1)) ]; then
		log "iperf3${*:+ $*} via 127.0.0.1:$port: proxychains4 made $n of its $((streams + 1)) connections through the proxy; counted as failed"
		v=failed
	fi
	echo "$v"
}

# ratio A B: A / B to two places, "-" when either is not a positive number.
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0 && a + 0 > 0) printf "%.2f", a / b; else print "-" }'
}

# median V...: the median of numeric values, "failed" when none (grep's
# no-match status must not fail the pipeline: the caller runs under set -e);
# when some of the $# runs failed, how many it is of: "9.1 (2 of 3 runs)".
median() {
	printf '%s\n' "$@" | { grep -E '^[0-9.]+$' || true; } | sort -g |
		awk -v all=$# '{ v[NR] = $1 } END { if (NR == 0) { print "failed"; exit }
			if (NR % 2) m = v[(NR + 1) / 2]; else m = sprintf("%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2)
			print m (NR < all ? " (" NR " of " all " runs)" : "") }'
}

{
	hdr="| iperf3 | direct Gbit/s | through sluice Gbit/s | sluice / direct |" rule="| --- | ---: | ---: | ---: |"
	if [ -n "$PEER" ]; then hdr+=" through $PEER Gbit/s | $PEER / direct |" rule+=" ---: | ---: |"; fi
	echo "$hdr"
	echo "$rule"
	for args in "" "-P 4" "-R" "-P 4 -R"; do
		d=() p=() q=()
		for _ in $(seq "$RUNS"); do
			# shellcheck disable=SC2086
			d+=("$(gbps -- $args)")
			# shellcheck disable=SC2086
			p+=("$(via "$PROXY_PORT" $args)")
			# shellcheck disable=SC2086
			if [ -n "$PEER" ]; then q+=("$(via "$PEER_PORT" $args)"); fi
		done
		direct=$(median "${d[@]}") proxied=$(median "${p[@]}")
		row="| ${args:-1 stream} | $direct | $proxied | $(ratio "$proxied" "$direct") |"
		if [ -n "$PEER" ]; then peer=$(median "${q[@]}") && row+=" $peer | $(ratio "$peer" "$direct") |"; fi
		echo "$row" | tee -a "$tmp/rows"
	done
	echo
	if grep -q ' runs) |' "$tmp/rows"; then fewer=" (fewer where a cell says so: failed runs are left out)"; else fewer=""; fi
	peer_facts="" share="iperf3, proxychains4 and sluice"
	if [ -n "$PEER" ]; then peer_facts=", dante-server $(pkg_version dante-server danted -v)" share="iperf3, proxychains4, sluice and Dante"; fi
	echo "Median of $RUNS runs of $DURATION s each$fewer; iperf3 $(iperf3 --version | head -1 | awk '{print $2}'), proxychains4 with \`strict_chain\`$peer_facts; sluice $(build_info "$SLUICE"); $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r); $share share the cores. Command: \`RUNS=$RUNS DURATION=$DURATION ${PEER:+PEER=$PEER }bench/iperf.sh\`."
} >"$tmp/iperf.md"
cat "$tmp/iperf.md"
if grep -q '| failed |' "$tmp/iperf.md"; then die "iperf3 failed in every run of a row (the table above), so nothing is written to OUT"; fi
if [ -n "$OUT" ]; then
	mkdir -p "$OUT"
	cp "$tmp/iperf.md" "$OUT/iperf.md"
	log "wrote $OUT/iperf.md"
fi
