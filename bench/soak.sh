#!/usr/bin/env bash
# soak.sh: run sluice under a bounded mixed load (throughput both ways,
# connect/request/response churn, idle sessions, malformed and silent
# clients) for DURATION seconds, then check that its goroutines, fds and RSS
# come back near their baseline and that it exits 0 on SIGTERM. Exits 1 when
# any check or any load generator fails. Sockets must return to the baseline
# exactly; pipes may stay, up to the relay's pool bound (1,024 pipes, 2,048
# fds), and are reported. RSS is checked only without RACE=1 (the race
# detector's shadow memory stays mapped).
#
# usage: bench/soak.sh
# env:   DURATION=120     seconds of load
#        RACE=0           1 builds sluice with -race and fails on any race report
#        PORT_BASE=17400  first of the five loopback ports used
#        IDLE_N=500       idle sessions held for the whole run
#        RSS_SLACK_MIB=64 how far above its baseline sluice's RSS may stay
#        OUT=             when set, the summary is also written to this file
#
# Everything listens on 127.0.0.1 only; every process this script starts is
# stopped by PID on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-120}
RACE=${RACE:-0}
PORT_BASE=${PORT_BASE:-17400}
IDLE_N=${IDLE_N:-500}
RSS_SLACK_MIB=${RSS_SLACK_MIB:-64}
OUT=${OUT:-}

proxy_port=$PORT_BASE
sink_port=$((PORT_BASE + 1))
source_port=$((PORT_BASE + 2))
echo_port=$((PORT_BASE + 3))
debug_port=$((PORT_BASE + 4))

# shellcheck source=bench/lib.sh
. bench/lib.sh

# goroutines: sluice's goroutine count, from its pprof index.
goroutines() {
	local line
	exec 3<>"/dev/tcp/127.0.0.1/$debug_port"
	printf 'GET /debug/pprof/goroutine?debug=1 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
	line=$(grep -m1 -a 'goroutine profile: total' <&3 || true)
	exec 3<&-
	[ -n "$line" ] || die "no goroutine profile from 127.0.0.1:$debug_port"
	echo "${line##* }" | tr -d '\r'
}
fds() { find "/proc/$sluice_pid/fd" -mindepth 1 2>/dev/null | wc -l; }
# sockets, pipes: sluice's open socket and pipe fds.
sockets() { find "/proc/$sluice_pid/fd" -lname 'socket:*' 2>/dev/null | wc -l; }
pipes() { find "/proc/$sluice_pid/fd" -lname 'pipe:*' 2>/dev/null | wc -l; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$sluice_pid/status"; }

# A port already in use would let wait_port below find someone else's
# listener while our own target or relay failed to bind.
for p in $proxy_port $sink_port $source_port $echo_port $debug_port; do port_free "$p"; done

log "building sluice (race=$RACE) and sluice-bench"
race_flag=()
if [ "$RACE" = 1 ]; then race_flag=(-race); fi
go build "${race_flag[@]}" -o "$tmp/sluice" ./cmd/sluice
go build -o "$tmp/sluice-bench" ./cmd/sluice-bench

for t in sink:$sink_port source:$source_port echo:$echo_port; do
	start "${t%%:*}" "$tmp/sluice-bench" "${t%%:*}" --addr "127.0.0.1:${t##*:}" --quiet
done
start sluice "$tmp/sluice" --listen "127.0.0.1:$proxy_port" --debug-addr "127.0.0.1:$debug_port" \
	--handshake-timeout 2s --drain-timeout 10s
sluice_pid=$started_pid
for t in sink:$sink_port source:$source_port echo:$echo_port sluice:$proxy_port sluice:$debug_port; do
	wait_port "${t##*:}" "${t%%:*}"
done

# goroutines on its own: in "a=$(x) b=$(y)" only y's status counts, and a
# failed profile read would leave the count empty and the checks below moot.
base_g=$(goroutines)
base_fds=$(fds) base_sockets=$(sockets) base_pipes=$(pipes) base_rss=$(rss_kib)
log "baseline: $base_g goroutines, $base_fds fds ($base_sockets sockets), $((base_rss / 1024)) MiB RSS"

# malformed: garbage, truncated handshakes and silent clients, in a loop.
malformed() {
	local end=$((SECONDS + DURATION)) n=0 k
	while [ $SECONDS -lt $end ]; do
		k=$((n % 4))
		if exec 3<>"/dev/tcp/127.0.0.1/$proxy_port" 2>/dev/null; then
			case $k in
			0) head -c $((RANDOM % 2048 + 1)) /dev/urandom >&3 2>/dev/null || true ;;
			1) printf '\x05\x01\x00\x05\x01\x00\x03\xff' >&3 2>/dev/null || true ;; # name past the end
			2) printf 'GET / HTTP/1.1\r\n\r\n' >&3 2>/dev/null || true ;;
			3) : ;; # says nothing: the handshake timeout closes it
			esac
			exec 3<&-
		fi
		n=$((n + 1))
	done
	echo "$n"
}

end=$((SECONDS + DURATION))
log "load for ${DURATION}s: tput both ways (-P 4), rr (-c 32), $IDLE_N idle sessions, malformed clients"
# Each load generator ends by itself: a hung one is stopped after
# bench_timeout (its duration and 120 s) and fails the run.
bench=(timeout -k 5 "$(bench_timeout)" "$tmp/sluice-bench")
"${bench[@]}" tput --proxy "127.0.0.1:$proxy_port" --target "127.0.0.1:$sink_port,127.0.0.1:$source_port" \
	--dir both -P 4 --duration "${DURATION}s" --quiet >"$tmp/tput.out" 2>&1 &
