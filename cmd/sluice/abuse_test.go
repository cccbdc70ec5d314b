package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// This file holds the abuse tests' shared helpers (a sluice child process
// with its log and /proc figures), the whole-server fuzzer and the
// authentication checks. The other abuse tests live in slowloris_test.go,
// faults_test.go, integrity_test.go and the _linux_test.go files.

// sluiceProc is a sluice child process (this test binary run as the command)
// whose stderr is collected line by line.
type sluiceProc struct {
	cmd  *exec.Cmd
	addr string // the first "sluice listening" address

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced on each new line
	exited  chan struct{} // closed when stderr reaches EOF

	waitOnce sync.Once
	waitErr  error
}

// spawnSluice starts sluice as a child process with args (plus
// --listen 127.0.0.1:0 unless args has a --listen), waits for its listening
// line and stops it with SIGTERM in t.Cleanup. Without a --drain-timeout in
// args it gets --drain-timeout 5s. wrap, when not empty, is a
// command line the binary is run under (e.g. sh -c 'ulimit ...'); it must
// exec the binary so that the child's PID is sluice's.
func spawnSluice(t *testing.T, wrap []string, args ...string) *sluiceProc {
	t.Helper()
	if !slices.ContainsFunc(args, func(a string) bool { return a == "--listen" || strings.HasPrefix(a, "--listen=") }) {
		args = append(args, "--listen", "127.0.0.1:0")
	}
	if !slices.Contains(args, "--drain-timeout") {
		args = append(args, "--drain-timeout", "5s")
	}
	cmd := sluiceCmd(context.Background(), args...)
	if len(wrap) > 0 {
		argv := append(append(append([]string(nil), wrap[1:]...), cmd.Path), args...)
		env := cmd.Env
		cmd = exec.Command(wrap[0], argv...)
		cmd.Env = env
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %q: %v", cmd.Args, err)
	}
	p := &sluiceProc{cmd: cmd, changed: make(chan struct{}), exited: make(chan struct{})}
	go p.collect(stderr)
	t.Cleanup(func() { p.stop(t) })
	line, ok := p.waitLine("sluice listening", 30*time.Second)
	if !ok {
		t.Fatalf("%q: no listening line; log:\n%s", cmd.Args, p.log())
	}
	for _, f := range strings.Fields(line) {
		if a, ok := strings.CutPrefix(f, "addr="); ok {
			p.addr = a
		}
	}
	return p
}

// collect reads the child's stderr into p.lines until EOF.
func (p *sluiceProc) collect(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		p.mu.Lock()
		p.lines = append(p.lines, sc.Text())
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
	close(p.exited)
}

// waitLine waits until a log line contains substr and returns it; it gives
// up (false) when the safety-net timeout ends or the child's stderr closes.
func (p *sluiceProc) waitLine(substr string, timeout time.Duration) (string, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			if strings.Contains(l, substr) {
				p.mu.Unlock()
				return l, true
			}
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-p.exited:
			return "", false
		case <-deadline.C:
			return "", false
		}
	}
}

// count returns how many log lines so far contain substr.
func (p *sluiceProc) count(substr string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// log returns the whole log so far.
func (p *sluiceProc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// alive reports whether the child is still running.
func (p *sluiceProc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return p.cmd.Process.Signal(syscall.Signal(0)) == nil
	}
}

// wait waits for the child to exit and returns its exit error; it may be
// called more than once.
func (p *sluiceProc) wait() error {
	p.waitOnce.Do(func() {
		<-p.exited
		p.waitErr = p.cmd.Wait()
	})
	return p.waitErr
}

// stop sends SIGTERM, waits for the exit (killing the child if it outlives
// a safety net) and fails the test when the exit status is not 0.
func (p *sluiceProc) stop(t *testing.T) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("sluice exit after SIGTERM: %v, want 0; log:\n%s", err, p.log())
		}
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-done
		t.Errorf("sluice still running 30s after SIGTERM; killed")
	}
}

// procFDs returns the number of open fds and sockets of process pid.
func procFDs(t *testing.T, pid int) (fds, sockets int) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("counting fds: %v", err)
	}
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			sockets++
		}
	}
	return len(ents), sockets
}

