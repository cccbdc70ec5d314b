#!/usr/bin/env bash
# ab.sh: compare two sluice builds, or two sets of flags, side by side.
# ROUNDS rounds of one workload, A then B in odd rounds and B then A in
# even ones, each relay started afresh; per round the ratio B/A of every
# figure, and the median and range of those ratios at the end. A machine
# whose speed drifts by 20 % over minutes (a shared VM) still gives a steady
# ratio this way, where two separate runs would not. A figure that is 0 or
# missing on either side (no measurement: CPU below a clock tick, a field not
# reported) leaves that round's ratio of it out, with a note, and its median
# says over how many rounds it is; a failed or hung run stops the script,
# naming the round and the build.
#
# usage: bench/ab.sh A B       each a sluice binary and its flags, one word list:
#        bench/ab.sh old/sluice ./sluice
#        bench/ab.sh ./sluice "./sluice --loops -1"
# env:   WORKLOAD=rr   rr: conn/s, relay CPU per 1,000 connections and p99
#                      (sluice-bench rr, 1-byte echo); tput: Gbit/s and relay
#                      CPU per GiB (sluice-bench tput to a sink)
#        LOAD_ARGS=    extra sluice-bench flags (default "-c 64" for rr,
#                      "-P 1" for tput; e.g. "-c 64 --lockstep", "-P 8")
#        WARM_ARGS=    sluice-bench flags of a run of the same workload
#                      through each fresh relay before the measured one,
#                      for DURATION, not measured (e.g. "-P 128": more
#                      pipes busy at once than an unprivileged user's pipe
#                      quota holds, for builds run through setpriv)
#        ROUNDS=8  DURATION=2  (seconds per round and build)
#        RELAY_CPUS=, LOAD_CPUS=, RELAY_QUOTA=   as in peers.sh (taskset
#                      lists; a cgroup capping the relay at a percentage of
#                      one CPU, root)
#        PORT_BASE=17400  BIN=  (prebuilt sluice-bench, bench/prebuild.sh)
#        TARGET_HOST=127.0.0.1   how the load names the target: "localhost"
#                      sends a domain name, resolved by the relay
#        TARGET_NETNS=0  1: the target in a network namespace of its own,
#                      behind a veth pair whose receive work runs on
#                      LOAD_CPUS (RPS), so that each of the relay's dials
#                      waits for the target's answer, as one to another
#                      machine does (root; RELAY_CPUS and LOAD_CPUS;
#                      net.ipv4.tcp_tw_reuse is 1 for the run, lib.sh)
# Both builds run with --access-log=false, as in peers.sh, unless their own
# flags say otherwise ("./sluice --access-log", its lines going to a file in
# the run's temporary directory, as the relay's stderr). Everything listens
# on 127.0.0.1 (the target on the namespace's 10.233.X.2 with TARGET_NETNS=1)
# and every process it starts, and the namespace, is gone on exit.
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: bench/ab.sh 'SLUICE_A [FLAG...]' 'SLUICE_B [FLAG...]'" >&2; exit 2; }
read -r -a builds_a <<<"$1"
read -r -a builds_b <<<"$2"
# build_path WORD: a build's first word, the program that runs, as the
# shell would find it: a path from the directory this script is run from
# (made absolute before the cd below, so that ./sluice is the caller's and
# not the repository root's), or a name on PATH. Fails for anything else.
build_path() {
	local p=$1
	case $p in */*) ;; ?*) p=$(type -P -- "$p") || return 1 ;; *) return 1 ;; esac
	if [ ! -f "$p" ] || [ ! -x "$p" ]; then return 1; fi
	case $p in /*) echo "$p" ;; *) echo "$PWD/$p" ;; esac
}
not_a_build() { echo "ab.sh: $1: '$2' is not an executable file (give its path, or a name on PATH)" >&2; exit 2; }
prog=$(build_path "${builds_a[0]:-}") || not_a_build A "${builds_a[0]:-}"
builds_a[0]=$prog
prog=$(build_path "${builds_b[0]:-}") || not_a_build B "${builds_b[0]:-}"
builds_b[0]=$prog
case ${BIN:-} in '' | /*) ;; *) BIN=$PWD/$BIN ;; esac
cd "$(dirname "$0")/.."
WORKLOAD=${WORKLOAD:-rr} ROUNDS=${ROUNDS:-8} DURATION=${DURATION:-2} PORT_BASE=${PORT_BASE:-17400}
RELAY_CPUS=${RELAY_CPUS:-} LOAD_CPUS=${LOAD_CPUS:-} RELAY_QUOTA=${RELAY_QUOTA:-}

# shellcheck source=bench/lib.sh
. bench/lib.sh

need jq jq
case $WORKLOAD in
rr) LOAD_ARGS=${LOAD_ARGS:--c 64} ;;
tput) LOAD_ARGS=${LOAD_ARGS:--P 1} ;;
*) die "WORKLOAD=$WORKLOAD: rr or tput" ;;
esac
case $ROUNDS in '' | *[!0-9]* | 0) die "ROUNDS=$ROUNDS: a whole number of rounds, at least 1" ;; esac
place_relay_and_load

TARGET_PORT=$((PORT_BASE + 1)) PROXY_PORT=$((PORT_BASE + 10))
TARGET_HOST=${TARGET_HOST:-127.0.0.1} TARGET_NETNS=${TARGET_NETNS:-0}
for p in $TARGET_PORT $PROXY_PORT; do port_free "$p"; done
BENCH=$(go_bin sluice-bench ./cmd/sluice-bench)
target_mode="echo"
if [ "$WORKLOAD" = tput ]; then target_mode=sink; fi
case $TARGET_NETNS in
0)
	start target "${load_on[@]+"${load_on[@]}"}" "$BENCH" "$target_mode" --addr "127.0.0.1:$TARGET_PORT"
	wait_port "$TARGET_PORT" target
	;;
1)
	[ -n "$LOAD_CPUS" ] || die "TARGET_NETNS=1 steers the target's packets to LOAD_CPUS: set RELAY_CPUS and LOAD_CPUS"
	target_netns "$LOAD_CPUS"
	TARGET_HOST=$target_ip
	start target "${in_target_ns[@]}" "${load_on[@]}" "$BENCH" "$target_mode" --addr "$target_ip:$TARGET_PORT" --allow-public
	wait_port "$TARGET_PORT" target "$target_ip"
	placement+="; the target in a network namespace behind a veth pair, its packets received on CPUs $LOAD_CPUS: every dial waits"
	;;
*) die "TARGET_NETNS=$TARGET_NETNS: 0 or 1" ;;
esac

# measure NAME BUILD...: one round ($r) through a fresh relay; writes its
# figures, as JSON, to $tmp/NAME.fig. A run that fails (or hangs past
# bench_timeout) stops the script, naming the round and the build.
measure() {
	local name=$1 rc=0
	shift
	start "$name" "${relay_on[@]+"${relay_on[@]}"}" "$1" --access-log=false "${@:2}" --listen "127.0.0.1:$PROXY_PORT"
	local pid=$started_pid
	wait_port "$PROXY_PORT" "$name"
	local args
	if [ -n "${WARM_ARGS:-}" ]; then
		read -r -a args <<<"$WARM_ARGS"
		timeout -k 5 "$(bench_timeout)" "${load_on[@]+"${load_on[@]}"}" "$BENCH" "$WORKLOAD" --proxy "127.0.0.1:$PROXY_PORT" --target "$TARGET_HOST:$TARGET_PORT" \
			"${args[@]}" --duration "${DURATION}s" --quiet >"$tmp/$name.warm" 2>&1 ||
			die "round $r, build ${name^^}: the warm-up run (WARM_ARGS) failed: $(tail -3 "$tmp/$name.warm")"
	fi
	read -r -a args <<<"$LOAD_ARGS"
	timeout -k 5 "$(bench_timeout)" "${load_on[@]+"${load_on[@]}"}" "$BENCH" "$WORKLOAD" --proxy "127.0.0.1:$PROXY_PORT" --target "$TARGET_HOST:$TARGET_PORT" \
		"${args[@]}" --duration "${DURATION}s" --pid "$pid" --json >"$tmp/$name.json" || rc=$?
	case $rc in
	0) ;;
	124 | 137) die "round $r, build ${name^^}: sluice-bench $WORKLOAD did not end within $(bench_timeout) s" ;;
	*) die "round $r, build ${name^^}: sluice-bench $WORKLOAD failed (exit $rc): $(cat "$tmp/$name.json")" ;;
	esac
	kill_tree "$pid"
	forget "$pid"
	if [ "$WORKLOAD" = rr ]; then
		jq -c '{"conn/s": .conns_per_sec, "CPU s per 1,000 connections": .cpu.per_1k_conns, "p99 µs": .latency.p99_us}' "$tmp/$name.json"
	else
		jq -c '{"Gbit/s": .gbps, "CPU s per GiB": .cpu.per_gib}' "$tmp/$name.json"
	fi >"$tmp/$name.fig"
}

echo "ab.sh: B = ${builds_b[*]} ($(build_info "${builds_b[0]}")); A = ${builds_a[*]} ($(build_info "${builds_a[0]}")); $WORKLOAD $LOAD_ARGS, $ROUNDS rounds of ${DURATION}s${WARM_ARGS:+, each after an unmeasured $WORKLOAD $WARM_ARGS}; $placement"
: >"$tmp/ratios"
for r in $(seq "$ROUNDS"); do
	# The order alternates (A B, then B A): a run that follows another
	# meets what it left (TIME_WAITs, a warm target), and whatever that
	# costs falls on both builds alike.
	if [ $((r % 2)) = 1 ]; then
		measure a "${builds_a[@]}"
		measure b "${builds_b[@]}"
	else
		measure b "${builds_b[@]}"
		measure a "${builds_a[@]}"
	fi
	echo "round $r: A $(cat "$tmp/a.fig")"
	echo "round $r: B $(cat "$tmp/b.fig")"
	# A figure that is 0 or missing on either side (CPU below a clock
	# tick, a field the run did not report) is no measurement: its ratio
	# in this round is null, left out of the median, with a note.
	jq -cn --slurpfile a "$tmp/a.fig" --slurpfile b "$tmp/b.fig" \
		'$a[0] | with_entries(.value = (if (.value // 0) == 0 or ($b[0][.key] // 0) == 0 then null else $b[0][.key] / .value end))' >>"$tmp/ratios"
	jq -rn --argjson r "$r" --slurpfile a "$tmp/a.fig" --slurpfile b "$tmp/b.fig" '
		$a[0] | keys_unsorted[] as $k
		| [if ($a[0][$k] // 0) == 0 then "A" else empty end, if ($b[0][$k] // 0) == 0 then "B" else empty end]
		| select(length > 0)
		| "round \($r): B/A \($k) left out: \(map(. + "'"'"'s") | join(" and ")) figure \(if length > 1 then "are" else "is" end) 0 or missing"'
done
jq -rs "$jq_median"'
	def r2: . * 1000 | round / 1000;
	length as $rounds
	| (.[0] | keys_unsorted) as $keys
	| $keys[] as $k | [.[][$k] | select(. != null)] as $v
	| if ($v | length) == 0 then "B/A \($k): none (a figure 0 or missing in every round)"
	  else "B/A \($k): median \($v | median | r2) (\($v | min | r2) to \($v | max | r2)) over \($v | length) rounds"
		+ (if ($v | length) < $rounds then " (\($rounds - ($v | length)) of \($rounds) left out: a figure 0 or missing)" else "" end) end' "$tmp/ratios"
