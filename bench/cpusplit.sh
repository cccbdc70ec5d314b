#!/usr/bin/env bash
# cpusplit.sh: where the CPU of a short connection goes, sluice against
# another relay: HAProxy's plain TCP forwarding (splice, no handshake) by
# default, or a SOCKS5 peer. Both relays and one echo target stay up; ROUNDS
# rounds of `sluice-bench rr` through each (CONNS workers, each looping
# connect + handshake + 1-byte echo + close), each run once fewer than 1,000
# sockets are in TIME_WAIT. The order alternates: the peer runs first in odd
# rounds and sluice in even ones, so that neither always meets what the
# other left behind (TIME_WAITs, a warm echo target, its caches); the
# output names the order of every round. Per 1,000
# connections it reports the relay's user and system time and the echo
# target's (from /proc/PID/stat), the load generator's own CPU, the whole
# machine's (every CPU's busy time), and the TCP segments sent (the kernel's
# OutSegs); medians over the rounds, and their ratio.
#
# Then, where perf can count system calls (root, the syscalls tracepoints),
# one more run through each relay with every system call of the relay and of
# the echo target counted, per connection. perf's tracing slows the run; the
# counts stand, the rate of that run does not.
#
# usage: bench/cpusplit.sh
# env:   PEER=haproxy   the other relay: haproxy (TCP mode, splice, reached
#                       with --direct), go-socks5 (bench/gopeer) or microsocks
#                       (which drops pipelined bytes: both relays are then run
#                       with --lockstep, the client waiting for each answer)
#        ROUNDS=5  DURATION=4  (seconds per round and relay)  CONNS=64
#        SYSCALLS=auto   1: count them or fail; 0: leave them out
#        SETTLE=1   0: do not wait for TIME_WAITs to drain before a run (a
#                   smoke test; the rates then meet ports still held)
#        RELAY_CPUS=, LOAD_CPUS=   taskset lists, as in peers.sh (no
#                   RELAY_QUOTA: both relays stay up, and a cgroup would cap
#                   them together)
#        SLUICE_FLAGS=   more flags for sluice (it runs with --access-log=false)
#        PORT_BASE=17600  BIN=  (prebuilt binaries, bench/prebuild.sh)
# Writes Markdown to stdout. Everything listens on 127.0.0.1, and every
# process it starts is stopped on exit.
set -euo pipefail