tput_pid=$!
"${bench[@]}" rr --proxy "127.0.0.1:$proxy_port" --target "127.0.0.1:$echo_port" -c 32 \
	--duration "${DURATION}s" --quiet >"$tmp/rr.out" 2>&1 &
rr_pid=$!
"${bench[@]}" idle --proxy "127.0.0.1:$proxy_port" --target "127.0.0.1:$echo_port" -n "$IDLE_N" \
	--hold "${DURATION}s" --quiet >"$tmp/idle.out" 2>&1 &
idle_pid=$!
malformed >"$tmp/malformed.out" &
mal_pid=$!
pids+=("$tput_pid" "$rr_pid" "$idle_pid" "$mal_pid")

peak_g=0 peak_fds=0 peak_rss=0
while [ $SECONDS -lt $end ]; do
	sleep 1
	kill -0 "$sluice_pid" 2>/dev/null || die "sluice exited during the load; log: $(tail -5 "$tmp/sluice.log")"
	g=$(goroutines)
	f=$(fds) r=$(rss_kib)
	[ "$g" -gt "$peak_g" ] && peak_g=$g
	[ "$f" -gt "$peak_fds" ] && peak_fds=$f
	[ "$r" -gt "$peak_rss" ] && peak_rss=$r
done

fail=0
for w in tput:$tput_pid rr:$rr_pid idle:$idle_pid; do
	if ! wait "${w##*:}"; then
		log "${w%%:*} failed:"
		cat "$tmp/${w%%:*}.out" >&2
		fail=1
	fi
	forget "${w##*:}" # reaped: its PID may be another process's by exit
done
wait "$mal_pid" || true
forget "$mal_pid"
malformed_n=$(cat "$tmp/malformed.out")

# Back to baseline: goroutines and sockets (within the debug server's own
# connection), RSS within RSS_SLACK_MIB. Silent clients need the 2 s
# handshake timeout; the loop allows 30 s.
after_g=0 after_fds=0 after_sockets=0 after_pipes=0 after_rss=0
for _ in $(seq 60); do
	after_g=$(goroutines)
	after_fds=$(fds) after_sockets=$(sockets) after_pipes=$(pipes) after_rss=$(rss_kib)
	if [ "$after_g" -le $((base_g + 2)) ] && [ "$after_sockets" -le $((base_sockets + 1)) ]; then break; fi
	sleep 0.5
done
summary=$(
	printf '| | goroutines | fds | sockets | pipe fds | RSS (MiB) |\n|---|---|---|---|---|---|\n'
	printf '| baseline | %d | %d | %d | %d | %d |\n' "$base_g" "$base_fds" "$base_sockets" "$base_pipes" $((base_rss / 1024))
	printf '| peak under load | %d | %d | | | %d |\n' "$peak_g" "$peak_fds" $((peak_rss / 1024))
	printf '| after the load | %d | %d | %d | %d | %d |\n' "$after_g" "$after_fds" "$after_sockets" "$after_pipes" $((after_rss / 1024))
	printf '\n%ss of load (race=%s): tput both ways %s Gbit/s in all, rr %s conn/s, %s idle sessions, %s malformed or silent clients\n' \
		"$DURATION" "$RACE" "$(awk '$1 == "total" { print $4 }' "$tmp/tput.out")" \
		"$(awk '$1 == "conn/s" { print $2 }' "$tmp/rr.out")" "$IDLE_N" "$malformed_n"
)
echo "$summary"
if [ -n "$OUT" ]; then echo "$summary" >"$OUT"; fi
if [ "$after_g" -gt $((base_g + 2)) ]; then log "goroutines did not return to baseline: $after_g, baseline $base_g"; fail=1; fi
if [ "$after_sockets" -gt $((base_sockets + 1)) ]; then log "sockets did not return to baseline: $after_sockets, baseline $base_sockets"; fail=1; fi
if [ "$after_pipes" -gt $((base_pipes + 2048)) ]; then log "$after_pipes pipe fds left, more than the pool holds"; fail=1; fi
if [ "$RACE" != 1 ] && [ "$after_rss" -gt $((base_rss + RSS_SLACK_MIB * 1024)) ]; then
	log "RSS stayed at $((after_rss / 1024)) MiB, more than ${RSS_SLACK_MIB} MiB above the $((base_rss / 1024)) MiB baseline"
	fail=1
fi

# SIGTERM must end sluice within its 10 s drain: one still running after
# 30 s fails the run (and is killed) rather than hang the script.
kill -TERM "$sluice_pid"
for _ in $(seq 300); do
	alive "$sluice_pid" || break
	sleep 0.1
done
if alive "$sluice_pid"; then
	log "sluice still ran 30 s after SIGTERM (--drain-timeout 10s); killed"
	kill -KILL "$sluice_pid"
	wait "$sluice_pid" || true
	fail=1
elif ! wait "$sluice_pid"; then
	log "sluice did not exit 0 on SIGTERM"
	fail=1
fi
forget "$sluice_pid"
if grep -q 'DATA RACE' "$tmp/sluice.log"; then
	log "race detector report:"
	cat "$tmp/sluice.log" >&2
	fail=1
fi
if grep -q 'panic' "$tmp/sluice.log"; then log "sluice panicked:"; cat "$tmp/sluice.log" >&2; fail=1; fi
if [ "$fail" = 0 ]; then log "ok"; fi
exit "$fail"
