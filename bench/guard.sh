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
# usage: bench/guard.sh [path/to/sluice]
# env:   RUNS=3 DURATION=4 FLOOR=0.9, and peers.sh's other variables
set -euo pipefail
cd "$(dirname "$0")/.."
FLOOR=${FLOOR:-0.9}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
PEERS="haproxy-splice haproxy-pipe1m haproxy-nosplice go-socks5 sluice" IDLE_N=${IDLE_N:-200} OUT="$out" bash bench/peers.sh "$@" >/dev/null
# Per run, for the record: sluice's figure over each peer's in the same run.
jq -r '
	def fig: if .workload == "rr64" then .result.conns_per_sec else .result.gbps end;
	[.runs[] | select(.workload != "idle" and .result != null)] as $r
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
	[.medians[] | select(.lower_is_better | not) | select(.workload != "idle") as $m
	 | ["haproxy-splice", "haproxy-pipe1m", "haproxy-nosplice", "go-socks5"][] as $p
	 | {label: $m.label, peer: $p,
	    ratio: (if ($m.values[$p] // 0) > 0 then ($m.values.sluice // 0) / $m.values[$p] else null end)}]
	| (.[] | if .ratio == null then "\(.label): \(.peer) has no figure  MISSING"
	         else "\(.label): sluice / \(.peer) = \(.ratio * 100 | round / 100)" + (if .ratio < $floor then "  BELOW \($floor)" else "" end) end),
	  (if length == 0 or any(.[]; .ratio == null or .ratio < $floor) then "guard: FAIL" else "guard: ok" end)
' "$out/results.json" | tee "$out/guard.txt"
! grep -q "guard: FAIL" "$out/guard.txt"
