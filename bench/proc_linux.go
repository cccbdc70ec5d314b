package bench

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// SampleProc reads the resource use of process pid and its descendants
// from /proc. Only what the CPU figures need must be readable: pid's
// stat. Descriptors are counted where /proc/PID/fd can be read, which for
// another user's process takes privilege (ptrace access): where it cannot,
// FDs is nil, unknown, and the sample stands.
func SampleProc(pid int) (ProcSample, error) {
	return sampleProcAt("/proc", pid)
}

// sampleProcAt is SampleProc on the proc file system at root.
func sampleProcAt(root string, pid int) (ProcSample, error) {
	tree, err := descendants(root, pid)
	if err != nil {
		return ProcSample{}, err
	}
	var s ProcSample
	fds, fdsKnown := 0, true
	for _, p := range tree {
		dir := filepath.Join(root, strconv.Itoa(p))
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
		n, err := countFDs(dir + "/fd")
		switch {
		case err == nil:
			fds += n
		case p != pid && errors.Is(err, fs.ErrNotExist):
			// A child that exited since its stat: its descriptors are closed.
		default:
			fdsKnown = false // unreadable: another user's process
		}
		s.CPU += cpu
		s.RSSBytes += rss
		s.Procs++
	}
	if fdsKnown {
		s.FDs = &fds
	}
	return s, nil
}

// countFDs returns the number of entries in a /proc/PID/fd directory.
func countFDs(dir string) (int, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	return len(names), err
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

// descendants returns pid followed by every process below it, from the
// proc file system at root.
func descendants(root string, pid int) ([]int, error) {
	if _, err := os.Stat(filepath.Join(root, strconv.Itoa(pid))); err != nil {
		return nil, fmt.Errorf("bench: proc: %w", err)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("bench: proc: %w", err)
	}
	children := make(map[int][]int)
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(root, e.Name(), "stat"))
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
