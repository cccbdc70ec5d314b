#!/usr/bin/env bash
# iperf.sh: iperf3 through sluice with proxychains4, the way users run it,
# beside iperf3 direct: 1 stream and -P 4, each normal and reversed (-R).
#
# usage: bench/iperf.sh [path/to/sluice]     (builds ./cmd/sluice when omitted)
# env:   DURATION=5       seconds per iperf3 run
#        RUNS=3           runs of each; the median is reported
#        PORT_BASE=17300  first of the loopback ports used
#        OUT=             when set, also write the table to $OUT/iperf.md
#                         (bench/peers.sh includes it in RESULTS.md)
#
# iperf3, proxychains4 and jq are installed with apt-get when missing; no
# service is left running. Everything listens on 127.0.0.1 only and every
# process this script starts is stopped by PID on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
RUNS=${RUNS:-3}
OUT=${OUT:-}
PORT_BASE=${PORT_BASE:-17300}
SLUICE=${1:-}
IPERF_PORT=$((PORT_BASE + 1))
PROXY_PORT=$((PORT_BASE + 2))

# shellcheck source=bench/lib.sh
. bench/lib.sh

for p in $IPERF_PORT $PROXY_PORT; do port_free "$p"; done
need iperf3 iperf3
need proxychains4 proxychains4
need jq jq

if [ -z "$SLUICE" ]; then
	log "building sluice"
	CGO_ENABLED=0 go build -o "$tmp/sluice" ./cmd/sluice
	SLUICE=$tmp/sluice
fi

start iperf3 iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT"
start sluice "$SLUICE" --listen "127.0.0.1:$PROXY_PORT"
wait_port "$IPERF_PORT" iperf3
wait_port "$PROXY_PORT" sluice

cat >"$tmp/proxychains.conf" <<EOF
strict_chain
quiet_mode
tcp_read_time_out 15000
tcp_connect_time_out 8000
[ProxyList]
socks5 127.0.0.1 $PROXY_PORT
EOF

# gbps [WRAPPER...] -- IPERF_ARGS...: run one iperf3 client, print Gbit/s received.
gbps() {
	local wrap=()
	while [ "$1" != -- ]; do wrap+=("$1"); shift; done
	shift
	timeout -k 5 $((DURATION + 30)) "${wrap[@]+"${wrap[@]}"}" \
		iperf3 -c 127.0.0.1 -p "$IPERF_PORT" -t "$DURATION" -J "$@" >"$tmp/iperf.json" ||
		{ jq -r '.error // empty' "$tmp/iperf.json" >&2 2>/dev/null || true; echo "failed"; return 0; }
	jq -r '.end.sum_received.bits_per_second / 1e9 * 100 | round / 100' "$tmp/iperf.json"
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
	echo "| iperf3 | direct Gbit/s | through sluice Gbit/s | sluice / direct |"
	echo "| --- | ---: | ---: | ---: |"
	for args in "" "-P 4" "-R" "-P 4 -R"; do
		d=() p=()
		for _ in $(seq "$RUNS"); do
			# shellcheck disable=SC2086
			d+=("$(gbps -- $args)")
			# shellcheck disable=SC2086
			p+=("$(gbps proxychains4 -q -f "$tmp/proxychains.conf" -- $args)")
		done
		direct=$(median "${d[@]}") proxied=$(median "${p[@]}")
		ratio=$(awk -v a="$proxied" -v b="$direct" 'BEGIN { if (b + 0 > 0 && a + 0 > 0) printf "%.2f", a / b; else print "-" }')
		echo "| ${args:-1 stream} | $direct | $proxied | $ratio |" | tee -a "$tmp/rows"
	done
	echo
	if grep -q ' runs) |' "$tmp/rows"; then fewer=" (fewer where a cell says so: failed runs are left out)"; else fewer=""; fi
	echo "Median of $RUNS runs of $DURATION s each$fewer; iperf3 $(iperf3 --version | head -1 | awk '{print $2}'), proxychains4 with \`strict_chain\`; $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r); iperf3, proxychains4 and sluice share the cores. Command: \`RUNS=$RUNS DURATION=$DURATION bench/iperf.sh\`."
} >"$tmp/iperf.md"
cat "$tmp/iperf.md"
if grep -q '| failed |' "$tmp/iperf.md"; then die "iperf3 failed in every run of a row (the table above), so nothing is written to OUT"; fi
if [ -n "$OUT" ]; then
	mkdir -p "$OUT"
	cp "$tmp/iperf.md" "$OUT/iperf.md"
	log "wrote $OUT/iperf.md"
fi
