#!/usr/bin/env bash
# scaling.sh: how sluice's connection rate and throughput grow with cores.
# For each K in CORES, sluice runs with --workers K on CPUs 0..K-1 (taskset)
# and the load generator and targets on the CPUs after them, so the relay
# never shares a core with its load; prints conn/s and Gbit/s per K and the
# fraction of linear scaling from K=1. Give the load at least as many cores
# as the relay (a 16-core machine: CORES="1 2 4 8"; 4 client cores drive
# about 15k conn/s).
#
# usage: bench/scaling.sh [path/to/sluice]
# env:   CORES="1 2 4 8"  relay core counts (each needs K free cores beside it)
#        DURATION=5 RUNS=3 PORT_BASE=17500
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
RUNS=${RUNS:-3}
PORT_BASE=${PORT_BASE:-17500}
SLUICE=${1:-}
n=$(nproc)
CORES=${CORES:-$(for k in 1 2 4 8 16; do if [ $((2 * k)) -le "$n" ]; then printf '%s ' "$k"; fi; done)}
# shellcheck source=bench/lib.sh
. bench/lib.sh

need jq jq
CGO_ENABLED=0 go build -o "$tmp/sluice-bench" ./cmd/sluice-bench
if [ -z "$SLUICE" ]; then
	CGO_ENABLED=0 go build -o "$tmp/sluice" ./cmd/sluice
	SLUICE=$tmp/sluice
fi
proxy=$PORT_BASE sink=$((PORT_BASE + 1)) echo_port=$((PORT_BASE + 2))
for p in $proxy $sink $echo_port; do port_free "$p"; done

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "| relay cores | conn/s (rr -c 64) | x linear | Gbit/s (tput -P 8) | x linear |"
echo "| ---: | ---: | ---: | ---: | ---: |"
base_c="" base_t=""
for k in $CORES; do
	load_cpus="$k-$((n - 1))"
	start sink taskset -c "$load_cpus" "$tmp/sluice-bench" sink --addr "127.0.0.1:$sink" --quiet
	sink_pid=$started_pid
	start echo taskset -c "$load_cpus" "$tmp/sluice-bench" echo --addr "127.0.0.1:$echo_port" --quiet
	echo_pid=$started_pid
	start sluice taskset -c "0-$((k - 1))" "$SLUICE" --listen "127.0.0.1:$proxy" --workers "$k" --access-log=false
	relay_pid=$started_pid
	for p in $sink $echo_port $proxy; do wait_port "$p" sluice; done
	conns=() gbps=()
	for _ in $(seq "$RUNS"); do
		conns+=("$(taskset -c "$load_cpus" "$tmp/sluice-bench" rr --proxy "127.0.0.1:$proxy" --target "127.0.0.1:$echo_port" \
			-c 64 --duration "${DURATION}s" --json --quiet | jq .conns_per_sec)")
		gbps+=("$(taskset -c "$load_cpus" "$tmp/sluice-bench" tput --proxy "127.0.0.1:$proxy" --target "127.0.0.1:$sink" \
			-P 8 --duration "${DURATION}s" --json --quiet | jq .gbps)")
	done
	c=$(printf '%s\n' "${conns[@]}" | median) g=$(printf '%s\n' "${gbps[@]}" | median)
	base_c=${base_c:-$c} base_t=${base_t:-$g}
	awk -v k="$k" -v c="$c" -v g="$g" -v bc="$base_c" -v bt="$base_t" \
		'BEGIN { printf "| %d | %.0f | %.2f | %.2f | %.2f |\n", k, c, c / (bc * k), g, g / (bt * k) }'
	for pid in $relay_pid $echo_pid $sink_pid; do kill_tree "$pid"; forget "$pid"; done
done
echo
echo "$n CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), kernel $(uname -r); median of $RUNS runs of ${DURATION}s; relay on CPUs 0..K-1 with --workers K, load on the rest."