// procRSS returns the resident set size of process pid, in bytes.
func procRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("reading RSS: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// procCPU returns the user plus system CPU time process pid has used.
// /proc/PID/stat counts clock ticks of 1/100 s (USER_HZ is 100 on Linux).
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("reading CPU time: %v", err)
	}
	// Fields after the command name, which is in parentheses: state is
	// field 3, utime 14, stime 15.
	rest := string(b[bytes.LastIndexByte(b, ')')+2:])
	f := strings.Fields(rest)
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("parsing /proc/%d/stat: %v %v", pid, err1, err2)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// needProc skips a test that reads /proc on systems without it.
func needProc(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("needs /proc (Linux)")
	}
}

// connectReq returns a no-auth greeting and CONNECT request for target.
func connectReq(target netip.AddrPort) []byte {
	b := []byte{5, 1, 0, 5, 1, 0}
	if target.Addr().Is4() {
		b = append(b, 1)
	} else {
		b = append(b, 4)
	}
	b = append(b, target.Addr().AsSlice()...)
	return binary.BigEndian.AppendUint16(b, target.Port())
}

// serveOneEcho is a round trip through sluice at addr to the echo server
// target: greeting (with user and pass when user is not empty), CONNECT,
// one echoed message. It returns the first failure.
func serveOneEcho(addr string, target netip.AddrPort, user, pass string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	req := connectReq(target)
	wantHead := []byte{5, 0}
	if user != "" {
		auth := append([]byte{5, 1, 2, 1, byte(len(user))}, user...)
		auth = append(append(auth, byte(len(pass))), pass...)
		req = append(auth, req[3:]...)
		wantHead = []byte{5, 2, 1, 0}
	}
	msg := []byte("still served")
	if _, err := c.Write(append(req, msg...)); err != nil {
		return err
	}
	got := make([]byte, len(wantHead)+10+len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("reading reply and echo: %w (got %x)", err, got)
	}
	if !bytes.Equal(got[:len(wantHead)], wantHead) || got[len(wantHead)+1] != 0 || !bytes.Equal(got[len(wantHead)+10:], msg) {
		return fmt.Errorf("got %x, want %x, a success reply and %q", got, wantHead, msg)
	}
	return nil
}

// startEcho starts a loopback TCP echo server that lives until tb ends.
func startEcho(tb testing.TB) netip.AddrPort {
	tb.Helper()
	return echoServer(tb, "tcp", "127.0.0.1:0").Addr().(*net.TCPAddr).AddrPort()
}

// errNotLoopback refuses a fuzzed dial to anything but loopback.
var errNotLoopback = errors.New("fuzz: only loopback targets may be dialled")

