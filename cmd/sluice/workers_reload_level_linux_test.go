package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWorkersFailedReloadKeepsParentLevel: a reload that a worker refuses
// (here: its users file emptied) keeps the worker's whole configuration,
// log-level included ("a file that does not load keeps the running
// configuration"), and the parent of --workers keeps its level too: it
// applies the file's log-level only when the checks of a worker's reload
// (users file, rules, open relay) pass. It used to parse only the flags and
// the TOML file, never the users file, and apply the new level to its own
// lines, so that the two halves of one process tree logged at different
// levels: the workers at info, the parent at warn, which dropped the
// parent's info lines ("stopping workers", "worker started" of a restart)
// while the workers still wrote theirs.
func TestWorkersFailedReloadKeepsParentLevel(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice:pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "sluice.toml")
	write := func(level string) {
		if err := os.WriteFile(conf, []byte(fmt.Sprintf("users = %q\nlog-level = %q\n", users, level)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("info")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // safety net
	defer cancel()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startWorkers(t, ctx, "--listen", addr, "--workers", "1", "--config", conf, "--access-log=false")
	defer p.cmd.Process.Kill()
	p.waitLines(t, map[string]int{"worker started": 1, "worker serving": 1})

	write("warn")
	if err := os.WriteFile(users, nil, 0o600); err != nil { // the reload fails: no users in file
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLines(t, map[string]int{"reload failed": 1})
	p.cmd.Process.Signal(syscall.SIGTERM)
	var lines []string
	for l := range p.lines {
		lines = append(lines, l)
	}
	all := strings.Join(lines, "\n")
	workerInfo := strings.Contains(all, `msg="shutting down" worker=0`)
	parentInfo := strings.Contains(all, `msg="stopping workers"`)
	if workerInfo != parentInfo {
		t.Errorf("after a failed reload the worker logs at info (%v) but the parent does (%v): the parent applied log-level = \"warn\" from a reload its worker refused\n%s", workerInfo, parentInfo, all)
	}
}
