//go:build linux

package relay

import (
	"context"
	"errors"
	"io"
	"syscall"
	"testing"
	"time"
)

// TestPipeEndDroppingBytesResets: a session that the context's end or the
// idle timeout ends while it holds bytes for a peer that reads nothing
// drops them; that peer, once the caller closed, must read a reset, not a
// FIN behind a stream the relay cut short (it read an EOF). A session that
// ends so holding nothing (an idle keep-alive connection) still closes with
// a FIN. On every path.
func TestPipeEndDroppingBytesResets(t *testing.T) {
	t.Parallel()
	for _, mode := range stallModes {
		for _, end := range []string{"context", "idle timeout"} {
			for _, held := range []bool{true, false} {
				name := mode.name + "/" + end + "/holding nothing"
				if held {
					name = mode.name + "/" + end + "/holding bytes"
				}
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					mode := mode // its copy: the idle timeout goes in its Options
					if end == "idle timeout" {
						mode.opts.IdleTimeout = 200 * time.Millisecond
					}
					r := mode.relay(t)
					ctx, cancel := context.WithCancel(context.Background())
					defer cancel()
					g, silent, toSilent, loud, fromLoud, _ := stalledRig(t, "client")
					g.start(ctx, r)
					if held {
						bound := mode.bound(t, silent, toSilent)
						go loud.Write(make([]byte, 64<<20)) // fails once the test closes
						waitQueued(t, fromLoud, bound+1)    // the relay holds all it can
					}
					if end == "context" {
						cancel()
					}
					res := g.wait(t)
					if end == "context" && !errors.Is(res.err, context.Canceled) || end == "idle timeout" && !errors.Is(res.err, ErrIdleTimeout) {
						t.Fatalf("Pipe: %v; want the %s's", res.err, end)
					}
					g.relayA.Close() // the caller's close
					g.relayB.Close()
					_, err := io.Copy(io.Discard, silent)
					if held && !errors.Is(err, syscall.ECONNRESET) {
						t.Fatalf("upstream read to %v after the relay dropped bytes for it; want ECONNRESET", err)
					}
					if !held && err != nil {
						t.Fatalf("upstream read to %v after a session that held nothing; want EOF", err)
					}
				})
			}
		}
	}
}
