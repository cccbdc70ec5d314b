#!/usr/bin/env bash
# peers.sh: run the same sluice-bench workloads through direct loopback,
# HAProxy (TCP mode, with and without splice), Dante, microsocks and sluice,
# side by side, and write bench/RESULTS.md and bench/results.json.
#
# usage: bench/peers.sh [path/to/sluice]     (builds ./cmd/sluice when omitted)
# env:   RUNS=3        runs per workload; the median is reported
#        DURATION=4    seconds per timed run
#        PEERS="direct haproxy-splice haproxy-nosplice dante microsocks go-socks5 sluice"
#              (go-socks5 is github.com/armon/go-socks5, built from bench/gopeer)
#              haproxy-pipe1m may be added: HAProxy splicing through 1 MiB
#              pipes (tune.pipesize), as sluice does, instead of 64 KiB
#              sluice variants for the tuning comparison may be added:
#              sluice-l1 (--listeners 1), sluice-pin (--pin),
#              sluice-workers (--workers $(nproc)), sluice-nosplice (--no-splice),
#              sluice-goroutines (--loops -1: no event loops),
#              sluice-netsock (--net-sockets: accept and dial through package net),
#              sluice-allports (--source-ports all: upstream connects search
#              the whole ephemeral port range, odd and even ports alike),
#              sluice-copybelow (--copy-below 16K: small reads copied)
#        Before Dante the script waits up to 70 s for the TIME_WAITs of the
#        runs before to expire (ss, from iproute2): Dante binds a port before
#        each connect and meets them otherwise (sluice-allports leaves them
#        on the odd ports too; no other peer binds a port).
#        IDLE_N=1000   sessions of the idle workload
#        PORT_BASE=17200  first of the loopback ports used
#        OUT=bench     where RESULTS.md and results.json go
#        RELAY_CPUS=, LOAD_CPUS=   taskset CPU lists: when set, each relay
#              runs on RELAY_CPUS and the load generator and targets on
#              LOAD_CPUS (a many-core machine: RELAY_CPUS=0-3 LOAD_CPUS=4-15);
#              unset, everything shares every CPU
#        RELAY_QUOTA=  a percentage of one CPU: when set, each relay (its
#              threads and children) runs in a cgroup capped at that much CPU
#              time (root), so that a relay-bound run compares what each
#              peer does with the same CPU budget (RELAY_CPUS=0 LOAD_CPUS=1
#              RELAY_QUOTA=40 on 2 cores)
#        ROTATE=1      each run starts one peer further down PEERS (run 2
#              with the second, ...); 0 keeps PEERS' order in every run
#        SPREAD=1      loopback addresses the conn/s workload connects from
#              and the echo target serves on (HAProxy balancing over them):
#              each adds a set of ephemeral ports (see port_range in lib.sh)
#        BIN=          a folder of prebuilt sluice, sluice-bench and go-socks5
#              (bench/prebuild.sh), for a machine without Go
#
# Peers come from Debian's packages and are installed with apt-get when
# missing (or taken from PATH); no service is left running. Everything listens on 127.0.0.1 only
# and every process this script starts is stopped by PID on exit. After each
# workload the relay must still run: one that died fails that run (and the
# rest of its workloads in it, not run), with a line naming it.
set -euo pipefail