// startFuzzSluice starts an in-process sluice for the whole-server fuzzer.
// Names never reach a DNS server (every lookup fails), and dials to anything
// but loopback are refused before connect, so no input makes a test talk
// to the network.
func startFuzzSluice(f *testing.F, args ...string) string {
	f.Helper()
	args = append([]string{"--listeners", "1", "--listen", "127.0.0.1:0"}, args...)
	cfg, err := parseFlags(args, io.Discard)
	if err != nil {
		f.Fatalf("parseFlags(%q): %v", args, err)
	}
	inst, err := start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatalf("start(%q): %v", args, err)
	}
	d := inst.srv.dialer
	d.Resolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("fuzz: no DNS")
	}}
	ctrl := d.ControlContext
	d.ControlContext = func(ctx context.Context, network, address string, c syscall.RawConn) error {
		if ap, err := netip.ParseAddrPort(address); err != nil || !ap.Addr().Unmap().IsLoopback() {
			return errNotLoopback
		}
		if ctrl == nil {
			return nil
		}
		return ctrl(ctx, network, address, c)
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
	users := f.TempDir() + "/users"
	if err := os.WriteFile(users, []byte("alice:s3cret\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	servers := [2]string{startFuzzSluice(f, common...), startFuzzSluice(f, append(common, "--users", users)...)}

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
		{0, []byte{5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 1, 0, 80}},                                // non-loopback: refused here
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

// TestAuthNearMisses checks that no password but the right one
// authenticates: near misses, other users' passwords, empty and 255-byte
// fields all get RFC 1929 status 0x01 and a close. The right passwords (a
// short one and a 255-byte one) are the control: they must succeed.
func TestAuthNearMisses(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("p", 255)
	longUser := strings.Repeat("u", 255)
	addr, _ := startSluice(t, "--users", writeUsers(t, "alice:s3cret\nbob:hunter2\n"+longUser+":"+long+"\n"))
	cases := []struct {
		user, pass string
		ok         bool
	}{
		{"alice", "s3cret", true},
		{longUser, long, true},
		{"alice", "s3cre", false},
		{"alice", "s3cret!", false},
		{"alice", "S3cret", false},
		{"alice", "s3creT", false},
		{"alice", "s3cret\x00", false},
		{"alice", "\x00s3cret", false},
		{"alice", "hunter2", false},
		{"alice", "", false},
		{"alice", long, false},
		{"", "s3cret", false},
		{"", "", false},
		{"Alice", "s3cret", false},
		{"alice\x00", "s3cret", false},
		{"bob", "s3cret", false},
		{longUser, long[:254] + "q", false},
		{longUser, long[:254], false},
		{longUser[:254], long, false},
		{strings.Repeat("x", 255), strings.Repeat("y", 255), false},
	}
	for i, tc := range cases {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			c := dialSluice(t, addr)
			msg := append([]byte{5, 1, 2, 1, byte(len(tc.user))}, tc.user...)
			msg = append(append(msg, byte(len(tc.pass))), tc.pass...)
			mustWrite(t, c, msg) // -> greeting, user/pass
			expect(t, c, []byte{5, 2})
			if tc.ok {
				expect(t, c, []byte{1, 0})
				return
			}
			expect(t, c, []byte{1, 1})
			expectClosed(t, c)
		})
	}
}

// TestAuthOverlong checks that user names and passwords whose frames claim
// more bytes than are sent, or that are followed by more bytes than the
// frame holds, are rejected cleanly: closed by the handshake timeout or
// answered 0x01, never authenticated, never crashing the server.
func TestAuthOverlong(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	addr, _ := startSluice(t, "--users", writeUsers(t, "alice:s3cret\n"), "--handshake-timeout", "500ms")
	t.Run("ulen-past-end", func(t *testing.T) {
		c := dialSluice(t, addr)
		mustWrite(t, c, append([]byte{5, 1, 2, 1, 255}, "alice"...)) // -> ULEN 255, 5 bytes sent
		expect(t, c, []byte{5, 2})
		expectClosed(t, c) // the handshake timeout
	})
	t.Run("plen-past-end-then-fin", func(t *testing.T) {
		c := dialSluice(t, addr)
		mustWrite(t, c, append([]byte{5, 1, 2, 1, 5, 'a', 'l', 'i', 'c', 'e', 255}, "s3cret"...))
		c.CloseWrite()
		expect(t, c, []byte{5, 2})
		expectClosed(t, c)
	})
	t.Run("trailing-garbage-wrong-password", func(t *testing.T) {
		c := dialSluice(t, addr)
		msg := append([]byte{5, 1, 2, 1, 5}, "alice"...)
		msg = append(append(msg, 255), strings.Repeat("s3cret", 100)...) // 600 password bytes for a 255-byte frame
		mustWrite(t, c, msg)
		expect(t, c, []byte{5, 2, 1, 1})
		expectClosed(t, c)
	})
	t.Run("trailing-garbage-right-password", func(t *testing.T) {
		c := dialSluice(t, addr)
		msg := append([]byte{5, 1, 2, 1, 5}, "alice"...)
		msg = append(append(msg, 6), "s3cret"...)
		mustWrite(t, c, append(msg, bytes.Repeat([]byte{0xff}, 600)...)) // the rest is not a request
		expect(t, c, []byte{5, 2, 1, 0})
		expectClosed(t, c)
	})
	if err := serveOneEcho(addr, echo, "alice", "s3cret", 10*time.Second); err != nil {
		t.Fatalf("a normal client after the over-long ones: %v", err)
	}
}
