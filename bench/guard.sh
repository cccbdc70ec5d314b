#!/usr/bin/env bash
# guard.sh: performance regression guard. Runs bench/peers.sh with HAProxy
# (plain TCP forwarding: splice through the kernel's 64 KiB pipes, splice
# through 1 MiB pipes as sluice does, no splice) and the Go peer (armon/go-socks5) beside
# sluice in one run, and exits non-zero when sluice's throughput or conn/s
# falls below FLOOR (default 0.9) times any peer's figure from that run.
# It is not part of .ci/run: a shared CI machine is too noisy to fail on.
# Each run's own ratios are printed before the medians': on a noisy machine
# they show how far one run's figure moves from the next.
#
# Any failed run of sluice (sluice-bench found an error and exited non-zero)
# fails the guard as well: peers.sh leaves failed runs out of its medians,
# so the figures alone would not show it.
#
# Exit 0: pass; 1: FAIL (a ratio below FLOOR, a peer without a figure, a
# failed run of sluice, or peers.sh stopped before writing its results: a
# peer or sluice that did not start; 130 when interrupted); 2: bad settings,
# or a GUARD_RESULTS that is not a results.json of peers.sh.
#
# usage: bench/guard.sh [path/to/sluice]
# env:   RUNS=3 DURATION=4 FLOOR=0.9, and peers.sh's other variables
#        GUARD_RESULTS=   a results.json that peers.sh wrote (these five peers):
#                         judge it instead of running peers.sh
set -euo pipefail
# Paths given relative to the directory this script is run from (the sluice
# binary, BIN, GUARD_RESULTS) are made absolute before the cd to the
# repository root.
case ${1:-} in /* | '') ;; */*) set -- "$PWD/$1" "${@:2}" ;; esac
case ${BIN:-} in '' | /*) ;; *) export BIN=$PWD/$BIN ;; esac
case ${GUARD_RESULTS:-} in '' | /*) ;; *) GUARD_RESULTS=$PWD/$GUARD_RESULTS ;; esac
cd "$(dirname "$0")/.."
FLOOR=${FLOOR:-0.9}
GUARD_RESULTS=${GUARD_RESULTS:-}
[[ $FLOOR =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "guard.sh: FLOOR=$FLOOR: want a number such as 0.9" >&2; exit 2; }
command -v jq >/dev/null 2>&1 || { echo "guard.sh: jq is needed (apt-get install jq)" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [ -n "$GUARD_RESULTS" ]; then
	[ -f "$GUARD_RESULTS" ] || { echo "guard.sh: GUARD_RESULTS=$GUARD_RESULTS: no such file" >&2; exit 2; }
	jq -e '(.runs | type) == "array" and (.medians | type) == "array"' "$GUARD_RESULTS" >/dev/null 2>&1 ||
		{ echo "guard.sh: GUARD_RESULTS=$GUARD_RESULTS: not a results.json that bench/peers.sh wrote" >&2; exit 2; }
	cp "$GUARD_RESULTS" "$out/results.json"
else
	# A run that stops early (a peer or sluice that does not start, an
	# interrupt) writes no results: that is no pass either, and says so.
	rc=0
	PEERS="haproxy-splice haproxy-pipe1m haproxy-nosplice go-socks5 sluice" IDLE_N=${IDLE_N:-200} OUT="$out" bash bench/peers.sh "$@" >/dev/null || rc=$?
	if [ "$rc" != 0 ]; then
		echo "guard: FAIL: bench/peers.sh exited $rc before writing its results (its messages are above)"
		exit "$rc"
	fi
fi
# Per run, for the record: sluice's figure over each peer's in the same run.
jq -r '
	def fig: if .workload == "rr64" then .result.conns_per_sec else .result.gbps end;
	[.runs[] | select(.workload != "idle" and .exit == 0 and .result != null)] as $r
	| ($r | map(.workload) | unique[]) as $w
	| ["haproxy-splice", "haproxy-pipe1m", "haproxy-nosplice", "go-socks5"][] as $p
	| [$r[] | select(.workload == $w and .peer == "sluice") as $s
	   | $r[] | select(.workload == $w and .peer == $p and .run == $s.run and fig != null and fig > 0)
	   | ($s | fig) / fig | . * 100 | round / 100] as $ratios
	| select($ratios | length > 0)
	| "per run, \($w): sluice / \($p) = \($ratios | map(tostring) | join(", "))"
' "$out/results.json"
# A peer with no figure (it failed to start, every run of it failed) fails
# the guard too: a comparison that did not happen is not a pass.
jq -r --argjson floor "$FLOOR" '
	[.runs[] | select(.exit != 0)] as $failed
	| [.medians[] | select(.lower_is_better | not) | select(.workload != "idle") as $m
	 | ["haproxy-splice", "haproxy-pipe1m", "haproxy-nosplice", "go-socks5"][] as $p
	 | {label: $m.label, peer: $p,
	    ratio: (if ($m.values[$p] // 0) > 0 then ($m.values.sluice // 0) / $m.values[$p] else null end)}]
	| (.[] | if .ratio == null then "\(.label): \(.peer) has no figure  MISSING"
	         else "\(.label): sluice / \(.peer) = \(.ratio * 100 | round / 100)" + (if .ratio < $floor then "  BELOW \($floor)" else "" end) end),
	  ($failed[] | "\(.peer) \(.workload) run \(.run) failed (exit \(.exit))"
	     + (if .peer == "sluice" then "  SLUICE FAILED" else ", left out of its median" end)),
	  (if length == 0 or any(.[]; .ratio == null or .ratio < $floor) or any($failed[]; .peer == "sluice")
	   then "guard: FAIL" else "guard: ok" end)
' "$out/results.json" | tee "$out/guard.txt"
! grep -q "guard: FAIL" "$out/guard.txt"
