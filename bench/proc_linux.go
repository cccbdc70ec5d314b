package bench

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// SampleProc reads the resource use of process pid and its descendants
// from /proc.
func SampleProc(pid int) (ProcSample, error) {
	tree, err := descendants(pid)
	if err != nil {
		return ProcSample{}, err
	}
	var s ProcSample
	for _, p := range tree {
		dir := "/proc/" + strconv.Itoa(p)
		stat, err := os.ReadFile(dir + "/stat")
		if err != nil {
			if p == pid {
				return ProcSample{}, fmt.Errorf("bench: proc: %w", err)
			}
			continue // a child that just exited
		}
		_, cpu, err := parseStat(stat)
		if err != nil {
			return ProcSample{}, err
		}
		status, err := os.ReadFile(dir + "/status")
		if err != nil {
			continue
		}
		rss, err := parseRSS(status)
		if err != nil {
			return ProcSample{}, err
		}
		fds, err := os.ReadDir(dir + "/fd")
		if err != nil && p == pid {
			return ProcSample{}, fmt.Errorf("bench: proc: %w", err)
		}
		s.CPU += cpu
		s.RSSBytes += rss
		s.FDs += len(fds)
		s.Procs++
	}
	return s, nil
}

// machineCPU returns the busy time of every CPU of the machine together.
func machineCPU() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	t, err := parseMachineStat(b)
	return t, err == nil
}

// descendants returns pid followed by every process below it.
func descendants(pid int) ([]int, error) {
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
		return nil, fmt.Errorf("bench: proc: %w", err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("bench: proc: %w", err)
	}
	children := make(map[int][]int)
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if ppid, _, err := parseStat(stat); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	tree := []int{pid}
	// Invariant: tree[:i] have had their children appended.
	for i := 0; i < len(tree); i++ {
		tree = append(tree, children[tree[i]]...)
	}
	return tree, nil
}
