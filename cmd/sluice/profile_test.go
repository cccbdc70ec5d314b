package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestProfileAndDebug runs the command with --profile cpu and --debug-addr:
// /debug/pprof/ answers while it runs, and the CPU profile is written when
// SIGTERM stops it (sluice, not pkg/profile, owns the signal).
func TestProfileAndDebug(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := spawnSluice(t, nil, "--listeners", "1", "--profile", "cpu", "--profile-dir", dir, "--debug-addr", "127.0.0.1:0")
	line, ok := p.waitLine("debug server listening", 30*time.Second)
	if !ok {
		t.Fatalf("no debug server line; log:\n%s", p.log())
	}
	debugAddr := lineAddr(line)
	resp, err := http.Get("http://" + debugAddr + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "goroutine") {
		t.Errorf("GET /debug/pprof/: %d, %.200q", resp.StatusCode, body)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(); err != nil {
		t.Fatalf("after SIGTERM: %v, want exit 0", err)
	}
	fi, err := os.Stat(filepath.Join(dir, "cpu.pprof"))
	if err != nil || fi.Size() == 0 {
		t.Fatalf("cpu.pprof after SIGTERM: %v, want a non-empty profile", err)
	}
}
