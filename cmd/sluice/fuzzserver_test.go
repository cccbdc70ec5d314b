package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// startEcho starts a loopback TCP echo server that lives until tb ends.
func startEcho(tb testing.TB) netip.AddrPort {
	tb.Helper()
	return echoServer(tb, "tcp", "127.0.0.1:0").Addr().(*net.TCPAddr).AddrPort()
}

// loopbackOnly is a rules file that lets a fuzzed request reach loopback
// destinations only: every other address, and every name that resolves to
// one, gets reply 0x02 before any dial, on the bare-socket path as on
// package net's, and UDP datagrams to them are dropped.
const loopbackOnly = `default-policy = "deny"
[[rule]]
action = "allow"
cidr = ["127.0.0.0/8", "::1/128"]
`

// startFuzzSluice starts an in-process sluice for the whole-server fuzzer,
// configured before any accept loop runs. Names never reach a DNS server
// (every lookup fails, /etc/hosts still answers), and the rules refuse
// anything but loopback, so no input makes a test talk to the network.
func startFuzzSluice(f *testing.F, rules string, args ...string) string {
	f.Helper()
	args = append([]string{"--config", rules, "--listeners", "1", "--listen", "127.0.0.1:0"}, args...)
	cfg, err := parseFlags(args, io.Discard)
	if err != nil {
		f.Fatalf("parseFlags(%q): %v", args, err)
	}
	cfg.resolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("fuzz: no DNS")
	}}
	inst, err := start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatalf("start(%q): %v", args, err)
	}
	f.Cleanup(func() { inst.shutdown(5 * time.Second) })
	return inst.addrs()[0]
}

