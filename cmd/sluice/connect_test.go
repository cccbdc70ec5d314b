package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"
)

// writeUsers writes a users file with mode 0600 and returns its path.
func writeUsers(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConnectXNetProxy drives sluice with golang.org/x/net/proxy, an
// independent SOCKS5 client, to IPv4, IPv6 and domain targets, with and
// without authentication.
func TestConnectXNetProxy(t *testing.T) {
	t.Parallel()
	echo4 := echoServer(t, "tcp4", "127.0.0.1:0")
	echo6 := echoServer(t, "tcp6", "[::1]:0")
	port4 := strconv.Itoa(echo4.Addr().(*net.TCPAddr).Port)
	noAuth, _ := startSluice(t)
	withAuth, _ := startSluice(t, "--users", writeUsers(t, "# team\nalice:s3cret:with:colons\n\nbob:hunter2\n"))
	netSockets, _ := startSluice(t, "--net-sockets")
	cases := []struct {
		name, proxyAddr, target string
		auth                    *proxy.Auth
	}{
		{"noauth/ipv4", noAuth, echo4.Addr().String(), nil},
		{"noauth/ipv6", noAuth, echo6.Addr().String(), nil},
		{"noauth/domain", noAuth, net.JoinHostPort("localhost", port4), nil},
		{"userpass/ipv4", withAuth, echo4.Addr().String(), &proxy.Auth{User: "alice", Password: "s3cret:with:colons"}},
		{"userpass/domain", withAuth, net.JoinHostPort("localhost", port4), &proxy.Auth{User: "bob", Password: "hunter2"}},
		{"net-sockets/ipv4", netSockets, echo4.Addr().String(), nil},
		{"net-sockets/ipv6", netSockets, echo6.Addr().String(), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := proxy.SOCKS5("tcp", tc.proxyAddr, tc.auth, &net.Dialer{Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			c, err := d.(proxy.ContextDialer).DialContext(context.Background(), "tcp", tc.target)
			if err != nil {
				t.Fatalf("dial %s through sluice: %v", tc.target, err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			msg := []byte("hello through " + tc.name)
			mustWrite(t, c, msg)
			expect(t, c, msg)
		})
	}
}

// TestWrongPassword checks that a wrong password gets RFC 1929 status 0x01
// and a close, and that a client offering only "no auth" to a server that
// requires a password gets method 0xFF.
func TestWrongPassword(t *testing.T) {
	t.Parallel()
	addr, _ := startSluice(t, "--users", writeUsers(t, "alice:right\n"))
	t.Run("wrong-password", func(t *testing.T) {
		c := dialSluice(t, addr)
		mustWrite(t, c, []byte{5, 1, 2})                                                   // -> greeting: user/pass
		expect(t, c, []byte{5, 2})                                                         // <- method user/pass
		mustWrite(t, c, []byte{1, 5, 'a', 'l', 'i', 'c', 'e', 5, 'w', 'r', 'o', 'n', 'g'}) // -> alice:wrong
		expect(t, c, []byte{1, 1})                                                         // <- failure
		expectClosed(t, c)
	})
	t.Run("unknown-user", func(t *testing.T) {
		c := dialSluice(t, addr)
		mustWrite(t, c, []byte{5, 1, 2, 1, 3, 'b', 'o', 'b', 5, 'r', 'i', 'g', 'h', 't'}) // -> pipelined
		expect(t, c, []byte{5, 2, 1, 1})                                                  // <- method, failure
		expectClosed(t, c)
	})
	t.Run("noauth-only", func(t *testing.T) {
		c := dialSluice(t, addr)
		mustWrite(t, c, []byte{5, 1, 0}) // -> greeting: no auth only
		expect(t, c, []byte{5, 0xff})    // <- no acceptable method
		expectClosed(t, c)
	})
	t.Run("x/net/proxy", func(t *testing.T) {
		d, _ := proxy.SOCKS5("tcp", addr, &proxy.Auth{User: "alice", Password: "wrong"}, nil)
		if c, err := d.Dial("tcp", "127.0.0.1:9"); err == nil {
			c.Close()
			t.Fatal("dial with a wrong password succeeded")
		}
	})
}

// TestReplyCodes probes sluice with raw bytes for each reply code a loopback
// test can provoke, and for the cases the RFC answers with a close.
func TestReplyCodes(t *testing.T) {
	t.Parallel()
	addr, _ := startSluice(t)
	timeoutAddr, _ := startSluice(t, "--dial-timeout", "1ns")
	noBind, _ := startSluice(t, "--bind=false", "--udp=false")
	closedPort := closedPort(t)
	cases := []struct {
		name  string
		addr  string
		req   []byte // after the no-auth greeting
		want  byte
		close bool // want a close without reply
	}{
		{"refused", addr, append([]byte{5, 1, 0, 1, 127, 0, 0, 1}, closedPort...), 0x05, false},
		{"dns-not-found", addr, []byte{5, 1, 0, 3, 14, 'n', 'o', 's', 'u', 'c', 'h', '.', 'i', 'n', 'v', 'a', 'l', 'i', 'd', 0, 80}, 0x04, false},
		{"dial-timeout", timeoutAddr, append([]byte{5, 1, 0, 1, 127, 0, 0, 1}, closedPort...), 0x06, false},
		{"bind-off", noBind, []byte{5, 2, 0, 1, 127, 0, 0, 1, 0, 80}, 0x07, false},
		{"udp-off", noBind, []byte{5, 3, 0, 1, 127, 0, 0, 1, 0, 80}, 0x07, false},
		{"unknown-command", addr, []byte{5, 9, 0, 1, 127, 0, 0, 1, 0, 80}, 0x07, false},
		{"bad-atyp", addr, []byte{5, 1, 0, 7, 127, 0, 0, 1, 0, 80}, 0x08, false},
		{"request-version", addr, []byte{4, 1, 0, 1, 127, 0, 0, 1, 0, 80}, 0, true},
		{"nonzero-rsv", addr, []byte{5, 1, 1, 1, 127, 0, 0, 1, 0, 80}, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dialSluice(t, tc.addr)
			mustWrite(t, c, []byte{5, 1, 0}) // -> greeting: no auth
			expect(t, c, []byte{5, 0})       // <- no auth
			mustWrite(t, c, tc.req)          // -> request
			if tc.close {
				expectClosed(t, c)
				return
			}
			rep, bnd := readReply(t, c) // <- reply
			if rep != tc.want {
				t.Fatalf("REP = %#02x, want %#02x", rep, tc.want)
			}
			if !bytes.Equal(bnd, make([]byte, 6)) {
				t.Errorf("BND of a failure reply = %x, want 0.0.0.0:0", bnd)
			}
			expectClosed(t, c)
		})
	}
	t.Run("greeting-version-4", func(t *testing.T) {
		t.Parallel()
		c := dialSluice(t, addr)
		mustWrite(t, c, []byte{4, 1, 0, 80, 127, 0, 0, 1, 0}) // -> a SOCKS4 request
		expectClosed(t, c)                                    // <- nothing
	})
}

// TestDialPath: by default clients are accepted bare and a CONNECT to an
// address dials a bare socket, which the event loops take as they are
// (bareAccept, tune.DialFd, relay.StartFds); --net-sockets, and a relay
// without loops, accept and dial through package net.
func TestDialPath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{nil, runtime.GOOS == "linux"},
		{[]string{"--net-sockets"}, false},
		{[]string{"--loops", "-1"}, false},
		{[]string{"--no-splice"}, false},
	} {
		_, inst := startSluice(t, tc.args...)
		if inst.srv.bareSockets != tc.want {
			t.Errorf("%q: bare-socket dials %v, want %v", tc.args, inst.srv.bareSockets, tc.want)
		}
		for i, f := range inst.bare {
			if (f != nil) != tc.want {
				t.Errorf("%q: listener %d accepts bare: %v, want %v", tc.args, i, f != nil, tc.want)
			}
		}
	}
}

// closedPort returns a loopback port (big-endian) on which nothing listens,
// for the test's whole life: a socket bound to it, not listening, holds it,
// so that connects to it are refused. A port merely closed again could be
// handed out meanwhile to another test's socket, or as the source port of
// the very connect that dials it (on loopback a connect to a free port in
// the ephemeral range can pick that port and connect to itself).
func closedPort(t *testing.T) []byte {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return binary.BigEndian.AppendUint16(nil, uint16(sa.(*syscall.SockaddrInet4).Port))
}

// TestSuccessReplyAddress checks that 0x00 carries the upstream socket's real
// local address and port, as the target sees it.
func TestSuccessReplyAddress(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr, _ := startSluice(t)
	c := dialSluice(t, addr)
	port := l.Addr().(*net.TCPAddr).Port
	mustWrite(t, c, []byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, byte(port >> 8), byte(port)}) // -> pipelined
	expect(t, c, []byte{5, 0})
	up, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	rep, bnd := readReply(t, c)
	remote := up.RemoteAddr().(*net.TCPAddr)
	want := append(remote.IP.To4(), byte(remote.Port>>8), byte(remote.Port))
	if rep != 0 || !bytes.Equal(bnd, want) {
		t.Fatalf("reply %#02x BND %x, want 0x00 BND %x (%v)", rep, bnd, want, remote)
	}
}

