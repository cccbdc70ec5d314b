package bench

import (
	"bytes"
	"errors"
	"strconv"
	"time"
)

// ProcSample is one reading of a process's resource use, summed over the
// process, its threads and its descendants (relays such as Dante relay in
// child processes).
type ProcSample struct {
	// CPU is user plus system time, including children already reaped.
	CPU time.Duration `json:"cpu_ns"`
	// RSSBytes is the sum of VmRSS; pages shared between processes count once per process.
	RSSBytes int64 `json:"rss_bytes"`
	// FDs is the number of open file descriptors; nil (JSON null) when
	// unknown: /proc/PID/fd of another user's process is unreadable without
	// privilege, where its stat and status, and so CPU and RSS, are not.
	FDs *int `json:"fds"`
	// Procs is the number of processes summed.
	Procs int `json:"procs"`
}

// clockTicks is USER_HZ, the unit of the times in /proc/PID/stat; it is 100
// on every Linux architecture Go supports.
const clockTicks = 100

var errProcFormat = errors.New("bench: proc: unexpected format")

// parseMachineStat returns the time every CPU of the machine spent busy
// (user, nice, system, irq and softirq; guest time is inside user) from the
// contents of /proc/stat: idle, iowait and steal (time the hypervisor gave
// to others) are not work done here.
func parseMachineStat(b []byte) (time.Duration, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 8 || string(f[0]) != "cpu" {
		return 0, errProcFormat
	}
	var ticks uint64
	for i, field := range f[1:8] {
		v, err := strconv.ParseUint(string(field), 10, 64)
		if err != nil {
			return 0, errProcFormat
		}
		if i != 3 && i != 4 { // idle, iowait
			ticks += v
		}
	}
	return ticksTime(ticks), nil
}

// ticksTime converts clock ticks to a duration. It multiplies by the length
// of a tick, a whole number of nanoseconds, rather than by a second before
// dividing: a whole machine's busy time since boot passes 2^63 ns / 1 s
// ticks (1,070 days of CPU) within weeks on a large machine.
func ticksTime(ticks uint64) time.Duration {
	return time.Duration(ticks) * (time.Second / clockTicks)
}

// parseStat returns the parent PID and the CPU time (utime + stime + cutime +
// cstime) from the contents of /proc/PID/stat.
func parseStat(b []byte) (ppid int, cpu time.Duration, err error) {
	// The command name may hold spaces and parentheses: skip to the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errProcFormat
	}
	// Fields from 3 (state) on; utime is field 14, so index 11 here.
	f := bytes.Fields(b[i+1:])
	if len(f) < 15 {
		return 0, 0, errProcFormat
	}
	ppid, err = strconv.Atoi(string(f[1]))
	if err != nil {
		return 0, 0, errProcFormat
	}
	var ticks uint64
	for _, field := range f[11:15] {
		v, err := strconv.ParseUint(string(field), 10, 64)
		if err != nil {
			return 0, 0, errProcFormat
		}
		ticks += v
	}
	return ppid, ticksTime(ticks), nil
}

// parseRSS returns VmRSS in bytes from the contents of /proc/PID/status;
// kernel threads and zombies have none, which reads as 0.
func parseRSS(b []byte) (int64, error) {
	const key = "\nVmRSS:"
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, nil
	}
	rest := b[i+len(key):]
	if j := bytes.IndexByte(rest, '\n'); j >= 0 {
		rest = rest[:j]
	}
	f := bytes.Fields(rest)
	if len(f) != 2 || string(f[1]) != "kB" {
		return 0, errProcFormat
	}
	kb, err := strconv.ParseInt(string(f[0]), 10, 64)
	if err != nil {
		return 0, errProcFormat
	}
	return kb << 10, nil
}
