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

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

tmp=$(mktemp -d)
pids=()
policy_created=""

cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [ -n "$policy_created" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo "iperf.sh: interrupted" >&2; exit 130' INT TERM

log() { echo "iperf.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# need COMMAND PACKAGE: install PACKAGE when COMMAND is missing, without
# letting its maintainer scripts start a service.
need() {
	command -v "$1" >/dev/null 2>&1 && return 0
	log "installing $2"
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
		$SUDO chmod +x /usr/sbin/policy-rc.d
		policy_created=1
	fi
	if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y -q --no-install-recommends "$2" >"$tmp/apt.log" 2>&1; then
		$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 update -q >"$tmp/apt.log" 2>&1
		$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y -q --no-install-recommends "$2" >"$tmp/apt.log" 2>&1 ||
			{ cat "$tmp/apt.log" >&2; die "apt-get install $2 failed"; }
	fi
	if [ "$2" = iperf3 ]; then $SUDO service iperf3 stop >/dev/null 2>&1 || true; fi
	command -v "$1" >/dev/null 2>&1 || die "$2 installed but $1 not found"
}

# wait_port PORT NAME: wait up to 10 s for something to listen on 127.0.0.1:PORT.
wait_port() {

	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	tail -5 "$tmp/$2.log" >&2 || true
	die "nothing listens on 127.0.0.1:$1"
}

# start NAME CMD...: start a process in the background, stopped on exit.
start() {
	local name=$1
	shift
	"$@" >"$tmp/$name.log" 2>&1 &
	pids+=("$!")
}

for p in $IPERF_PORT $PROXY_PORT; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "127.0.0.1:$p is in use; set PORT_BASE"; fi
done
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

# median V...: the median of numeric values, "failed" when none.
median() {
	printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) print "failed"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
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
		echo "| ${args:-1 stream} | $direct | $proxied | $ratio |"
	done
	echo
	echo "Median of $RUNS runs of $DURATION s each; iperf3 $(iperf3 --version | head -1 | awk '{print $2}'), proxychains4 with \`strict_chain\`; $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r); iperf3, proxychains4 and sluice share the cores. Command: \`RUNS=$RUNS DURATION=$DURATION bench/iperf.sh\`."
} >"$tmp/iperf.md"
cat "$tmp/iperf.md"
if [ -n "$OUT" ]; then
	mkdir -p "$OUT"
	cp "$tmp/iperf.md" "$OUT/iperf.md"
	log "wrote $OUT/iperf.md"
fi
