package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
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

// This file holds the abuse tests' shared helpers: a sluice child process
// with its log and /proc figures. The tests live in fuzzserver_test.go
// (the whole-server fuzzer), auth_abuse_test.go, slowloris_test.go,
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
	args = withTestFlags(args)
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
	p.addr = lineAddr(line)
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