// FuzzServer writes random byte streams at live sluice listeners (one
// without authentication, one with; bit 0 of sel picks) and checks that the
// server survives them, never answers a first byte other than 5, and still
// serves a normal client afterwards. Bit 1 of sel keeps the client's write
// side open, so the handshake timeout or the read deadline ends the
// session instead of the client's FIN. Each process (the test binary, and
// each fuzzing worker) starts its own servers once; BIND is off because a
// fuzzed DST.ADDR could make it listen on a non-loopback address.
//
//	go test -run '^$' -fuzz '^FuzzServer$' -fuzztime 60s ./cmd/sluice
func FuzzServer(f *testing.F) {
	echo := startEcho(f)
	common := []string{"--handshake-timeout", "250ms", "--dial-timeout", "1s", "--bind=false", "--udp-idle-timeout", "1s"}
	// The rules and users files are read at start only, and go right
	// after: a fuzzing worker is killed when fuzzing ends, before any
	// cleanup of F's (f.TempDir's directories stayed behind, one per
	// worker and run).
	dir, err := os.MkdirTemp("", "sluice-fuzz")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	rules, users := dir+"/rules.toml", dir+"/users"
	if err := errors.Join(os.WriteFile(rules, []byte(loopbackOnly), 0o600), os.WriteFile(users, []byte("alice:s3cret\n"), 0o600)); err != nil {
		f.Fatal(err)
	}
	servers := [2]string{startFuzzSluice(f, rules, common...), startFuzzSluice(f, rules, append(common, "--users", users)...)}
	if err := os.RemoveAll(dir); err != nil {
		f.Fatal(err)
	}
	// The guard against the network: a non-loopback CONNECT gets 0x02
	// (not allowed) without a dial.
	if c, err := net.Dial("tcp", servers[0]); err != nil {
		f.Fatal(err)
	} else {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte{5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 1, 0, 80})
		got := make([]byte, 4)
		_, err := io.ReadFull(c, got)
		c.Close()
		if err != nil || !bytes.Equal(got, []byte{5, 0, 5, 2}) {
			f.Fatalf("CONNECT 192.0.2.1:80: got %x, %v; want 05 00 05 02 (not allowed)", got, err)
		}
	}

	port := binary.BigEndian.AppendUint16(nil, echo.Port())
	connect := append([]byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1}, port...)
	auth := []byte{5, 1, 2, 1, 5, 'a', 'l', 'i', 'c', 'e', 6, 's', '3', 'c', 'r', 'e', 't'}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	seeds := []struct {
		sel byte
		in  []byte
	}{
		{0, cat(connect, []byte("hello"))},                                                   // a whole session
		{2, cat(connect, []byte("hello"))},                                                   // ... left open
		{0, cat([]byte{5, 1, 0, 5, 1, 0, 3, 9}, []byte("localhost"), port, []byte("named"))}, // name from /etc/hosts
		{0, cat([]byte{5, 1, 0, 5, 1, 0, 3, 14}, []byte("nosuch.invalid"), port)},            // DNS failure
		{0, []byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 0}},                                 // port 0: refused
		{0, []byte{5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 1, 0, 80}},                                // non-loopback: 0x02, no dial
		{0, cat([]byte{5, 1, 0, 5, 1, 0, 4}, net.IPv6loopback, port)},                        // IPv6 target
		{0, []byte{5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80}},                                // BIND (off): 0x07
		{0, []byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0}},                                   // UDP ASSOCIATE
		{2, []byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0}},                                   // ... control left open
		{0, []byte{5, 1, 0, 5, 9, 0, 1, 127, 0, 0, 1, 0, 80}},                                // unknown command
		{0, []byte{5, 1, 0, 5, 1, 0, 7, 127, 0, 0, 1, 0, 80}},                                // unknown ATYP
		{0, []byte{5, 1, 0, 5, 1, 1, 1, 127, 0, 0, 1, 0, 80}},                                // non-zero RSV
		{0, []byte{5, 1, 0, 5, 1, 0, 3, 0, 0, 80}},                                           // empty name
		{0, []byte{5, 1, 0, 5, 1, 0, 3, 200, 'a'}},                                           // name past the end
		{0, []byte{5, 1, 0, 5, 1, 0, 1, 127}},                                                // short request
		{0, []byte{5, 0}},                                                                    // no methods
		{0, []byte{5, 255}},                                                                  // methods past the end
		{2, []byte{5}},                                                                       // stalls: timeout
		{0, []byte{4, 1, 0, 80, 127, 0, 0, 1, 0}},                                            // SOCKS4
		{0, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},                                     // HTTP
		{0, []byte("\x16\x03\x01\x00\x05hello")},                                             // TLS-ish
		{0, nil},                                                                             // nothing
		{1, cat(auth, connect[3:], []byte("authed"))},                                        // auth, session
		{1, cat(auth[:len(auth)-1], []byte("T"), connect[3:])},                               // wrong password
		{1, []byte{5, 1, 2, 1, 255, 'a'}},                                                    // ULEN past the end
		{1, []byte{5, 1, 2, 2, 1, 'a', 1, 'b'}},                                              // auth version 2
		{1, []byte{5, 1, 2, 1, 0, 0}},                                                        // empty user and pass
		{1, connect},                                                                         // no auth offered
		{1, bytes.Repeat([]byte{5, 1, 2, 1, 1, 'a', 1, 'b'}, 64)},                            // repeated
		{0, bytes.Repeat([]byte{5}, 4096)},                                                   // all fives
	}
	for _, s := range seeds {
		f.Add(s.sel, s.in)
	}
	f.Fuzz(func(t *testing.T, sel byte, in []byte) {
		addr := servers[sel&1]
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial sluice: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(500 * time.Millisecond))
		c.Write(in) // the server may close before reading it all
		if sel&2 == 0 {
			c.(*net.TCPConn).CloseWrite()
		}
		got, _ := io.ReadAll(c) // until the server closes, or the deadline
		if len(in) > 0 && in[0] != 5 && len(got) > 0 {
			t.Fatalf("first byte %#02x: server answered %x, want a close without reply", in[0], got)
		}
		c.Close()
		user, pass := "", ""
		if sel&1 == 1 {
			user, pass = "alice", "s3cret"
		}
		if err := serveOneEcho(addr, echo, user, pass, 10*time.Second); err != nil {
			t.Fatalf("after %d fuzzed bytes, a normal client is not served: %v", len(in), err)
		}
	})
}