// TestSplitAndPipelined sends the handshake one byte per TCP segment, and all
// at once with the first payload bytes behind the request: no byte may be
// lost or reordered.
func TestSplitAndPipelined(t *testing.T) {
	t.Parallel()
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	port := echo.Addr().(*net.TCPAddr).Port
	noAuth, _ := startSluice(t)
	withAuth, _ := startSluice(t, "--users", writeUsers(t, "u:p\n"))
	req := []byte{5, 1, 0, 1, 127, 0, 0, 1, byte(port >> 8), byte(port)}
	payload := []byte("payload right behind the request")
	t.Run("one-byte-segments", func(t *testing.T) {
		t.Parallel()
		c := dialSluice(t, noAuth)
		c.SetNoDelay(true)
		for _, b := range append([]byte{5, 1, 0}, req...) {
			mustWrite(t, c, []byte{b})
		}
		expect(t, c, []byte{5, 0})
		if rep, _ := readReply(t, c); rep != 0 {
			t.Fatalf("REP = %#02x", rep)
		}
		mustWrite(t, c, payload)
		expect(t, c, payload)
	})
	t.Run("pipelined-noauth", func(t *testing.T) {
		t.Parallel()
		c := dialSluice(t, noAuth)
		all := append(append([]byte{5, 1, 0}, req...), payload...)
		mustWrite(t, c, all) // -> greeting, request, payload in one segment
		expect(t, c, []byte{5, 0})
		if rep, _ := readReply(t, c); rep != 0 {
			t.Fatalf("REP = %#02x", rep)
		}
		expect(t, c, payload) // the echo of the pipelined bytes
		mustWrite(t, c, []byte("and more"))
		expect(t, c, []byte("and more"))
	})
	t.Run("pipelined-userpass", func(t *testing.T) {
		t.Parallel()
		c := dialSluice(t, withAuth)
		all := append(append([]byte{5, 1, 2, 1, 1, 'u', 1, 'p'}, req...), payload...)
		mustWrite(t, c, all)
		expect(t, c, []byte{5, 2, 1, 0})
		if rep, _ := readReply(t, c); rep != 0 {
			t.Fatalf("REP = %#02x", rep)
		}
		expect(t, c, payload)
	})
}

