package main

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordWriter keeps each Write's bytes apart; its first Write waits for
// release, so that the lines after it queue up into one batch.
type recordWriter struct {
	started chan struct{}
	release chan struct{}
	mu      sync.Mutex
	writes  [][]byte
}

func (w *recordWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	first := len(w.writes) == 0
	w.writes = append(w.writes, bytes.Clone(p))
	w.mu.Unlock()
	if first {
		close(w.started)
		<-w.release
	}
	return len(p), nil
}

// TestLogWritesWholeLines: lines that queue up while stderr is
// slow go out in writes of whole lines of at most PIPE_BUF bytes (a longer
// line alone). The workers of --workers and their parent share one stderr;
// a write past PIPE_BUF to a full pipe is cut where the pipe fills, and
// another process's write lands in the cut, in the middle of a line (the
// writer used to hand its whole batch, up to 1 MiB, to one write).
func TestLogWritesWholeLines(t *testing.T) {
	t.Parallel()
	w := &recordWriter{started: make(chan struct{}), release: make(chan struct{})}
	lw := newLogWriter(w, 1<<20, nil)
	var want bytes.Buffer
	put := func(line string) {
		lw.Write([]byte(line))
		want.WriteString(line)
	}
	put("first\n")
	select {
	case <-w.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the first line never reached the writer")
	}
	for i := range 300 {
		put(fmt.Sprintf("%-99d\n", i))
		if i == 150 {
			put(strings.Repeat("x", 2*atomicWrite) + "\n") // longer than PIPE_BUF: alone
		}
	}
	close(w.release)
	if !lw.close(10 * time.Second) {
		t.Fatal("close: lines still queued")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if got := bytes.Join(w.writes, nil); !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("got %d bytes, want %d: lines lost or out of order", len(got), want.Len())
	}
	for i, p := range w.writes {
		if !bytes.HasSuffix(p, []byte("\n")) || (len(p) > atomicWrite && bytes.Count(p, []byte("\n")) > 1) {
			t.Errorf("write %d: %d bytes, %d lines, ends %q: want whole lines of at most %d bytes together",
				i, len(p), bytes.Count(p, []byte("\n")), p[max(0, len(p)-8):], atomicWrite)
		}
	}
	if n := len(w.writes); n > 1+want.Len()/(atomicWrite/2) {
		t.Errorf("%d writes for %d bytes: want the queued lines batched, several to a write", n, want.Len())
	}
}
