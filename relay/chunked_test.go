package relay

import (
	"errors"
	"io"
	"testing"
)

// pacedWriter takes at most max bytes per Write (0: all of them) and fails
// once it has taken failAt bytes (0: never); it records each call's size,
// the bytes it had taken and the bytes reported as moved when the call began.
type pacedWriter struct {
	max, failAt, took int
	calls             []int
	movedAtCall       []int // bytes reported as moved when each call began
	tookAtCall        []int // bytes taken before each call
	moved             *int
}

func (w *pacedWriter) Write(b []byte) (int, error) {
	w.calls = append(w.calls, len(b))
	w.movedAtCall = append(w.movedAtCall, *w.moved)
	w.tookAtCall = append(w.tookAtCall, w.took)
	n := len(b)
	if w.max > 0 {
		n = min(n, w.max)
	}
	if w.failAt > 0 && w.took+n >= w.failAt {
		n = w.failAt - w.took
		w.took += n
		return n, errors.New("peer gone")
	}
	w.took += n
	return n, nil
}

// TestWriteChunked: the portable copy path hands a conn at most writeChunk
// bytes per Write and counts each Write's bytes before the next begins, so
// the idle watchdog sees a slow destination take a large buffer piece by
// piece; short writes and errors count what was taken.
func TestWriteChunked(t *testing.T) {
	for _, tc := range []struct {
		name         string
		n, max, fail int
		wantCalls    []int
		wantErr      bool
	}{
		{"small", 100, 0, 0, []int{100}, false},
		{"exact chunk", writeChunk, 0, 0, []int{writeChunk}, false},
		{"64 KiB", 64 << 10, 0, 0, []int{writeChunk, writeChunk, writeChunk, writeChunk}, false},
		{"uneven", writeChunk + 1, 0, 0, []int{writeChunk, 1}, false},
		{"short writes", 20 << 10, 6 << 10, 0, []int{writeChunk, 14 << 10, 8 << 10, 2 << 10}, false},
		{"fails midway", 64 << 10, 0, 20 << 10, []int{writeChunk, writeChunk}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			moved := 0
			w := &pacedWriter{max: tc.max, failAt: tc.fail, moved: &moved}
			err := writeChunked(w, make([]byte, tc.n), func(n int) { moved += n })
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if len(w.calls) != len(tc.wantCalls) {
				t.Fatalf("Write calls %v, want %v", w.calls, tc.wantCalls)
			}
			for i, c := range w.calls {
				if c != tc.wantCalls[i] {
					t.Fatalf("Write calls %v, want %v", w.calls, tc.wantCalls)
				}
				if w.movedAtCall[i] != w.tookAtCall[i] {
					t.Fatalf("call %d began with %d bytes counted, %d taken (each Write's bytes are counted before the next)", i, w.movedAtCall[i], w.tookAtCall[i])
				}
			}
			if moved != w.took {
				t.Fatalf("moved %d, writer took %d", moved, w.took)
			}
		})
	}
}

// zeroWriter takes nothing and reports no error.
type zeroWriter struct{}

func (zeroWriter) Write([]byte) (int, error) { return 0, nil }

func TestWriteChunkedNoProgress(t *testing.T) {
	if err := writeChunked(zeroWriter{}, []byte("x"), func(int) {}); !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("err = %v, want io.ErrShortWrite", err)
	}
}
