package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestPipeNoAbortAfterReturn: an idle check, or the context's AfterFunc,
// that is about to abort a goroutine-path session when the session ends
// on its own must not abort it after Pipe returned: the conns are the
// caller's again by then, and a past deadline set on them would fail
// whatever the caller does with them next. The hook holds the abort at its
// start until Pipe has returned.
// Not parallel: it sets a package hook.
func TestPipeNoAbortAfterReturn(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cause int32
	}{
		{"idle", causeIdle},
		{"context", causeContext},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{Loops: -1}
			if tc.cause == causeIdle {
				o.IdleTimeout = time.Millisecond // the first check finds no byte moved
			}
			r := New(o)
			defer r.Close()
			entered, release, after := make(chan struct{}), make(chan struct{}), make(chan struct{})
			testHookAbortOutside = func(cause int32) func() {
				if cause != tc.cause {
					return func() {}
				}
				close(entered) // once: the session aborts once at most
				<-release
				return func() { close(after) }
			}
			defer func() { testHookAbortOutside = nil }()

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			g := newRig(t).start(ctx, r)
			if tc.cause == causeContext {
				cancel()
			}
			<-entered
			g.client.CloseWrite()
			g.upstream.CloseWrite()
			if res := g.wait(t); res.err != nil {
				t.Fatalf("Pipe: %v; want nil, both sides ended first", res.err)
			}
			close(release)
			<-after
			for _, c := range []*net.TCPConn{g.relayA, g.relayB} {
				if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
					t.Errorf("Read of a conn after Pipe returned and the late abort ran: %v; want EOF (no deadline set)", err)
				}
			}
		})
	}
}
