package main

import (
	"bytes"
	"io"
	"sync"
	"time"
)

// Bounds of the process log's writer (logWriter).
const (
	logBufferMax = 1 << 20         // bytes of lines waiting for stderr; past it, lines are dropped
	logFlushWait = 2 * time.Second // how long the exit waits for stderr to take what is buffered
)

// logWriter stands between the process log and stderr, so that nothing
// sluice does waits on a stderr nobody drains (a stopped pager, a stuck
// log collector): a line is appended to a buffer, and a goroutine of its own
// writes the buffer out, several lines per write (whole lines, up to
// atomicWrite bytes) when they come faster than stderr takes them. When
// more than max bytes wait, lines are dropped and counted, and the next line
// kept is preceded by notice(count). Lines are whole: slog handlers make one
// Write per record.
//
// Without it, a session blocked in its access log line never ended, so the
// shutdown waited for it forever, and the "shutting down" line itself
// blocked the signal's handling.
type logWriter struct {
	w      io.Writer
	max    int
	notice func(dropped int64) []byte // the line that reports dropped lines; nil: none

	mu      sync.Mutex
	buf     []byte // lines not yet handed to w
	spare   []byte // the buffer w wrote last, reused
	dropped int64  // since the last notice
	lost    int64  // since the start (droppedLines)
	closed  bool
	wake    chan struct{} // capacity 1; closed by close
	done    chan struct{} // closed when the writer goroutine returns
}

func newLogWriter(w io.Writer, max int, notice func(int64) []byte) *logWriter {
	lw := &logWriter{w: w, max: max, notice: notice, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go lw.run()
	return lw
}

// Write queues p and never blocks on w. It always reports success: a
// dropped line is counted, and there is nowhere else to report it.
func (lw *logWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.closed || len(lw.buf)+len(p) > lw.max {
		lw.dropped++
		lw.lost++
		return len(p), nil
	}
	if lw.dropped > 0 && lw.notice != nil {
		lw.buf = append(lw.buf, lw.notice(lw.dropped)...)
		lw.dropped = 0
	}
	lw.buf = append(lw.buf, p...)
	select {
	case lw.wake <- struct{}{}:
	default: // the writer is already due to look
	}
	return len(p), nil
}

// droppedLines is how many lines were dropped since the start, or lost to
// a write that failed (a stderr whose reader is gone): the
// sluice_log_lines_dropped_total metric, read at each scrape. A nil lw (a
// logger that is not a logWriter's) dropped none.
func (lw *logWriter) droppedLines() int64 {
	if lw == nil {
		return 0
	}
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.lost
}

// run writes out what Write queued until close, and what is left then.
func (lw *logWriter) run() {
	defer close(lw.done)
	for range lw.wake {
		lw.flush()
	}
	lw.flush()
}

// flush writes the buffer until it is empty.
func (lw *logWriter) flush() {
	for {
		lw.mu.Lock()
		out := lw.buf
		if len(out) == 0 {
			lw.mu.Unlock()
			return
		}
		lw.buf = lw.spare[:0]
		lw.spare = nil
		lw.mu.Unlock()
		n, err := lw.writeLines(out) // a failing stderr has nowhere to report to
		lw.mu.Lock()
		if err != nil && n < len(out) {
			lw.lost += int64(bytes.Count(out[n:], []byte{'\n'})) // for the metric
		}
		if cap(out) <= 64<<10 { // keep a buffer that a burst grew large for the next burst only
			lw.spare = out[:0]
		}
		lw.mu.Unlock()
	}
}

// atomicWrite is the most a write to a pipe moves in one piece (Linux's
// PIPE_BUF): a longer one is cut where the pipe fills, and writes of other
// processes on the same pipe (the workers of --workers and their parent
// share one stderr) may land in the cut.
const atomicWrite = 4096

// writeLines writes out to w in writes of whole lines of at most
// atomicWrite bytes each (a longer line alone), so that no line of another
// process sharing stderr lands inside one of these. It returns the bytes
// written and the first error.
func (lw *logWriter) writeLines(out []byte) (int, error) {
	done := 0
	for done < len(out) {
		chunk := out[done:]
		if len(chunk) > atomicWrite {
			if i := bytes.LastIndexByte(chunk[:atomicWrite], '\n'); i >= 0 {
				chunk = chunk[:i+1]
			} else if i := bytes.IndexByte(chunk, '\n'); i >= 0 {
				chunk = chunk[:i+1]
			}
		}
		n, err := lw.w.Write(chunk)
		done += n
		if err == nil && n < len(chunk) {
			err = io.ErrShortWrite
		}
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// close stops taking lines and waits up to wait for those queued to be
// written; it reports whether they were. Lines written after close are
// dropped.
func (lw *logWriter) close(wait time.Duration) bool {
	lw.mu.Lock()
	if !lw.closed {
		lw.closed = true
		close(lw.wake)
	}
	lw.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-lw.done:
		return true
	case <-t.C:
		return false
	}
}