# BIN relative to the directory this script is run from is made absolute
# before the cd to the repository root.
case ${BIN:-} in '' | /*) ;; *) BIN=$PWD/$BIN ;; esac
cd "$(dirname "$0")/.."
PEER=${PEER:-haproxy} ROUNDS=${ROUNDS:-5} DURATION=${DURATION:-4} CONNS=${CONNS:-64} SYSCALLS=${SYSCALLS:-auto} SETTLE=${SETTLE:-1}
PORT_BASE=${PORT_BASE:-17600} SLUICE_FLAGS=${SLUICE_FLAGS:-}
RELAY_CPUS=${RELAY_CPUS:-} LOAD_CPUS=${LOAD_CPUS:-}

# shellcheck source=bench/lib.sh
. bench/lib.sh

# Both relays stay up, so one cgroup would cap them together.
[ -z "${RELAY_QUOTA:-}" ] || die "RELAY_QUOTA is not supported here (both relays stay up, and one cgroup would cap them together); use RELAY_CPUS and LOAD_CPUS"
RELAY_QUOTA=""

need jq jq
place_relay_and_load
case $SYSCALLS in auto | 0 | 1) ;; *) die "SYSCALLS=$SYSCALLS: auto, 0 or 1" ;; esac
case $SETTLE in 0 | 1) ;; *) die "SETTLE=$SETTLE: 0 or 1" ;; esac
if [ "$SETTLE" = 1 ]; then need ss iproute2; fi # await_time_wait counts TIME_WAITs with ss

ECHO_PORT=$((PORT_BASE + 1)) PEER_PORT=$((PORT_BASE + 10)) SLUICE_PORT=$((PORT_BASE + 11))
for p in $ECHO_PORT $PEER_PORT $SLUICE_PORT; do port_free "$p"; done
BENCH=$(go_bin sluice-bench ./cmd/sluice-bench)
SLUICE=$(go_bin sluice ./cmd/sluice)
hz=$(getconf CLK_TCK)

start echo "${load_on[@]+"${load_on[@]}"}" "$BENCH" echo --addr "127.0.0.1:$ECHO_PORT"
echo_pid=$started_pid
# The peer: its name in the tables, how it is described, and how the load
# generator reaches the echo target through it (peer_args), and through
# sluice (sluice_args).
sluice_args=(--proxy "127.0.0.1:$SLUICE_PORT" --target "127.0.0.1:$ECHO_PORT")
peer_args=(--proxy "127.0.0.1:$PEER_PORT" --target "127.0.0.1:$ECHO_PORT")
case $PEER in
haproxy)
	need haproxy haproxy
	haproxy_cfg "$tmp/haproxy.cfg" splice "$(haproxy_maxconn 4000)" "$PEER_PORT:$ECHO_PORT"
	start haproxy "${relay_on[@]+"${relay_on[@]}"}" haproxy -db -f "$tmp/haproxy.cfg"
	peer_name="HAProxy" peer_row="HAProxy splice"
	# shellcheck disable=SC2016 # backquotes for Markdown
	peer_desc='HAProxy with splice (`--direct` to its frontend, no handshake) against sluice (`--proxy`, SOCKS5 handshake)'
	peer_args=(--direct --target "127.0.0.1:$PEER_PORT")
	;;
go-socks5)
	GOPEER=$(go_bin go-socks5 ./bench/gopeer)
	start go-socks5 "${relay_on[@]+"${relay_on[@]}"}" "$GOPEER" --listen "127.0.0.1:$PEER_PORT"
	peer_name="go-socks5" peer_row="go-socks5"
	# shellcheck disable=SC2016 # backquotes for Markdown
	peer_desc='github.com/armon/go-socks5 (bench/gopeer) against sluice, both through `--proxy`, the same SOCKS5 handshake'
	;;
microsocks)
	need microsocks microsocks
	start microsocks "${relay_on[@]+"${relay_on[@]}"}" microsocks -i 127.0.0.1 -p "$PEER_PORT"
	peer_name="microsocks" peer_row="microsocks"
	# shellcheck disable=SC2016 # backquotes for Markdown
	peer_desc='microsocks against sluice, both through `--proxy --lockstep` (microsocks drops bytes sent before it answers)'
	peer_args+=(--lockstep) sluice_args+=(--lockstep)
	;;
*) die "PEER=$PEER: haproxy, go-socks5 or microsocks" ;;
esac
peer_pid=$started_pid
read -r -a sluice_flags <<<"$SLUICE_FLAGS"
start sluice "${relay_on[@]+"${relay_on[@]}"}" "$SLUICE" --listen "127.0.0.1:$SLUICE_PORT" --access-log=false \
	"${sluice_flags[@]+"${sluice_flags[@]}"}"
sluice_pid=$started_pid
wait_port "$ECHO_PORT" echo
wait_port "$PEER_PORT" "$PEER"
wait_port "$SLUICE_PORT" sluice

# ticks PID: its user and system time so far, in clock ticks, all threads.
ticks() {
	# The fields after the command name, which may hold spaces: utime is the
	# 12th of them, stime the 13th.
	sed 's/.*) //' "/proc/$1/stat" | awk '{print $12, $13}'
}

# out_segs: TCP segments the kernel has sent, all sockets.
out_segs() {
	awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "OutSegs") c = i; h = 1 } else print $c }' /proc/net/snmp
}

# rr NAME ARGS...: one run of sluice-bench rr with ARGS, its JSON in
# $tmp/NAME.json; one that fails, or hangs past bench_timeout, stops the script.
rr() {
	local name=$1 rc=0
	shift
	timeout -k 5 "$(bench_timeout)" "${load_on[@]+"${load_on[@]}"}" "$BENCH" rr -c "$CONNS" --duration "${DURATION}s" --json "$@" >"$tmp/$name.json" || rc=$?
	case $rc in
	0) ;;
	124 | 137) die "$name: sluice-bench rr did not end within $(bench_timeout) s" ;;
	*) die "$name: sluice-bench rr failed (exit $rc): $(cat "$tmp/$name.json")" ;;
	esac
}

# round R NAME PID ARGS...: one measured run of round R through relay NAME
# (peer or sluice); appends its figures, as one JSON line, to $tmp/rounds,
# in the order the runs were made.
round() {
	local r=$1 name=$2 pid=$3 ru rs eu es s0 s1
	shift 3
	if [ "$SETTLE" = 1 ]; then await_time_wait; fi
	read -r ru rs < <(ticks "$pid")
	read -r eu es < <(ticks "$echo_pid")
	s0=$(out_segs)
	rr "$name" "$@"
	s1=$(out_segs)
	local -a d
	read -r -a d < <(paste -d' ' <(ticks "$pid") <(ticks "$echo_pid"))
	jq -c --argjson round "$r" --arg peer "$name" --argjson hz "$hz" --argjson ru $((d[0] - ru)) --argjson rs $((d[1] - rs)) \
		--argjson eu $((d[2] - eu)) --argjson es $((d[3] - es)) --argjson segs $((s1 - s0)) '
		def per1k(t): t / $hz * 1e6 / .conns;
		{round: $round, peer: $peer, conns: .conns, "conn/s": .conns_per_sec, "p99 µs": .latency.p99_us,
		 "relay user": per1k($ru), "relay system": per1k($rs),
		 "load generator": (.client_cpu.per_1k_conns * 1000),
		 "echo user": per1k($eu), "echo system": per1k($es),
		 machine: ((.machine_cpu.per_1k_conns // 0) * 1000), segments: ($segs / .conns), errors: ([.errors[]] | add)}' \
		"$tmp/$name.json" >>"$tmp/rounds"
}

log "$ROUNDS rounds of ${DURATION}s per relay, $CONNS workers; $placement"
: >"$tmp/rounds"
for r in $(seq "$ROUNDS"); do
	# The order alternates (peer first in odd rounds, sluice in even ones):
	# a run meets what the one before it left (TIME_WAITs, a warm echo
	# target and caches), and whatever that costs falls on both alike.
	if [ $((r % 2)) = 1 ]; then
		round "$r" peer "$peer_pid" "${peer_args[@]}"
		round "$r" sluice "$sluice_pid" "${sluice_args[@]}"
	else
		round "$r" sluice "$sluice_pid" "${sluice_args[@]}"
		round "$r" peer "$peer_pid" "${peer_args[@]}"
	fi
	log "round $r: $(jq -r --slurp --arg name "$peer_name" '.[-2:] | map("\(if .peer == "peer" then $name else .peer end) \(."conn/s" | round) conn/s") | join(", ")' "$tmp/rounds")"
done

cat <<EOF
Milliseconds of CPU per 1,000 connections of \`sluice-bench rr -c $CONNS --duration ${DURATION}s\` (1-byte echo),
$peer_desc,
medians of $ROUNDS rounds, $peer_name first in odd rounds and sluice first in even ones; $placement;
sluice $(build_info "$SLUICE").
The relay's and the echo target's user and system time are from /proc/PID/stat, the load generator's is its own
(\`client cpu\`), the machine's every CPU's busy time (/proc/stat); segments are TCP segments sent per
connection, both of its TCP connections and both directions (OutSegs, /proc/net/snmp).

EOF
jq -rs "$jq_median"'
	def fixed(d): (pow(10; d)) as $p | (. * $p | round) as $x
		| "\($x / $p | floor)" + (if d > 0 then "." + ("\($x % $p + $p)" | .[1:]) else "" end);
	def fmt: if . >= 100 then fixed(0) else fixed(1) end;
	def r2: fixed(2);
	["conn/s", "p99 µs", "relay user", "relay system", "load generator", "echo user", "echo system", "machine", "segments"] as $k
	| (map(select(.peer == "peer")) | [$k[] as $f | map(.[$f]) | median]) as $h
	| (map(select(.peer == "sluice")) | [$k[] as $f | map(.[$f]) | median]) as $s
	| "| \($CONNS) workers, 1-byte echo | " + ($k | join(" | ")) + " |",
	  "| --- |" + ($k | map(" ---: |") | join("")),
	  "| \($row) | " + ($h | map(fmt) | join(" | ")) + " |",
	  "| sluice | " + ($s | map(fmt) | join(" | ")) + " |",
	  "| sluice / \($name) | " + ([range($k | length)] | map(($s[.] / $h[.]) | r2) | join(" | ")) + " |",
	  "",
	  "Errors: \(map(.errors) | add). Per round, sluice / \($name) conn/s (the relay that ran first): \(group_by(.round)
		| map((map(select(.peer == "sluice"))[0]["conn/s"] / map(select(.peer == "peer"))[0]["conn/s"] | r2)
			+ " (\(if .[0].peer == "peer" then $name else "sluice" end))") | join(", "))."' \
	--arg CONNS "$CONNS" --arg row "$peer_row" --arg name "$peer_name" "$tmp/rounds"
if [ "$(jq -s 'map(.errors) | add' "$tmp/rounds")" != 0 ]; then die "the rounds had errors"; fi

# System calls per connection, under perf stat.
if [ "$SYSCALLS" = auto ]; then
	if command -v perf >/dev/null 2>&1 && perf stat -e 'syscalls:sys_enter_close' -x, -o /dev/null true >/dev/null 2>&1; then
		SYSCALLS=1
	else
		SYSCALLS=0
		printf '\nSystem calls not counted: perf cannot open the syscalls tracepoints here (SYSCALLS=1 makes that an error).\n'
	fi
fi
[ "$SYSCALLS" = 1 ] || exit 0
command -v perf >/dev/null 2>&1 || die "SYSCALLS=1, and there is no perf"

# count NAME PID ARGS...: one rr run with the system calls of the relay PID
# and of the echo target counted while it runs (perf's control FIFOs enable
# the counters right before the run and disable them right after);
# $tmp/NAME.relay.csv and $tmp/NAME.echo.csv.
count() {
	local name=$1 pid=$2 who p perfs=() i=0
	shift 2
	if [ "$SETTLE" = 1 ]; then await_time_wait; fi
	for who in relay echo; do
		p=$pid
		if [ "$who" = echo ]; then p=$echo_pid; fi
		mkfifo "$tmp/$name.$who.ctl" "$tmp/$name.$who.ack"
		perf stat -D -1 --control "fifo:$tmp/$name.$who.ctl,$tmp/$name.$who.ack" -e 'syscalls:sys_enter_*' \
			-p "$p" -x, -o "$tmp/$name.$who.csv" >"$tmp/$name.$who.perflog" 2>&1 &
		perfs+=($!)
		pids+=($!) # stopped on exit should the script stop before its counts are in
	done
	# Opened read-write, so that no open waits for perf, should it never come.
	exec 7<>"$tmp/$name.relay.ctl" 8<>"$tmp/$name.relay.ack" 5<>"$tmp/$name.echo.ctl" 6<>"$tmp/$name.echo.ack"
	{ echo enable >&7 && read -r -t 60 _ <&8; } || die "perf stat did not start (see $tmp/$name.relay.perflog)"
	{ echo enable >&5 && read -r -t 60 _ <&6; } || die "perf stat did not start (see $tmp/$name.echo.perflog)"
	rr "$name.counted" "$@"
	echo disable >&7 && read -r -t 60 _ <&8
	echo disable >&5 && read -r -t 60 _ <&6
	exec 7>&- 8<&- 5>&- 6<&-
	# perf stat prints its counts on SIGINT; closing hundreds of tracepoint
	# events takes it a few seconds.
	for i in "${perfs[@]}"; do kill -INT "$i"; done
	for i in "${perfs[@]}"; do
		wait "$i" || true # its status after SIGINT says nothing
		forget "$i"
	done
	for who in relay echo; do
		grep -q ',syscalls:sys_enter_' "$tmp/$name.$who.csv" 2>/dev/null ||
			die "perf stat counted nothing for the $who of $name: $(cat "$tmp/$name.$who.perflog")"
	done
}
log "counting system calls (perf stat), one run through each relay"
count peer "$peer_pid" "${peer_args[@]}"
count sluice "$sluice_pid" "${sluice_args[@]}"

printf '\nSystem calls per connection (one more run each, counted with `perf stat -e '"'"'syscalls:sys_enter_*'"'"'`; %s and %s connections), those at 0.05 or more in a column:\n\n' \
	"$(jq .conns "$tmp/peer.counted.json")" "$(jq .conns "$tmp/sluice.counted.json")"
awk -F, -v hc="$(jq .conns "$tmp/peer.counted.json")" -v sc="$(jq .conns "$tmp/sluice.counted.json")" -v name="$peer_name" '
	FNR == 1 { f++ }
	$1 ~ /^[0-9]+$/ && $3 ~ /^syscalls:sys_enter_/ {
		n = substr($3, 20); names[n] = 1
		v[f, n] = $1 / (f <= 2 ? hc : sc)
	}
	END {
		print "| system call | " name " | sluice | echo behind " name " | echo behind sluice |"
		print "| --- | ---: | ---: | ---: | ---: |"
		sort = "sort -t\"|\" -k4,4 -gr"
		for (n in names) {
			show = 0
			for (i = 1; i <= 4; i++) {
				t[i] += v[i, n]
				if (v[i, n] >= 0.05) show = 1
			}
			if (show) printf "| %s | %.2f | %.2f | %.2f | %.2f |\n", n, v[1, n], v[3, n], v[2, n], v[4, n] | sort
		}
		close(sort)
		printf "| all | %.2f | %.2f | %.2f | %.2f |\n", t[1], t[3], t[2], t[4]
	}' "$tmp/peer.relay.csv" "$tmp/peer.echo.csv" "$tmp/sluice.relay.csv" "$tmp/sluice.echo.csv"
