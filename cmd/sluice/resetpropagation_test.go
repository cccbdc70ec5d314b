//go:build unix

package main

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestResetReachesFarPeer: a peer that resets mid-stream, after a few bytes
// and no FIN, ends its session, and the far peer reads those bytes, then a
// reset, as it would from that peer directly. It read them, then an EOF:
// the relay closed its socket toward the far peer as after a complete
// stream, and a far peer that takes EOF for the end of an upload or a
// download (no length known in advance) took a stream cut short for a whole
// one. Both ways, on each data path.
func TestResetReachesFarPeer(t *testing.T) {
	t.Parallel()
	for _, mode := range [][]string{nil, {"--loops", "-1"}, {"--no-splice"}, {"--net-sockets"}} {
		addr, _ := startSluice(t, mode...)
		for _, resetter := range []string{"client", "target"} {
			name := strings.Join(mode, " ")
			if name == "" {
				name = "default"
			}
			t.Run(name+"/"+resetter+" resets", func(t *testing.T) {
				t.Parallel()
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				accepted := make(chan *net.TCPConn, 1)
				go func() {
					up, err := l.Accept()
					if err != nil {
						accepted <- nil
						return
					}
					accepted <- up.(*net.TCPConn)
				}()
				c := connectRaw(t, addr, l.Addr().(*net.TCPAddr))
				defer c.Close()
				up := <-accepted
				if up == nil {
					t.Fatal("the target accepted nothing")
				}
				defer up.Close()
				loud, far := c, up
				if resetter == "target" {
					loud, far = up, c
				}
				far.SetDeadline(time.Now().Add(10 * time.Second)) // a safety net
				mustWrite(t, loud, []byte("partial"))
				loud.SetLinger(0)
				loud.Close() // a reset, no FIN
				got, err := io.ReadAll(far)
				if string(got) != "partial" || !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("far peer read %q, then %v; want \"partial\", then ECONNRESET", got, err)
				}
			})
		}
	}
}