// connectRaw performs a no-auth CONNECT to target through sluice at addr.
func connectRaw(t *testing.T, addr string, target *net.TCPAddr) *net.TCPConn {
	t.Helper()
	c := dialSluice(t, addr)
	req := []byte{5, 1, 0, 5, 1, 0, 1}
	req = append(req, target.IP.To4()...)
	req = binary.BigEndian.AppendUint16(req, uint16(target.Port))
	mustWrite(t, c, req)
	expect(t, c, []byte{5, 0})
	if rep, _ := readReply(t, c); rep != 0 {
		t.Fatalf("CONNECT %v: REP = %#02x", target, rep)
	}
	return c
}

// TestHalfClose checks that a client that sends its request and then shuts
// its write side still receives the target's whole response.
func TestHalfClose(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	response := bytes.Repeat([]byte("response "), 200_000) // 1.8 MB
	served := make(chan error, 1)
	go func() {
		up, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		defer up.Close()
		got, err := io.ReadAll(up) // the whole request, up to the client's FIN
		if err == nil && string(got) != "GET /\n" {
			err = io.ErrUnexpectedEOF
		}
		if err == nil {
			_, err = up.Write(response)
		}
		served <- err
	}()
	addr, _ := startSluice(t)
	c := connectRaw(t, addr, l.Addr().(*net.TCPAddr))
	mustWrite(t, c, []byte("GET /\n"))
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading response after CloseWrite: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("target: %v", err)
	}
	if !bytes.Equal(got, response) {
		t.Fatalf("got %d bytes of response, want %d", len(got), len(response))
	}
}

