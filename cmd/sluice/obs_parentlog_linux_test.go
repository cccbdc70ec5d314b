package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// refusingWriter is a stderr that refuses every write while refusing is
// set (as a non-blocking pipe that is full, or a terminal hung up, does),
// counting the lines it refused, and takes them afterwards. serving is
// closed once it refused a line with "worker serving".
type refusingWriter struct {
	mu       sync.Mutex
	refusing bool
	refused  int
	out      bytes.Buffer
	serving  chan struct{}
}

func (w *refusingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.refusing {
		w.refused += bytes.Count(p, []byte{'\n'})
		if bytes.Contains(p, []byte("worker serving")) && w.serving != nil {
			close(w.serving)
			w.serving = nil
		}
		return 0, syscall.EAGAIN
	}
	return w.out.Write(p)
}

// take ends the refusal and returns how many lines were refused.
func (w *refusingWriter) take() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.refusing = false
	return w.refused
}

func (w *refusingWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.String()
}

// TestObsParentLogLost: the lines that the parent of --workers lost to a
// stderr that refused them (its "worker started" and "worker serving") are
// told in its last line, with their count, once stderr takes lines again.
// The parent serves no metrics, and its log writer's notice tells only of
// lines dropped ahead of one it kept: they were counted nowhere.
func TestObsParentLogLost(t *testing.T) {
	// Not parallel: the workers this process starts run as sluice.
	t.Setenv("SLUICE_RUN_MAIN", "1")
	args := []string{"--listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--workers", "1", "--log-level", "error", "--access-log=false"}
	cfg, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	serving := make(chan struct{}) // w.serving, which Write clears under w.mu
	w := &refusingWriter{refusing: true, serving: serving}
	lw := newLogWriter(w, logBufferMax, nil)
	cfg.logWriter = lw
	level := new(slog.LevelVar) // the parent's lines at info; its worker logs errors only
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exited := make(chan int, 1)
	go func() { exited <- runWorkers(ctx, cfg, args, newLogger(cfg, level, lw), level, nil, nil, nil) }()
	select {
	case <-serving:
	case <-time.After(30 * time.Second): // safety net
		t.Fatal("the parent logged no \"worker serving\" line within 30 s")
	}
	refused := w.take()
	cancel() // as SIGTERM: the parent stops its worker and returns
	select {
	case status := <-exited:
		if status != 0 {
			t.Errorf("runWorkers = %d, want 0", status)
		}
	case <-time.After(30 * time.Second): // safety net
		t.Fatal("the parent did not stop within 30 s")
	}
	if !lw.close(10 * time.Second) {
		t.Fatal("the parent's lines were not written within 10 s")
	}
	var tally string
	for _, l := range strings.Split(w.String(), "\n") {
		if strings.Contains(l, "log lines lost since the start") {
			tally = l
		}
	}
	if tally == "" {
		t.Fatalf("%d lines refused, and no line tells of them; the parent wrote:\n%s", refused, w.String())
	}
	if n, err := strconv.Atoi(fieldOf(t, "text", tally, "count")); err != nil || n != refused || n < 2 {
		t.Errorf("the parent's last line counts %v (%v) lost lines, want %d (\"worker started\" and \"worker serving\" at least): %s", n, err, refused, tally)
	}
	if !strings.HasSuffix(strings.TrimSpace(w.String()), tally) {
		t.Errorf("the count is not the parent's last line:\n%s", w.String())
	}
}
