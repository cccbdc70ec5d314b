package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"sluice/handshake"
)

// TestMain lets a test re-run this binary as the sluice command: with
// SLUICE_RUN_MAIN=1 in its environment, the process is main().
func TestMain(m *testing.M) {
	if os.Getenv("SLUICE_RUN_MAIN") == "1" {
		main()
		return
	}
	flag.Parse()
	parallelDefault()
	os.Exit(m.Run())
}

// parallelDefault runs up to 6 parallel tests at once where -test.parallel
// was not given (its default is GOMAXPROCS, 2 on a 2-core machine). Most of
// this package's parallel tests wait: on timeouts they provoke (a silent
// client, a slow target, a drain) or on subprocesses, not on a CPU; run two
// at a time they made the package take 73 s, six at a time 48 s.
func parallelDefault() {
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given && runtime.GOMAXPROCS(0) < 6 {
		flag.Set("test.parallel", "6")
	}
}

// startSluice starts an in-process sluice with the given flags plus
// --listen 127.0.0.1:0 (unless args has a --listen) and returns its first
// address. It shuts down in t.Cleanup. DNS queries go to a loopback server
// that answers NXDOMAIN, so no test ever asks the machine's resolver.
func startSluice(t *testing.T, args ...string) (string, *instance) {
	t.Helper()
	args = withTestFlags(args)
	if !slices.ContainsFunc(args, func(a string) bool { return a == "--listen" || strings.HasPrefix(a, "--listen=") }) {
		args = append(args, "--listen", "127.0.0.1:0")
	}
	args = append([]string{"--listeners", "1"}, args...)
	cfg, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatalf("parseFlags(%q): %v", args, err)
	}
	cfg.resolver = nxdomainResolver(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	inst, err := start(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("start(%q): %v", args, err)
	}
	t.Cleanup(func() { inst.shutdown(5 * time.Second) })
	return inst.addrs()[0], inst
}

// withTestFlags puts the flags of SLUICE_TEST_FLAGS (split at spaces) before
// args, so that a second pass of the suite runs every server the tests start
// with a setting of the data path changed (CI: --copy-below 16K).
func withTestFlags(args []string) []string {
	extra := strings.Fields(os.Getenv("SLUICE_TEST_FLAGS"))
	if len(extra) == 0 {
		return args
	}
	return append(extra, args...)
}

// lineAddr returns the value of a log line's addr= field, "" if none.
func lineAddr(line string) string {
	addr := ""
	for _, f := range strings.Fields(line) {
		if a, ok := strings.CutPrefix(f, "addr="); ok {
			addr = a
		}
	}
	return addr
}

// testWriter sends log output to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// nxdomainResolver returns a pure-Go resolver whose DNS server is a loopback
// UDP socket answering every query with NXDOMAIN.
func nxdomainResolver(t *testing.T) *net.Resolver {
	t.Helper()
	return loopbackResolver(t, serveNXDOMAIN)
}

// loopbackResolver returns a pure-Go resolver whose DNS server is a loopback
// UDP socket served by serve until the test ends.
func loopbackResolver(t *testing.T, serve func(net.PacketConn)) *net.Resolver {
	t.Helper()
	addr := dnsServer(t, serve)
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

// dnsServer serves DNS on a loopback UDP socket with serve until the test
// ends, and returns its address.
func dnsServer(t *testing.T, serve func(net.PacketConn)) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go serve(pc)
	return pc.LocalAddr().String()
}

// serveNXDOMAIN answers each DNS query on pc with its header flipped to a
// response with RCODE 3 (name error), question echoed, no answers.
func serveNXDOMAIN(pc net.PacketConn) { nxdomainNoting(nil)(pc) }

// nxdomainNoting is serveNXDOMAIN that first hands asked, when not nil,
// each query's name (queryName).
func nxdomainNoting(asked func(name string)) func(net.PacketConn) {
	return func(pc net.PacketConn) { serveNXDOMAINNoting(pc, asked) }
}

