package main

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"sluice/handshake"
)

// gatedWriter holds every access line ("msg=session") until gate closes;
// other lines pass.
type gatedWriter struct {
	gate chan struct{}
	buf  syncBuffer
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), "msg=session") {
		<-w.gate
	}
	return w.buf.Write(p)
}

// TestLimitsFreedBeforeFailureReply: a session refused with a reply gives
// its place under --max-sessions-per-ip back before the reply goes out, so
// that a client that connects again as soon as it reads it is served. The
// access line is held here (a logger handed to the server may block), which
// kept the place taken until it was written: the second connection was
// closed at accept.
func TestLimitsFreedBeforeFailureReply(t *testing.T) {
	t.Parallel()
	p := closedPort(t)
	refused := handshake.AddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(p[0])<<8|uint16(p[1])))
	for _, tc := range []struct {
		name string
		cmd  handshake.Command
		rep  byte
	}{
		{"dial-refused", handshake.CmdConnect, byte(handshake.ConnectionRefused)},
		{"command-not-supported", 9, byte(handshake.CommandNotSupported)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := &gatedWriter{gate: make(chan struct{})}
			cfg, err := parseFlags([]string{"--listeners", "1", "--listen", "127.0.0.1:0", "--max-sessions-per-ip", "1"}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			cfg.resolver = nxdomainResolver(t)
			inst, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(w, nil)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { close(w.gate); inst.shutdown(5 * time.Second) })
			addr := inst.addrs()[0]
			c, rep := request(t, addr, tc.cmd, refused)
			if rep != tc.rep {
				t.Fatalf("REP %#02x, want %#02x", rep, tc.rep)
			}
			// Its access line waits at the gate, and its socket stays
			// open until the line is written: only its place is free.
			again := dialSluice(t, addr)
			mustWrite(t, again, []byte{5, 1, 0})
			expect(t, again, []byte{5, 0}) // closed at accept while the place was held
			c.Close()
			again.Close()
		})
	}
}

// TestCopyBelowWithoutLoops: --copy-below, which only the relay's event
// loops act on, gets one warning where there are none, instead of being
// ignored silently.
func TestCopyBelowWithoutLoops(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		warn bool
	}{
		{[]string{"--copy-below", "16K", "--loops", "-1"}, true},
		{[]string{"--copy-below", "16K", "--no-splice"}, true},
		{[]string{"--copy-below", "16K"}, runtime.GOOS != "linux"},
		{[]string{"--loops", "-1"}, false},
	} {
		var log syncBuffer
		startSluiceLog(t, &log, tc.args...)
		if got := strings.Count(log.String(), "--copy-below has no effect"); got != map[bool]int{true: 1, false: 0}[tc.warn] {
			t.Errorf("%q: %d warnings about --copy-below; want %v\n%s", tc.args, got, tc.warn, log.String())
		}
	}
}
