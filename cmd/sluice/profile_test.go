package main

import (
	"bufio"
	"context"
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := sluiceCmd(ctx, "--listen", "127.0.0.1:0", "--listeners", "1", "--profile", "cpu", "--profile-dir", dir,
		"--debug-addr", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	var debugAddr string
	var lines []string
	for debugAddr == "" && sc.Scan() {
		lines = append(lines, sc.Text())
		if strings.Contains(sc.Text(), "debug server listening") {
			for _, f := range strings.Fields(sc.Text()) {
				if a, ok := strings.CutPrefix(f, "addr="); ok {
					debugAddr = a
				}
			}
		}
	}
	go io.Copy(io.Discard, stderr)
	if debugAddr == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("no debug server line; stderr:\n%s", strings.Join(lines, "\n"))
	}
	resp, err := http.Get("http://" + debugAddr + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "goroutine") {
		t.Errorf("GET /debug/pprof/: %d, %.200q", resp.StatusCode, body)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v, want exit 0", err)
	}
	fi, err := os.Stat(filepath.Join(dir, "cpu.pprof"))
	if err != nil || fi.Size() == 0 {
		t.Fatalf("cpu.pprof after SIGTERM: %v (size %d), want a non-empty profile", err, sizeOf(fi))
	}
}

func sizeOf(fi os.FileInfo) int64 {
	if fi == nil {
		return 0
	}
	return fi.Size()
}
