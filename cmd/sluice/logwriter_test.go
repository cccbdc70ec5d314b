package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestLogWriterOrder checks that every line comes out, in order, once the
// writer is closed.
func TestLogWriterOrder(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	lw := newLogWriter(&out, 1<<20, func(n int64) []byte { return fmt.Appendf(nil, "dropped %d\n", n) })
	var want bytes.Buffer
	for i := range 5000 {
		line := fmt.Sprintf("line %d\n", i)
		lw.Write([]byte(line))
		want.WriteString(line)
	}
	if !lw.close(10 * time.Second) {
		t.Fatal("close: lines still queued after 10 s with a writer that never blocks")
	}
	if out.String() != want.String() {
		t.Fatalf("got %d bytes, want %d; lines lost or out of order", len(out.String()), want.Len())
	}
	if n, _ := lw.Write([]byte("late\n")); n != 5 || strings.Contains(out.String(), "late") {
		t.Errorf("a line after close: Write reported %d and the line reached the output", n)
	}
}

// TestLogWriterStuck checks that Write never waits on a stuck stderr, that
// lines past the buffer's bound are dropped and counted in one notice ahead
// of the next line kept, and that close gives up on a stuck stderr.
func TestLogWriterStuck(t *testing.T) {
	t.Parallel()
	w := &stuckWriter{started: make(chan struct{}, 16), release: make(chan struct{})}
	w.armed.Store(true)
	const max, lineLen, kept, dropped = 1000, 100, 10, 25
	lw := newLogWriter(w, max, func(n int64) []byte { return fmt.Appendf(nil, "dropped %d\n", n) })
	line := func(i int) []byte { return fmt.Appendf(nil, "%-*d\n", lineLen-1, i) }

	lw.Write(line(0)) // the writer takes it and blocks in w.Write
	select {
	case <-w.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the first line never reached the writer")
	}
	wrote := make(chan struct{})
	go func() {
		for i := 1; i <= kept+dropped; i++ {
			lw.Write(line(i))
		}
		close(wrote)
	}()
	select {
	case <-wrote:
	case <-time.After(10 * time.Second):
		t.Fatal("Write blocked on a stuck stderr")
	}

	w.armed.Store(false)
	close(w.release)
	// The next line is kept once the queued ones are out.
	if !waitFor(10*time.Second, func() bool { return bytes.HasSuffix([]byte(w.out.String()), line(kept)) }) {
		t.Fatalf("the queued lines were not written after stderr was released:\n%s", w.out.String())
	}
	lw.Write([]byte("after\n"))
	if !lw.close(10 * time.Second) {
		t.Fatal("close: lines still queued 10 s after stderr was released")
	}
	var want bytes.Buffer
	for i := 0; i <= kept; i++ {
		want.Write(line(i))
	}
	fmt.Fprintf(&want, "dropped %d\nafter\n", dropped)
	if got := w.out.String(); got != want.String() {
		t.Fatalf("output:\n%s\nwant:\n%s", got, want.String())
	}
	if n := lw.droppedLines(); n != dropped {
		t.Errorf("droppedLines() = %d, want %d", n, dropped)
	}

	// close gives up on a stderr that stays stuck.
	w2 := &stuckWriter{started: make(chan struct{}, 1), release: make(chan struct{})}
	w2.armed.Store(true)
	defer close(w2.release)
	lw2 := newLogWriter(w2, max, nil)
	lw2.Write(line(0))
	<-w2.started
	if lw2.close(50 * time.Millisecond) {
		t.Error("close reported the lines written while stderr was stuck")
	}
}
