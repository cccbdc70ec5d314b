# lib.sh: what the bench scripts share, sourced right after `cd` to the
# repository root: a temporary directory ($tmp), processes started with
# `start` and stopped by PID (with their descendants) on exit or interrupt,
# logging, installing Debian packages without starting their services, the
# Go programs (built here, or taken from BIN), and HAProxy's configuration.
# shellcheck shell=bash

SCRIPT=$(basename "$0")
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
tmp=$(mktemp -d)
pids=()
policy_created=""

log() { echo "$SCRIPT: $*" >&2; }
die() { log "$*"; exit 1; }

# children PID: the PIDs of PID's child processes, read from /proc/*/stat
# (no procps: pgrep and ps are not on every machine, a minimal container's
# least of all).
children() {
	local f line rest
	for f in /proc/[0-9]*/stat; do
		# A process that exits meanwhile takes its file with it.
		{ read -r line <"$f"; } 2>/dev/null || continue
		# The fields after the command name, which may hold spaces and
		# parentheses: state, then the parent's PID.
		rest=${line##*) }
		rest=${rest#* }
		if [ "${rest%% *}" = "$1" ]; then
			f=${f#/proc/}
			echo "${f%/stat}"
		fi
	done
}

# kill_tree PID: stop a process and its descendants (Dante forks), by PID.
kill_tree() {
	local pid=$1 child
	for child in $(children "$pid"); do
		kill_tree "$child"
	done
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local pid
	for pid in "${pids[@]+"${pids[@]}"}"; do
		kill_tree "$pid"
	done
	if [ -n "$policy_created" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
	if [ -n "${cgroup_dir:-}" ]; then rmdir "$cgroup_dir" 2>/dev/null || true; fi
	if [ -n "${target_ns:-}" ]; then ip netns del "$target_ns" 2>/dev/null || true; fi
	if [ -n "${tw_reuse_was:-}" ]; then echo "$tw_reuse_was" >/proc/sys/net/ipv4/tcp_tw_reuse; fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# cpu_quota PERCENT: make a cgroup whose processes together get at most
# PERCENT of one CPU (cgroup v2's cpu.max, or v1's cpu controller), removed on
# exit, and set the array in_quota to a command prefix that starts a
# process, its threads and its children inside it. Needs root.
cgroup_dir=""
cpu_quota() {
	local q=$1
	case $q in '' | *[!0-9]*) die "RELAY_QUOTA=$q: a whole percentage of one CPU" ;; esac
	[ "$q" -ge 5 ] || die "RELAY_QUOTA=$q: at least 5"
	if [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
		echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
		cgroup_dir=/sys/fs/cgroup/sluice-bench.$$
		mkdir "$cgroup_dir" || die "RELAY_QUOTA needs root (cgroup v2)"
		echo "$((q * 1000)) 100000" >"$cgroup_dir/cpu.max"
	elif [ -d /sys/fs/cgroup/cpu ]; then
		cgroup_dir=/sys/fs/cgroup/cpu/sluice-bench.$$
		mkdir "$cgroup_dir" || die "RELAY_QUOTA needs root (cgroup v1)"
		echo 100000 >"$cgroup_dir/cpu.cfs_period_us"
		echo "$((q * 1000))" >"$cgroup_dir/cpu.cfs_quota_us"
	else
		die "RELAY_QUOTA needs a cgroup cpu controller"
	fi
	# shellcheck disable=SC2016,SC2034 # $0 and $@ are the inner shell's; in_quota is read by the sourcing script
	in_quota=(bash -c 'echo $$ >"$0" && exec "$@"' "$cgroup_dir/cgroup.procs")
}

# place_relay_and_load: from RELAY_CPUS, LOAD_CPUS and RELAY_QUOTA (empty:
# unset), set the command prefixes relay_on and load_on (taskset, and the
# relay's cgroup), relay_ncpu (the CPUs a relay may use) and placement (a
# line saying so, for the results).
place_relay_and_load() {
	relay_on=() load_on=() relay_ncpu=$(nproc)
	placement="load generator, targets and relay share these cores"
	if [ -n "$RELAY_CPUS$LOAD_CPUS" ]; then
		if [ -z "$RELAY_CPUS" ] || [ -z "$LOAD_CPUS" ]; then die "set both RELAY_CPUS and LOAD_CPUS, or neither"; fi
		need taskset util-linux
		relay_on=(taskset -c "$RELAY_CPUS") load_on=(taskset -c "$LOAD_CPUS")
		relay_ncpu=$("${relay_on[@]}" nproc) || die "RELAY_CPUS=$RELAY_CPUS is not a CPU list taskset takes"
		"${load_on[@]}" true || die "LOAD_CPUS=$LOAD_CPUS is not a CPU list taskset takes"
		placement="relays on CPUs $RELAY_CPUS ($relay_ncpu), load generator and targets on CPUs $LOAD_CPUS ($("${load_on[@]}" nproc))"
	fi
	if [ -n "$RELAY_QUOTA" ]; then
		cpu_quota "$RELAY_QUOTA"
		relay_on+=("${in_quota[@]}")
		placement+="; each relay capped at $RELAY_QUOTA % of one CPU (cgroup), so conn/s and throughput are what it does with that budget"
	fi
}

# cpu_mask LIST: the hexadecimal mask of a taskset CPU list ("1", "2-3",
# "0,4-5"), as /sys/class/net/*/queues/rx-*/rps_cpus takes it.
cpu_mask() {
	local m=0 part a b i parts
	IFS=, read -r -a parts <<<"$1"
	for part in "${parts[@]}"; do
		a=${part%-*} b=${part#*-}
		case $a$b in '' | *[!0-9]*) die "$1: not a CPU list" ;; esac
		for ((i = a; i <= b; i++)); do m=$((m | 1 << i)); done
	done
	printf '%x' "$m"
}

# target_netns CPUS: make a network namespace (removed on exit) joined to
# this one by a veth pair, whose receive work on both ends is steered (RPS)
# to CPUS, and set target_ns, target_ip (the namespace's end, 10.233.X.2)
# and in_target_ns (a command prefix that runs in it). A connection from
# a relay on other CPUs to a target there then completes after connect
# returns, as one to another machine does, where one over loopback
# completes inside the call. Needs root and ip (iproute2). For the run,
# net.ipv4.tcp_tw_reuse is 1 (restored on exit): every connection to the
# target has the same two addresses, and the kernel's default reuses
# TIME_WAIT ports only on loopback, so a few rounds of conn/s would use up
# the ports (connect then fails with EADDRNOTAVAIL after burning CPU on the
# search).
target_ns="" tw_reuse_was=""
target_netns() {
	[ "$(id -u)" = 0 ] || die "a target in its own network namespace needs root"
	need ip iproute2
	local mask id=$(($$ % 250)) a="slab$$a" b="slab$$b"
	mask=$(cpu_mask "$1")
	tw_reuse_was=$(cat /proc/sys/net/ipv4/tcp_tw_reuse)
	echo 1 >/proc/sys/net/ipv4/tcp_tw_reuse
	target_ns=sluice-bench$$ target_ip=10.233.$id.2
	ip netns add "$target_ns" || die "ip netns add $target_ns failed"
	ip link add "$a" type veth peer name "$b" netns "$target_ns" || die "cannot make a veth pair"
	ip addr add "10.233.$id.1/30" dev "$a"
	ip link set "$a" up
	in_target_ns=(ip netns exec "$target_ns")
	"${in_target_ns[@]}" ip addr add "$target_ip/30" dev "$b"
	"${in_target_ns[@]}" ip link set "$b" up
	"${in_target_ns[@]}" ip link set lo up
	echo "$mask" >"/sys/class/net/$a/queues/rx-0/rps_cpus"
	"${in_target_ns[@]}" sh -c "echo $mask >/sys/class/net/$b/queues/rx-0/rps_cpus"
}

# forget PID: drop a stopped process from the cleanup list.
forget() {
	local keep=() p
	for p in "${pids[@]+"${pids[@]}"}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	pids=("${keep[@]+"${keep[@]}"}")
}

# start NAME CMD...: start a process in the background with its output in
# $tmp/NAME.log, remembering its PID in started_pid, under NAME in
# started_pids (for wait_port), and for cleanup.
declare -A started_pids=()
start() {
	local name=$1
	shift
	"$@" >"$tmp/$name.log" 2>&1 &
	started_pid=$!
	started_pids[$name]=$started_pid
	pids+=("$started_pid")
}

# alive PID: whether process PID still runs; a zombie (dead, not yet
# reaped by this shell) does not.
alive() {
	local state
	state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
	[ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# bench_timeout: the wall-clock limit, in seconds, of a sluice-bench client
# run of DURATION seconds (timeout -k 5 "$(bench_timeout)" ...), so that a
# hung run ends by itself: its duration, then 120 s to start and to finish.
bench_timeout() { echo $((${DURATION:-0} + 120)); }

# wait_port PORT [NAME [HOST]]: wait up to 30 s for something to listen on
# HOST:PORT (127.0.0.1 by default). NAME is the process started with `start
# NAME` that should listen there: should it be gone (a bad flag, a port
# taken), the wait ends at once, with its exit status; on failure its log is
# shown.
wait_port() {
	local host=${3:-127.0.0.1} pid="" rc
	if [ -n "${2:-}" ]; then pid=${started_pids[$2]:-}; fi
	for _ in $(seq 300); do
		if (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; then return 0; fi
		if [ -n "$pid" ] && ! alive "$pid"; then
			rc=0
			wait "$pid" 2>/dev/null || rc=$?
			forget "$pid"
			if [ -f "$tmp/$2.log" ]; then tail -5 "$tmp/$2.log" >&2; fi
			die "$2 (PID $pid) exited (status $rc) before anything listened on $host:$1"
		fi
		sleep 0.1
	done
	if [ -n "${2:-}" ] && [ -f "$tmp/$2.log" ]; then tail -5 "$tmp/$2.log" >&2; fi
	die "nothing listens on $host:$1"
}

# port_free PORT: fail when something already listens there.
port_free() {
	if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
		die "127.0.0.1:$1 is in use; set PORT_BASE"
	fi
}

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
	local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120)
	if [ -n "$SUDO" ]; then apt=("$SUDO" "${apt[@]}"); fi
	if ! "${apt[@]}" install -y -q --no-install-recommends "$2" >"$tmp/apt.log" 2>&1; then
		"${apt[@]}" update -q >"$tmp/apt.log" 2>&1
		"${apt[@]}" install -y -q --no-install-recommends "$2" >"$tmp/apt.log" 2>&1 ||
			{ cat "$tmp/apt.log" >&2; die "apt-get install $2 failed"; }
	fi
	# Belt and braces: stop the packaged service should anything have started it.
	case $2 in
	haproxy) $SUDO service haproxy stop >/dev/null 2>&1 || true ;;
	dante-server) $SUDO service danted stop >/dev/null 2>&1 || true ;;
	iperf3) $SUDO service iperf3 stop >/dev/null 2>&1 || true ;;
	esac
	command -v "$1" >/dev/null 2>&1 || die "$2 installed but $1 not found"
}

# go_bin NAME DIR: print the path of Go program NAME. With BIN set (a folder
# that bench/prebuild.sh filled, for a machine without Go) it is $BIN/NAME;
# else DIR (a package folder) is built, statically, into $tmp/NAME.
go_bin() {
	local name=$1 dir=$2
	if [ -n "${BIN:-}" ]; then
		[ -x "$BIN/$name" ] || die "BIN=$BIN has no $name (bench/prebuild.sh $BIN)"
		echo "$BIN/$name"
		return
	fi
	command -v go >/dev/null 2>&1 ||
		die "go is needed to build $name (or BIN=DIR, with DIR from bench/prebuild.sh on a machine with Go)"
	log "building $name"
	# -buildvcs=auto: the commit goes into the binary (build_info) even
	# where GOFLAGS turns that off, and a tree without git still builds.
	(cd "$dir" && CGO_ENABLED=0 go build -buildvcs=auto -o "$tmp/$name" .) || die "$dir did not build"
	echo "$tmp/$name"
}

# build_info FILE: one line on how the Go program FILE was built, read from
# the binary itself (go version -m), not from the Go found here, which need
# not be the one that built it: its Go release and the commit of its source
# ("with local changes" when the tree had uncommitted ones), or that none was
# recorded (-buildvcs=false, or no git). Without go here it reads
# FILE.buildinfo, which bench/prebuild.sh writes beside each binary.
build_info() {
	local info=""
	if command -v go >/dev/null 2>&1; then info=$(go version -m "$1" 2>/dev/null) || info=""; fi
	if [ -z "$info" ] && [ -f "$1.buildinfo" ]; then info=$(cat "$1.buildinfo"); fi
	if [ -z "$info" ]; then
		echo "unknown build (no go here to read it, and no $1.buildinfo)"
		return
	fi
	awk '
		NR == 1 { release = $NF }
		$1 == "build" && $2 ~ /^vcs\.revision=/ { rev = substr($2, 14) }
		$1 == "build" && $2 ~ /^vcs\.time=/ { at = substr($2, 10) }
		$1 == "build" && $2 == "vcs.modified=true" { modified = 1 }
		END {
			if (rev == "") print release ", no commit recorded"
			else print release ", commit " substr(rev, 1, 12) " of " at (modified ? " with local changes" : "")
		}' <<<"$info"
}

# pkg_version PACKAGE COMMAND...: the Debian package's version, or else the
# first line COMMAND prints (a peer copied onto a machine without dpkg).
pkg_version() {
	local pkg=$1
	shift
	dpkg-query -W -f '${Version}' "$pkg" 2>/dev/null || "$@" 2>&1 | head -1 || true
}

# haproxy_maxconn WANT: WANT, or less where the descriptor limit would make
# HAProxy refuse to start (two per connection, and with splice two per pipe,
# one pipe for each four connections: 2.5 per connection and some spare).
haproxy_maxconn() {
	local lim
	lim=$(ulimit -Hn)
	if [ "$lim" != unlimited ] && [ $(((lim - 200) / 3)) -lt "$1" ]; then
		echo $(((lim - 200) / 3))
	else
		echo "$1"
	fi
}

# haproxy_cfg FILE splice|pipe1m|nosplice MAXCONN FRONT:BACK[:N]...: write a
# TCP-mode HAProxy configuration forwarding each 127.0.0.1:FRONT to
# 127.0.0.1:BACK (with N, round robin to 127.0.0.1..N:BACK), with splice in
# both directions or none at all; pipe1m splices through 1 MiB pipes
# (tune.pipesize 1048576, sluice's default) instead of the kernel's 64 KiB.
# Threads are HAProxy's default: one per CPU it may run on (taskset narrows
# them).
haproxy_cfg() {
	local file=$1 mode=$2 maxconn=$3 pair
	shift 3
	{
		printf 'global\n\tmaxconn %s\n' "$maxconn"
		if [ "$mode" = nosplice ]; then printf '\tnosplice\n'; fi
		if [ "$mode" = pipe1m ]; then printf '\ttune.pipesize 1048576\n'; fi
		printf 'defaults\n\tmode tcp\n\ttimeout connect 5s\n\ttimeout client 1m\n\ttimeout server 1m\n'
		if [ "$mode" != nosplice ]; then printf '\toption splice-request\n\toption splice-response\n'; fi
		local front back n i
		for pair in "$@"; do
			IFS=: read -r front back n <<<"$pair"
			printf 'listen f%s\n\tbind 127.0.0.1:%s\n\tbalance roundrobin\n' "$front" "$front"
			for i in $(seq "${n:-1}"); do
				printf '\tserver s%d 127.0.0.%d:%s\n' "$i" "$i" "$back"
			done
		done
	} >"$file"
}

# danted_cfg FILE LOG PORT: a Dante configuration that serves CONNECT without
# authentication on 127.0.0.1:PORT to loopback targets, logging to LOG.
danted_cfg() {
	cat >"$1" <<-EOF
		logoutput: $2
		internal: 127.0.0.1 port = $3
		external: 127.0.0.1
		clientmethod: none
		socksmethod: none
		user.privileged: root
		user.unprivileged: nobody
		client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
		socks pass { from: 127.0.0.0/8 to: 127.0.0.0/8 command: connect }
	EOF
}

# port_range: the ephemeral port range, "LOW-HIGH". Loopback conn/s from one
# source address to one target tops out at about that many per second, or
# less: every closed connection holds its port in TIME_WAIT, which
# net.ipv4.tcp_tw_reuse hands out again only after 1 s, and the search for a
# free port grows with the range. Measured: 999 conn/s with 1,000 ports on 2
# cores; 16,259 with 32768-60999 and 32,327 with 1024-65535 on 16 cores.
# More source and target addresses (spread) add port sets.
port_range() {
	tr '\t' - </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo unknown
}

# await_time_wait: wait, up to 70 s, until fewer than 1,000 TCP sockets are
# in TIME_WAIT. A conn/s run leaves one per connection for 60 s on the
# ports of 127.0.0.1: Linux's connect takes the even ports first and may
# reuse one after 1 s, but a peer that binds a port before each connect
# (Dante) or connects from odd ports (sluice --source-ports all) then meets
# them: Dante served 3,975 conn/s without an error after a quiet minute and
# 3,448 with 754 errors right after HAProxy's run.
await_time_wait() {
	local n
	for _ in $(seq 70); do
		n=$(ss -Htan state time-wait | wc -l)
		if [ "$n" -lt 1000 ]; then return 0; fi
		sleep 1
	done
	log "still $n sockets in TIME_WAIT after 70 s"
}

# jq_median: the median of an array of numbers (null for none), for the
# scripts' jq programs to start with.
# shellcheck disable=SC2034 # read by the sourcing scripts
jq_median='def median: sort | if length == 0 then null
	elif length % 2 == 1 then .[length / 2 | floor]
	else (.[length / 2 - 1] + .[length / 2]) / 2 end;'

# spread_sources N: set the array spread_from to rr's --source for N
# loopback sources; empty for N=1, which leaves the source to the kernel.
# shellcheck disable=SC2034 # spread_from is read by the sourcing script
spread_sources() {
	spread_from=()
	if [ "$1" -gt 1 ]; then spread_from=(--source "127.0.0.1-127.0.0.$1"); fi
}

# loopbacks N PORT: 127.0.0.1:PORT,...,127.0.0.N:PORT.
loopbacks() {
	local i out=""
	for i in $(seq "$1"); do out+=${out:+,}127.0.0.$i:$2; done
	echo "$out"
}