// TestSilentClientTimeout checks that a client that connects and sends
// nothing is closed when the handshake timeout ends.
func TestSilentClientTimeout(t *testing.T) {
	t.Parallel()
	addr, _ := startSluice(t, "--handshake-timeout", "300ms")
	start := time.Now() // before the connect: sluice's timeout starts after it
	c := dialSluice(t, addr)
	expectClosed(t, c)
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("closed after %v, before the 300ms handshake timeout", d)
	}
	// A client that stalls halfway through its greeting is closed too.
	c = dialSluice(t, addr)
	mustWrite(t, c, []byte{5, 2})
	expectClosed(t, c)
}

// TestTransfer64MiB moves 64 MiB each way at once through sluice and compares
// SHA-256 sums: on the default event loops, on a single one, and on
// goroutines (--loops -1).
func TestTransfer64MiB(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name  string
		args  []string
		loops int
	}{
		{"default", nil, 4 * runtime.GOMAXPROCS(0)},
		{"one loop", []string{"--loops", "1"}, 1},
		{"goroutines", []string{"--loops", "-1"}, 0},
	} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			transfer64MiB(t, mode.loops, mode.args...)
		})
	}
}

func transfer64MiB(t *testing.T, loops int, args ...string) {
	const size = 64 << 20
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	down := make([]byte, size)
	up := make([]byte, size)
	rand.Read(down)
	rand.Read(up)
	type result struct {
		sum [32]byte
		err error
	}
	atTarget := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			atTarget <- result{err: err}
			return
		}
		defer c.Close()
		// The download is written beside the upload's read, and c is
		// closed only when both are done.
		wrote := make(chan error, 1)
		go func() {
			_, err := c.Write(down)
			if err == nil {
				err = c.(*net.TCPConn).CloseWrite()
			}
			wrote <- err
		}()
		h := sha256.New()
		_, err = io.Copy(h, c)
		if werr := <-wrote; err == nil {
			err = werr
		}
		atTarget <- result{[32]byte(h.Sum(nil)), err}
	}()
	addr, inst := startSluice(t, args...)
	if n := inst.srv.relay.Loops(); n != loops {
		t.Fatalf("%d relay event loops; want %d", n, loops)
	}
	c := connectRaw(t, addr, l.Addr().(*net.TCPAddr))
	c.SetDeadline(time.Now().Add(60 * time.Second))
	writeErr := make(chan error, 1)
	go func() {
		_, err := c.Write(up)
		if err == nil {
			err = c.CloseWrite()
		}
		writeErr <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		t.Fatalf("download after %d bytes: %v", n, err)
	}
	if err := <-writeErr; err != nil {
		t.Fatalf("upload: %v", err)
	}
	r := <-atTarget
	if r.err != nil {
		t.Fatalf("target: %v", r.err)
	}
	if r.sum != sha256.Sum256(up) {
		t.Error("upload: SHA-256 at the target differs from what the client sent")
	}
	if [32]byte(h.Sum(nil)) != sha256.Sum256(down) || n != size {
		t.Errorf("download: %d bytes, SHA-256 differs: %v", n, [32]byte(h.Sum(nil)) != sha256.Sum256(down))
	}
}
