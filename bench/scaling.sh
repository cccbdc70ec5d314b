#!/usr/bin/env bash
# scaling.sh: how the connection rate and throughput of sluice (and, beside
# it, HAProxy) grow with cores. For each K in CORES, each relay runs on CPUs
# 0..K-1 (taskset) and the load generator and targets on the CPUs after
# them, so a relay never shares a core with its load; prints conn/s and
# Gbit/s per K, the fraction of linear scaling from the first K in CORES
# (K=1 when CORES starts with 1), and sluice's ratio
# to HAProxy at the same K. Give the load at least as many cores as the
# relay (a 16-core machine: CORES="1 2 4 8"), and read the direct rows as
# the ceiling of the load side. On loopback that is at most about the
# ephemeral port range per second for each source and target address (16k
# conn/s with Linux's default 32768-60999 on 16 cores): SPREAD=N connects
# from N loopback sources to an echo target on N loopback addresses (HAProxy
# balancing over them), and as root the range can be widened, keeping the
# bench ports out:
#   sysctl -w net.ipv4.ip_local_reserved_ports=17000-17999 \
#             net.ipv4.ip_local_port_range="1024 65535"
# (32k conn/s on 16 cores with SPREAD=1).
#
# usage: bench/scaling.sh [path/to/sluice]
# env:   CORES="1 2 4 8"  relay core counts (each needs K free cores beside it)
#        PEERS="sluice"   any of: sluice (--workers K), sluice-proc (one
#                         process on K CPUs, its defaults), haproxy-splice
#                         (TCP forwarding with splice, one thread per CPU),
#                         direct (no relay: the load side's own ceiling)
#        SPREAD=1         loopback addresses for the rr sources and echo target
#        DURATION=5 RUNS=3 PORT_BASE=17500
#        BIN=             prebuilt binaries (bench/prebuild.sh), no Go needed
set -euo pipefail
# Paths given relative to the directory this script is run from (the
# sluice binary, BIN) are made absolute before the cd to the repository root.
case ${1:-} in /* | '') ;; */*) set -- "$PWD/$1" "${@:2}" ;; esac
case ${BIN:-} in '' | /*) ;; *) BIN=$PWD/$BIN ;; esac
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
RUNS=${RUNS:-3}
PORT_BASE=${PORT_BASE:-17500}
PEERS=${PEERS:-sluice}
SPREAD=${SPREAD:-1}
SLUICE=${1:-}
n=$(nproc)
CORES=${CORES:-$(for k in 1 2 4 8 16; do if [ $((2 * k)) -le "$n" ]; then printf '%s ' "$k"; fi; done)}
# shellcheck source=bench/lib.sh
. bench/lib.sh

need jq jq
need taskset util-linux
for peer in $PEERS; do
	case $peer in
	sluice | sluice-proc | direct) ;;
	haproxy-splice) need haproxy haproxy ;;
	*) die "unknown peer $peer (sluice sluice-proc haproxy-splice direct)" ;;
	esac
done
BENCH=$(go_bin sluice-bench ./cmd/sluice-bench)
if [ -z "$SLUICE" ]; then SLUICE=$(go_bin sluice ./cmd/sluice); fi
proxy=$PORT_BASE sink=$((PORT_BASE + 1)) echo_port=$((PORT_BASE + 2))
fwd_sink=$((PORT_BASE + 3)) fwd_echo=$((PORT_BASE + 4))
for p in $proxy $sink $echo_port $fwd_sink $fwd_echo; do port_free "$p"; done
echoes=$(loopbacks "$SPREAD" "$echo_port")
spread_sources "$SPREAD"

# measure PEER K: start PEER on CPUs 0..K-1, append "K PEER conn/s Gbit/s
# errors" for one run to $tmp/runs.tsv.
measure() {
	local peer=$1 k=$2 pid="" via=(--proxy "127.0.0.1:$proxy") s=127.0.0.1:$sink e=$echoes port=$proxy
	local relay_on=(taskset -c "0-$((k - 1))")
	case $peer in
	sluice) start "$peer" "${relay_on[@]}" "$SLUICE" --listen "127.0.0.1:$proxy" --workers "$k" --access-log=false ;;
	sluice-proc) start "$peer" "${relay_on[@]}" "$SLUICE" --listen "127.0.0.1:$proxy" --access-log=false ;;
	haproxy-splice)
		haproxy_cfg "$tmp/haproxy.cfg" splice "$(haproxy_maxconn 20000)" "$fwd_sink:$sink" "$fwd_echo:$echo_port:$SPREAD"
		start "$peer" "${relay_on[@]}" haproxy -db -f "$tmp/haproxy.cfg"
		via=(--direct) s=127.0.0.1:$fwd_sink e=127.0.0.1:$fwd_echo port=$fwd_echo
		;;
	direct) via=(--direct) ;;
	esac
	if [ "$peer" != direct ]; then
		pid=$started_pid
		wait_port "$port" "$peer"
	fi
	# A run with errors (a refused connect, no port left) exits 1 and still
	# prints its figures; the errors are counted in the table. One that
	# hangs is stopped after bench_timeout.
	local c g errors rc
	rc=0
	timeout -k 5 "$(bench_timeout)" "${load_on[@]}" "$BENCH" rr "${via[@]}" --target "$e" "${spread_from[@]+"${spread_from[@]}"}" -c 64 --duration "${DURATION}s" --json --quiet >"$tmp/rr.json" || rc=$?
	case $rc in 124 | 137) log "K=$k $peer: sluice-bench rr did not end within $(bench_timeout) s" ;; esac
	rc=0
	timeout -k 5 "$(bench_timeout)" "${load_on[@]}" "$BENCH" tput "${via[@]}" --target "$s" -P 8 --duration "${DURATION}s" --json --quiet >"$tmp/tput.json" || rc=$?
	case $rc in 124 | 137) log "K=$k $peer: sluice-bench tput did not end within $(bench_timeout) s" ;; esac
	# A run that printed no result (it crashed, or timed out) counts 0 and
	# one error; an empty figure would shift the columns of runs.tsv.
	c=$(jq -n '(try input catch null) | .conns_per_sec // 0' "$tmp/rr.json" 2>/dev/null) || c=0
	g=$(jq -n '(try input catch null) | .gbps // 0' "$tmp/tput.json" 2>/dev/null) || g=0
	errors=0
	for f in "$tmp/rr.json" "$tmp/tput.json"; do
		errors=$((errors + $(jq -n '(try input catch null) | if . == null then 1 else (.errors | .connect + .socks + .data + .io) end' "$f" 2>/dev/null || echo 1)))
	done
	echo "$k $peer $c $g $errors" >>"$tmp/runs.tsv"
	if [ -n "$pid" ]; then
		kill_tree "$pid"
		forget "$pid"
	fi
}

: >"$tmp/runs.tsv"
for k in $CORES; do
	[ $((2 * k)) -le "$n" ] || die "K=$k needs $((2 * k)) CPUs; this machine has $n"
	load_on=(taskset -c "$k-$((n - 1))")
	start sink "${load_on[@]}" "$BENCH" sink --addr "127.0.0.1:$sink" --quiet
	sink_pid=$started_pid
	start echo "${load_on[@]}" "$BENCH" echo --addr "$echoes" --quiet
	echo_pid=$started_pid
	wait_port "$sink" sink
	wait_port "$echo_port" echo
	# Interleaved: run 1 of every peer, then run 2, ...
	for _ in $(seq "$RUNS"); do
		for peer in $PEERS; do measure "$peer" "$k"; done
	done
	for pid in $echo_pid $sink_pid; do
		kill_tree "$pid"
		forget "$pid"
	done
done

# Medians per K and peer; linear is the peer's per-core figure at the first
# K of CORES times K.
echo "| relay cores | peer | conn/s (rr -c 64) | x linear | Gbit/s (tput -P 8) | x linear | conn/s / HAProxy | Gbit/s / HAProxy | errors |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
awk -v peers="$PEERS" -v cores="$CORES" '
	function median(list,   v, m, i, j, t) {
		m = split(list, v, " ")
		for (i = 2; i <= m; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
		return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
	}
	{ c[$1, $2] = c[$1, $2] " " $3; g[$1, $2] = g[$1, $2] " " $4; e[$1, $2] += $5 }
	END {
		np = split(peers, p, " "); nk = split(cores, ks, " ")
		for (i = 1; i <= nk; i++) for (j = 1; j <= np; j++) {
			k = ks[i]; q = p[j]
			mc[k, q] = median(c[k, q]); mg[k, q] = median(g[k, q])
			if (i == 1) { bc[q] = mc[k, q] / k; bg[q] = mg[k, q] / k }
		}
		for (i = 1; i <= nk; i++) for (j = 1; j <= np; j++) {
			k = ks[i]; q = p[j]; hc = "–"; hg = "–"
			if (q ~ /^sluice/ && ((k, "haproxy-splice") in mc) && mc[k, "haproxy-splice"] > 0 && mg[k, "haproxy-splice"] > 0) {
				hc = sprintf("%.2f", mc[k, q] / mc[k, "haproxy-splice"]); hg = sprintf("%.2f", mg[k, q] / mg[k, "haproxy-splice"])
			}
			lc = bc[q] > 0 ? sprintf("%.2f", mc[k, q] / (bc[q] * k)) : "–"
			lg = bg[q] > 0 ? sprintf("%.2f", mg[k, q] / (bg[q] * k)) : "–"
			printf "| %d | %s | %.0f | %s | %.2f | %s | %s | %s | %d |\n", k, q, mc[k, q], lc, mg[k, q], lg, hc, hg, e[k, q]
		}
	}' "$tmp/runs.tsv"
echo
echo "$n CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), kernel $(uname -r), sluice $(build_info "$SLUICE"); median of $RUNS interleaved runs of ${DURATION}s; relay on CPUs 0..K-1, load generator and targets on CPUs K..$((n - 1)); ephemeral ports $(port_range), $SPREAD loopback source and target address(es) (conn/s tops out near as many per second per address pair, or lower: the direct rows); \`CORES=\"$CORES\" PEERS=\"$PEERS\" SPREAD=$SPREAD RUNS=$RUNS DURATION=$DURATION bench/scaling.sh\`."