// serveNXDOMAINNoting is nxdomainNoting's server.
func serveNXDOMAINNoting(pc net.PacketConn, asked func(name string)) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if n < 12 {
			continue
		}
		if asked != nil {
			asked(queryName(buf[:n]))
		}
		msg := buf[:n]
		msg[2] = 0x80 | msg[2]&0x79 | 0x04 // QR, keep opcode and RD, set AA
		msg[3] = 0x80 | 0x03               // RA, RCODE=NXDOMAIN
		copy(msg[6:12], []byte{0, 0, 0, 0, 0, 0})
		pc.WriteTo(msg, from)
	}
}

// echoServer starts a TCP echo server on network/addr (e.g. "tcp",
// "127.0.0.1:0") that echoes until EOF, then closes its write side.
func echoServer(t testing.TB, network, addr string) *net.TCPListener {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	serveEcho(t, l)
	return l.(*net.TCPListener)
}

// serveEcho is echoServer on a listener opened elsewhere (in another
// network namespace, say), closed when the test ends.
func serveEcho(t testing.TB, l net.Listener) {
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
}

// dialSluice connects to a sluice address.
func dialSluice(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second)) // safety net only
	return c.(*net.TCPConn)
}

// mustWrite writes b to c or fails the test.
func mustWrite(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write %x: %v", b, err)
	}
}

// expect reads len(want) bytes from c and compares them with want.
func expect(t *testing.T, c net.Conn, want []byte) []byte {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading %d bytes (want %x): %v (got %x)", len(want), want, err, got)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %x, want %x", got, want)
	}
	return got
}

// expectClosed checks that the server closes c without sending anything more.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	var b [1]byte
	n, err := c.Read(b[:])
	if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read = %d %x, %v; want the server to close (EOF or reset)", n, b[:n], err)
	}
}

// requestOK sends a greeting offering no authentication and a request of
// cmd for dst on c, and returns the IPv4 BND of its success reply (for
// BIND, the first).
func requestOK(t *testing.T, c net.Conn, cmd handshake.Command, dst handshake.Addr) netip.AddrPort {
	t.Helper()
	mustWrite(t, c, handshake.AppendRequest([]byte{5, 1, 0}, cmd, dst))
	expect(t, c, []byte{5, 0})
	rep, bnd := readReply(t, c)
	if rep != 0 || len(bnd) != 6 {
		t.Fatalf("command %d for %v: reply REP %#02x BND %x, want 0x00 and an IPv4 address", cmd, dst, rep, bnd)
	}
	ip, _ := netip.AddrFromSlice(bnd[:4])
	return netip.AddrPortFrom(ip, uint16(bnd[4])<<8|uint16(bnd[5]))
}

// readReply reads a full SOCKS5 reply (IPv4 or IPv6 BND) and returns REP and BND.
func readReply(t *testing.T, c net.Conn) (rep byte, bnd []byte) {
	t.Helper()
	hdr := make([]byte, 4)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatalf("reading reply header: %v", err)
	}
	if hdr[0] != 5 || hdr[2] != 0 {
		t.Fatalf("reply header %x: want VER 5, RSV 0", hdr)
	}
	n := map[byte]int{1: 4 + 2, 4: 16 + 2}[hdr[3]]
	if n == 0 {
		t.Fatalf("reply ATYP %#x: want IPv4 or IPv6", hdr[3])
	}
	bnd = make([]byte, n)
	if _, err := io.ReadFull(c, bnd); err != nil {
		t.Fatalf("reading reply address: %v", err)
	}
	return hdr[1], bnd
}

// countSockets returns the number of open socket fds of this process.
func countSockets(t *testing.T) int {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("counting sockets needs /proc (Linux)")
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("cannot count fds: %v", err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds or the safety-net timeout ends, and
// returns whether it held. The loop yields with a short timer between polls:
// it waits for a state that other goroutines reach, not for a fixed time.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-time.After(5 * time.Millisecond)
	}
	return true
}