# Paths given relative to the directory this script is run from (the
# sluice binary, BIN) are made absolute before the cd to the repository root.
case ${1:-} in /* | '') ;; */*) set -- "$PWD/$1" "${@:2}" ;; esac
case ${BIN:-} in '' | /*) ;; *) BIN=$PWD/$BIN ;; esac
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-4}
PEERS=${PEERS:-"direct haproxy-splice haproxy-nosplice dante microsocks go-socks5 sluice"}
IDLE_N=${IDLE_N:-1000}
PORT_BASE=${PORT_BASE:-17200}
OUT=${OUT:-bench}
RELAY_CPUS=${RELAY_CPUS:-} LOAD_CPUS=${LOAD_CPUS:-} SPREAD=${SPREAD:-1} RELAY_QUOTA=${RELAY_QUOTA:-}
ROTATE=${ROTATE:-1}
case $ROTATE in 0 | 1) ;; *) echo "peers.sh: ROTATE=$ROTATE: want 0 or 1" >&2; exit 2 ;; esac
SLUICE=${1:-}

# shellcheck source=bench/lib.sh
. bench/lib.sh
spread_sources "$SPREAD"

need jq jq
place_relay_and_load

SINK_PORT=$((PORT_BASE + 1)) SOURCE_PORT=$((PORT_BASE + 2)) ECHO_PORT=$((PORT_BASE + 3))
PROXY_PORT=$((PORT_BASE + 10))
FWD_SINK=$((PORT_BASE + 11)) FWD_SOURCE=$((PORT_BASE + 12)) FWD_ECHO=$((PORT_BASE + 13))
for p in $SINK_PORT $SOURCE_PORT $ECHO_PORT $PROXY_PORT $FWD_SINK $FWD_SOURCE $FWD_ECHO; do port_free "$p"; done

BENCH=$(go_bin sluice-bench ./cmd/sluice-bench)

sluice_note=""
if [[ " $PEERS " == *" sluice"* ]]; then
	if [ -z "$SLUICE" ] && [ -n "${BIN:-}" ]; then
		SLUICE=$(go_bin sluice ./cmd/sluice)
	elif [ -z "$SLUICE" ]; then
		log "building sluice"
		if CGO_ENABLED=0 go build -buildvcs=auto -o "$tmp/sluice" ./cmd/sluice 2>"$tmp/build.log"; then
			SLUICE=$tmp/sluice
		else
			cat "$tmp/build.log" >&2
			sluice_note="sluice was not measured: ./cmd/sluice did not build."
			log "$sluice_note"
			# Every sluice variant goes (they all run the build that failed).
			kept=""
			for p in $PEERS; do
				case $p in sluice | sluice-*) ;; *) kept+=" $p" ;; esac
			done
			PEERS=$kept
		fi
	fi
fi
for peer in $PEERS; do
	case $peer in
	haproxy-splice | haproxy-nosplice | haproxy-pipe1m) need haproxy haproxy ;;
	dante) need danted dante-server && need ss iproute2 ;;
	microsocks) need microsocks microsocks ;;
	go-socks5) GOPEER=$(go_bin go-socks5 bench/gopeer) ;;
	direct | sluice | sluice-allports | sluice-l1 | sluice-pin | sluice-workers | sluice-nosplice | sluice-goroutines | sluice-netsock | sluice-copybelow) ;;
	*) die "unknown peer $peer (direct haproxy-splice haproxy-nosplice haproxy-pipe1m dante microsocks go-socks5 sluice sluice-l1 sluice-pin sluice-workers sluice-nosplice sluice-goroutines sluice-netsock sluice-allports sluice-copybelow)" ;;
	esac
done

# The targets run for the whole script; the safety duration outlives any run:
# six workloads and a start per peer and run, a TIME_WAIT wait per run.
read -r -a peer_list <<<"$PEERS"
safety=$(((DURATION * 6 + 30) * RUNS * ${#peer_list[@]} + 100 * RUNS + 300))
start sink "${load_on[@]+"${load_on[@]}"}" "$BENCH" sink --addr "127.0.0.1:$SINK_PORT" --duration "${safety}s"
start source "${load_on[@]+"${load_on[@]}"}" "$BENCH" source --addr "127.0.0.1:$SOURCE_PORT" --duration "${safety}s"
start echo "${load_on[@]+"${load_on[@]}"}" "$BENCH" echo --addr "$(loopbacks "$SPREAD" "$ECHO_PORT")" --duration "${safety}s"
wait_port "$SINK_PORT" sink
wait_port "$SOURCE_PORT" source
wait_port "$ECHO_PORT" echo

# start_peer NAME: start the relay and set PEER_PID, VIA (client flags) and
# the sink, source and echo addresses the client uses.
start_peer() {
	PEER_PID="" SINK=127.0.0.1:$SINK_PORT SOURCE=127.0.0.1:$SOURCE_PORT ECHO=127.0.0.1:$ECHO_PORT
	ECHOES=$(loopbacks "$SPREAD" "$ECHO_PORT")
	VIA=(--proxy "127.0.0.1:$PROXY_PORT")
	case $1 in
	direct)
		VIA=(--direct)
		return
		;;
	haproxy-splice | haproxy-nosplice | haproxy-pipe1m)
		local mode=${1#haproxy-}
		haproxy_cfg "$tmp/haproxy.cfg" "$mode" "$(haproxy_maxconn 4000)" \
			"$FWD_SINK:$SINK_PORT" "$FWD_SOURCE:$SOURCE_PORT" "$FWD_ECHO:$ECHO_PORT:$SPREAD"
		start "$1" "${relay_on[@]+"${relay_on[@]}"}" haproxy -db -f "$tmp/haproxy.cfg"
		VIA=(--direct) SINK=127.0.0.1:$FWD_SINK SOURCE=127.0.0.1:$FWD_SOURCE ECHO=127.0.0.1:$FWD_ECHO ECHOES=$ECHO
		wait_port "$FWD_ECHO" "$1"
		;;
	dante)
		danted_cfg "$tmp/danted.conf" "$tmp/danted.out" "$PROXY_PORT"
		start dante "${relay_on[@]+"${relay_on[@]}"}" danted -f "$tmp/danted.conf" -p "$tmp/danted.pid"
		wait_port "$PROXY_PORT" dante
		;;
	microsocks)
		start microsocks "${relay_on[@]+"${relay_on[@]}"}" microsocks -i 127.0.0.1 -p "$PROXY_PORT"
		wait_port "$PROXY_PORT" microsocks
		# microsocks reads each stage with one recv and drops pipelined
		# bytes, and closes both sides on the first EOF.
		VIA+=(--lockstep)
		;;
	go-socks5)
		start go-socks5 "${relay_on[@]+"${relay_on[@]}"}" "$GOPEER" --listen "127.0.0.1:$PROXY_PORT"
		wait_port "$PROXY_PORT" go-socks5
		;;
	sluice | sluice-*)
		local extra=()
		case $1 in
		sluice-l1) extra=(--listeners 1) ;;
		sluice-pin) extra=(--pin) ;;
		sluice-workers) extra=(--workers "$relay_ncpu") ;;
		sluice-nosplice) extra=(--no-splice) ;;
		sluice-goroutines) extra=(--loops -1) ;;
		sluice-netsock) extra=(--net-sockets) ;;
		sluice-allports) extra=(--source-ports all) ;;
		sluice-copybelow) extra=(--copy-below 16K) ;;
		esac
		# No access log: HAProxy and microsocks log nothing here either.
		start "$1" "${relay_on[@]+"${relay_on[@]}"}" "$SLUICE" --listen "127.0.0.1:$PROXY_PORT" --access-log=false "${extra[@]+"${extra[@]}"}"
		wait_port "$PROXY_PORT" "$1"
		;;
	esac
	PEER_PID=$started_pid
}

stop_peer() {
	if [ -n "$PEER_PID" ]; then
		kill_tree "$PEER_PID"
		forget "$PEER_PID"
	fi
}

# workload NAME: print the sluice-bench arguments of a workload.
workload() {
	local up_verify=()
	if [ "$peer" = microsocks ]; then up_verify=(--verify none); fi
	case $1 in
	tput1-up) echo tput -P 1 --dir up --target "$SINK" "${up_verify[@]+"${up_verify[@]}"}" --duration "${DURATION}s" ;;
	tput1-down) echo tput -P 1 --dir down --target "$SOURCE" --duration "${DURATION}s" ;;
	tput8-up) echo tput -P 8 --dir up --target "$SINK" "${up_verify[@]+"${up_verify[@]}"}" --duration "${DURATION}s" ;;
	tput8-down) echo tput -P 8 --dir down --target "$SOURCE" --duration "${DURATION}s" ;;
	rr64) echo rr -c 64 --target "$ECHOES" "${spread_from[@]+"${spread_from[@]}"}" --duration "${DURATION}s" ;;
	idle) echo idle -n "$IDLE_N" --hold 1s --target "$ECHO" ;;
	esac
}
# idle goes first, in a peer process started for each run, so that every
# relay's memory per idle session is measured from a fresh start rather than
# in memory the other workloads left behind.
WORKLOADS="idle tput1-up tput1-down tput8-up tput8-down rr64"

: >"$tmp/runs.jsonl"
: >"$tmp/commands.txt"
# Runs are interleaved (run 1 of every peer, then run 2 of every peer, ...),
# so that a machine that slows down or speeds up during the script weighs on
# every peer alike instead of on the ones measured last, and each run starts
# one peer further down the list (ROTATE=1), so that no peer always comes
# first or last: with as many runs as peers, each takes every place once.
read -ra peer_list <<<"$PEERS"
for run in $(seq "$RUNS"); do
	for i in "${!peer_list[@]}"; do
		peer=${peer_list[(i + (ROTATE ? run - 1 : 0)) % ${#peer_list[@]}]}
		log "run $run of $RUNS: $peer"
		# Dante binds a port before each connect; the TIME_WAITs the
		# peer before it left would cost it errors (see lib.sh).
		if [ "$peer" = dante ]; then await_time_wait; fi
		start_peer "$peer"
		gone=""
		for w in $WORKLOADS; do
			# shellcheck disable=SC2207
			args=($(workload "$w") "${VIA[@]}" --json --quiet)
			if [ -n "$PEER_PID" ]; then args+=(--pid "$PEER_PID"); fi
			if [ "$run" = 1 ]; then echo "$peer/$w: sluice-bench ${args[*]}" >>"$tmp/commands.txt"; fi
			rc=0
			if [ -n "$gone" ]; then
				# The relay died during an earlier workload: whatever
				# answers on its port now is not it.
				echo null >"$tmp/out.json"
				echo "not run: the relay was gone after $gone" >"$tmp/err.txt"
				rc=1
			else
				timeout -k 5 "$(bench_timeout)" "${load_on[@]+"${load_on[@]}"}" "$BENCH" "${args[@]}" >"$tmp/out.json" 2>"$tmp/err.txt" || rc=$?
				# One JSON object, or null: jq 1.6's -e passes an empty file,
				# whose run would then leave no record at all.
				if ! jq -se 'length == 1 and (.[0] | type == "object")' "$tmp/out.json" >/dev/null 2>&1; then
					echo null >"$tmp/out.json"
				fi
				# The relay must have lived through the run: dead, its
				# figures are of a failure, or of another process that
				# took its port.
				if [ -n "$PEER_PID" ] && ! alive "$PEER_PID"; then
					gone=$w
					log "run $run: $peer (PID $PEER_PID) is gone after $w: this and its later workloads in this run fail"
					if [ "$rc" = 0 ]; then rc=1; fi
				fi
			fi
			jq -c --arg peer "$peer" --arg w "$w" --argjson run "$run" --argjson rc "$rc" \
				--arg stderr "$(head -c 500 "$tmp/err.txt")" --arg gone "$gone" \
				'{peer: $peer, workload: $w, run: $run, exit: $rc, stderr: $stderr, result: .}
				 + (if $gone != "" then {relay_gone: true} else {} end)' \
				"$tmp/out.json" >>"$tmp/runs.jsonl"
			jq -r --arg peer "$peer" --arg w "$w" --argjson rc "$rc" \
				'"  \($peer) \($w): exit \($rc) " + (if . == null then "no result" else
				 (if .mode == "tput" then "\(.gbps * 100 | round / 100) Gbit/s"
				  elif .mode == "rr" then "\(.conns_per_sec | round) conn/s"
				  else "\(.open) open" end) + ", errors \(.errors | .connect + .socks + .data + .io)" end)' \
				"$tmp/out.json" >&2
		done
		stop_peer
	done
done

# Machine facts, and the builds measured, read from the binaries themselves
# (build_info in lib.sh): the Go found here need not be the one that built
# them (a sluice path given, BIN).
sluice_build="not measured"
if [ -n "$SLUICE" ]; then sluice_build=$(build_info "$SLUICE"); fi
machine=$(jq -n \
	--arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
	--arg cores "$(nproc)" \
	--arg kernel "$(uname -r)" \
	--arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
	--arg sluice_build "$sluice_build" --arg bench_build "$(build_info "$BENCH")" \
	--arg haproxy "$(haproxy -v 2>/dev/null | head -1 || true)" \
	--arg dante "$(pkg_version dante-server danted -v)" \
	--arg microsocks "$(pkg_version microsocks echo unknown)" \
	--arg placement "$placement" --arg ports "$(port_range)" \
	'{date: $date, cores: ($cores | tonumber), kernel: $kernel, cpu: $cpu,
	  sluice_build: $sluice_build, sluice_bench_build: $bench_build,
	  haproxy: $haproxy, dante_server: $dante, microsocks: $microsocks, placement: $placement,
	  port_range: $ports}')
settings=$(jq -n --argjson runs "$RUNS" --argjson dur "$DURATION" --argjson idle "$IDLE_N" --arg peers "$PEERS" \
	--arg relay_cpus "$RELAY_CPUS" --arg load_cpus "$LOAD_CPUS" --argjson spread "$SPREAD" --arg quota "$RELAY_QUOTA" --argjson rotate "$ROTATE" \
	'{runs: $runs, duration_s: $dur, idle_sessions: $idle, peers: ($peers | split(" ") | map(select(. != ""))),
	  relay_cpus: $relay_cpus, load_cpus: $load_cpus, spread: $spread, relay_quota: $quota, rotate: ($rotate == 1)}')

# The figures: workload, path into the result, label, and whether lower is better.
figures='[
 ["tput1-up",   ["gbps"],                      "tput 1 stream up, Gbit/s", false],
 ["tput1-down", ["gbps"],                      "tput 1 stream down, Gbit/s", false],
 ["tput8-up",   ["gbps"],                      "tput 8 streams up, Gbit/s", false],
 ["tput8-down", ["gbps"],                      "tput 8 streams down, Gbit/s", false],
 ["rr64",       ["conns_per_sec"],             "rr 64 workers, conn/s", false],
 ["rr64",       ["latency", "p99_us"],         "rr 64 workers, p99 µs", true],
 ["idle",       ["rss_bytes_per_session"],     "idle, RSS bytes per session", true],
 ["idle",       ["fds_per_session"],           "idle, fds per session", true],
 ["tput1-up",   ["cpu", "per_gib"],            "CPU s per GiB, 1 stream up", true],
 ["tput1-down", ["cpu", "per_gib"],            "CPU s per GiB, 1 stream down", true],
 ["tput8-up",   ["cpu", "per_gib"],            "CPU s per GiB, 8 streams up", true],
 ["tput8-down", ["cpu", "per_gib"],            "CPU s per GiB, 8 streams down", true],
 ["rr64",       ["cpu", "per_1k_conns"],       "CPU s per 1,000 connections", true],
 ["tput1-up",   ["client_cpu", "per_gib"],     "load generator CPU s per GiB, 1 stream up", true],
 ["rr64",       ["client_cpu", "per_1k_conns"], "load generator CPU s per 1,000 connections", true],
 ["tput1-up",   ["machine_cpu", "per_gib"],    "machine CPU s per GiB, 1 stream up", true],
 ["tput1-down", ["machine_cpu", "per_gib"],    "machine CPU s per GiB, 1 stream down", true],
 ["tput8-up",   ["machine_cpu", "per_gib"],    "machine CPU s per GiB, 8 streams up", true],
 ["tput8-down", ["machine_cpu", "per_gib"],    "machine CPU s per GiB, 8 streams down", true],
 ["rr64",       ["machine_cpu", "per_1k_conns"], "machine CPU s per 1,000 connections", true]
]'

jq -s --argjson machine "$machine" --argjson settings "$settings" --argjson figures "$figures" "$jq_median"'
	. as $runs
	| {machine: $machine, settings: $settings, runs: $runs,
	   medians: [$figures[] as $f | {workload: $f[0], path: $f[1], label: $f[2], lower_is_better: $f[3],
		values: ([$settings.peers[] as $p | {($p): ([$runs[]
			| select(.peer == $p and .workload == $f[0] and .exit == 0 and .result != null)
			| .result | getpath($f[1]) | select(. != null)] | median)}] | add)}],
	   errors: ([$settings.peers[] as $p | {($p): ([$runs[] | select(.peer == $p)
		| if .result == null then 1 else (.result.errors | .connect + .socks + .data + .io) end] | add)}] | add)}
' "$tmp/runs.jsonl" >"$tmp/results.json"

# Markdown: medians, then sluice/peer ratios. A run that failed (sluice-bench
# exits non-zero on any error, and still prints its figures; or the relay
# was gone after it, its exit then 1 when sluice-bench's was 0, and its
# later workloads in that run not run) is left out of the medians above and named under the table: a figure from a run whose
# checks failed is not one to compare (bench/guard.sh counts on it: a peer
# all of whose runs failed has no figure).
jq -r --rawfile commands "$tmp/commands.txt" --arg note "$sluice_note" '
	def num: if . == null then "–" elif . >= 100 then (round | tostring)
		elif . >= 1 then (. * 100 | round / 100 | tostring) else (. * 1000 | round / 1000 | tostring) end;
	def row: "| " + join(" | ") + " |";
	.settings.peers as $peers
	| ($peers | map(select(. != "sluice"))) as $others
	| "# sluice beside its peers\n",
	  "Generated by `bench/peers.sh` on \(.machine.date): median of \(.settings.runs) runs of \(.settings.duration_s) s each, with `\(if .settings.relay_cpus != "" then "RELAY_CPUS=\(.settings.relay_cpus) LOAD_CPUS=\(.settings.load_cpus) " else "" end)\(if (.settings.spread // 1) > 1 then "SPREAD=\(.settings.spread) " else "" end)\(if (.settings.relay_quota // "") != "" then "RELAY_QUOTA=\(.settings.relay_quota) " else "" end)\(if .settings.rotate == false then "ROTATE=0 " else "" end)RUNS=\(.settings.runs) DURATION=\(.settings.duration_s) IDLE_N=\(.settings.idle_sessions) PEERS=\"\(.settings.peers | join(" "))\" bench/peers.sh`.\n",
	  "## Machine\n",
	  "- CPU: \(.machine.cpu), \(.machine.cores) cores",
	  "- kernel \(.machine.kernel); sluice \(.machine.sluice_build); sluice-bench \(.machine.sluice_bench_build)",
	  "- \(.machine.haproxy); dante-server \(.machine.dante_server); microsocks \(.machine.microsocks)",
	  "- \(.machine.placement // "load generator, targets and relay share these cores"); all traffic is on loopback",
	  "- ephemeral ports \(.machine.port_range // "unknown"), \(.settings.spread // 1) loopback source and echo address(es): loopback conn/s tops out at about as many per second for each (TIME_WAIT ports are reused after 1 s), or less; the direct column shows the ceiling\n",
	  (if $note != "" then "**\($note)**\n" else empty end),
	  "![throughput and conn/s per peer](chart.svg)\n",
	  "## Medians\n",
	  (["figure"] + $peers | row), (["---"] + ($peers | map("---:")) | row),
	  (.medians[] as $m | [$m.label] + [$peers[] | $m.values[.] | num] | row),
	  (["errors, all runs"] + [$peers[] as $p | .errors[$p] | tostring] | row),
	  "",
	  ([.runs[] | select(.exit != 0) | "\(.peer) \(.workload) run \(.run) (exit \(.exit)\(if .relay_gone then ", relay gone" else "" end))"] as $failed
	   | if ($failed | length) > 0 then "Left out of the medians, as failed (sluice-bench exited non-zero, or the relay was gone after the run): \($failed | join(", ")).\n" else empty end),
	  (if ($peers | index("sluice")) then
		"## Ratio sluice / peer\n",
		"Above 1 means sluice has more of the figure: better for rates, worse where lower is better.\n",
		(["figure"] + ($others | map("sluice / " + .)) | row), (["---"] + ($others | map("---:")) | row),
		(.medians[] as $m | [$m.label + (if $m.lower_is_better then " (lower is better)" else "" end)]
			+ [$others[] as $p | if ($m.values.sluice == null or $m.values[$p] == null or $m.values[$p] == 0)
				then "–" else ($m.values.sluice / $m.values[$p] | . * 100 | round / 100 | tostring) end] | row),
		""
	  else empty end),
	  "## Notes\n",
	  "- HAProxy is a plain TCP forwarder: the load generator runs `--direct` against its frontends, which forward to the targets; it does no SOCKS5 handshake.",
	  (if ($peers | index("haproxy-pipe1m")) then "- haproxy-pipe1m is HAProxy splicing with `tune.pipesize 1048576`: the 1 MiB pipes sluice splices through by default, where HAProxy by default keeps the kernel default of 64 KiB." else empty end),
	  "- CPU, RSS and descriptors are summed over the relay process and its descendants (Dante relays in child processes); RSS counts shared pages once per process.",
	  "- microsocks drops bytes pipelined behind the greeting and closes both sides on the first EOF, so it runs with `--lockstep`, and uploads with `--verify none` (no sink count).",
	  "- `direct` has no relay process, so it has no CPU, RSS or descriptor figures.",
	  "- The load generator CPU rows are the time `sluice-bench` itself used (getrusage) in the same runs: on shared cores, what it spends the relay cannot have. A SOCKS5 handshake costs the client a write and a read that the `--direct` runs against HAProxy do not make, so HAProxy has more of the shared cores to work with.",
	  "- The machine CPU rows are every CPU'"'"'s busy time over the same runs (/proc/stat: user, nice, system, irq, softirq), relay, load generator, targets and kernel together. On loopback a segment'"'"'s receive work runs in whichever process'"'"'s context meets it (the sender'"'"'s system call, or the receiver'"'"'s when it holds the socket), so a relay'"'"'s own CPU per GiB moves with what its neighbours do; the machine'"'"'s holds all of it, and `direct` shows what the load itself costs.",
	  "- Each run starts the relay afresh and measures the idle workload first, so RSS per session is what a new process pays, not memory reused from the other workloads.",
	  "- Runs are interleaved (run 1 of every peer, then run 2, ...), so that the machine speeding up or slowing down during the script weighs on every peer alike" + (if .settings.rotate then "; each run starts one peer further down the list (run 2 with the second, ...), so that no peer always comes first or last (each keeps the peer before it except when it starts a run)." else "." end),
	  "- sluice runs with its defaults and `--access-log=false` (HAProxy and microsocks log nothing here either); the access log cost about 8 % more relay CPU per connection before its lines went through a writer that never blocks (0.266 against 0.245 s per 1,000 connections, `sluice-bench rr -c 32 --duration 3s --pid PID`, median of 4 alternating runs with `--access-log` on and off), about 6 % after, 5 % once its lines stopped allocating (README, Logs).\n",
	  "## Commands\n",
	  "Ports and PIDs are those of this run.\n",
	  "```", ($commands | rtrimstr("\n")), "```"
' "$tmp/results.json" >"$tmp/RESULTS.md"

mkdir -p "$OUT"
cp "$tmp/results.json" "$OUT/results.json"
"$BENCH" chart <"$tmp/results.json" >"$OUT/chart.svg"
# Sections measured by other commands, kept beside RESULTS.md: iperf.md is
# written by bench/iperf.sh; cpusplit.md's tables by bench/cpusplit.sh, with
# its prose; udp.md, idle.md and tuning.md by hand, commands included.
for extra in "cpusplit.md:Where a connection's CPU goes" "iperf.md:iperf3 through sluice (bench/iperf.sh)" "udp.md:UDP ASSOCIATE" \
	"idle.md:Idle sessions at scale" "tuning.md:sluice's own settings"; do
	file=${extra%%:*} title=${extra#*:}
	if [ -f "$OUT/$file" ]; then
		printf '\n## %s\n\n' "$title" >>"$tmp/RESULTS.md"
		cat "$OUT/$file" >>"$tmp/RESULTS.md"
	fi
done
cp "$tmp/RESULTS.md" "$OUT/RESULTS.md"
cat "$OUT/RESULTS.md"
log "wrote $OUT/RESULTS.md, $OUT/results.json and $OUT/chart.svg"
