package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// managerSocket is what a service manager listens on for sd_notify
// datagrams: a unixgram socket that learns each sender's pid (SO_PASSCRED).
type managerSocket struct {
	c    *net.UnixConn
	name string // for NOTIFY_SOCKET
}

func listenManager(t *testing.T, name string) *managerSocket {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	return &managerSocket{c: c, name: name}
}

// next returns the next datagram and its sender's pid, failing the test
// after 30 s.
func (m *managerSocket) next(t *testing.T) (string, int) {
	t.Helper()
	m.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	n, oobn, _, _, err := m.c.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages %v, %v; want the sender's credentials", msgs, err)
	}
	cred, err := unix.ParseUnixCredentials(&msgs[0])
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n]), int(cred.Pid)
}

// expect reads the next datagram and checks that it is from pid and has
// exactly the lines of want, where a line "NAME=*" matches any value. It
// returns the values of the lines, by name.
func (m *managerSocket) expect(t *testing.T, pid int, want ...string) map[string]string {
	t.Helper()
	msg, from := m.next(t)
	if from != pid {
		t.Fatalf("%q from pid %d, want %d (sluice's main process)", msg, from, pid)
	}
	lines := strings.Split(strings.TrimSuffix(msg, "\n"), "\n")
	ok := len(lines) == len(want) && strings.HasSuffix(msg, "\n")
	vals := map[string]string{}
	for i := 0; ok && i < len(lines); i++ {
		name, val, _ := strings.Cut(lines[i], "=")
		vals[name] = val
		ok = lines[i] == want[i] || strings.HasSuffix(want[i], "=*") && strings.HasPrefix(lines[i], strings.TrimSuffix(want[i], "*"))
	}
	if !ok {
		t.Fatalf("notification %q, want the lines %q", msg, want)
	}
	return vals
}

func monotonicNow(t *testing.T) int64 {
	us, ok := monotonicMicros()
	if !ok {
		t.Fatal("CLOCK_MONOTONIC unreadable")
	}
	return us
}

// TestNotifyLifecycle: with NOTIFY_SOCKET set, as systemd sets it for
// Type=notify, sluice says READY=1 once it serves (a client is served on
// the address its STATUS names, right then), RELOADING=1 with the
// monotonic time of the reload and READY=1 again around a SIGHUP, and
// STOPPING=1 on SIGTERM, each from its own pid; with an abstract socket
// name ('@') too.
func TestNotifyLifecycle(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, sock string }{
		{"path", filepath.Join(t.TempDir(), "notify")},
		{"abstract", fmt.Sprintf("@sluice-notify-test-%d", os.Getpid())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := listenManager(t, tc.sock)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // safety net
			defer cancel()
			// Two listener sockets, one address: STATUS names it once.
			cmd := sluiceCmd(ctx, "--listen", "127.0.0.1:0", "--listeners", "2", "--drain-timeout", "1s")
			cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+tc.sock)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			pid := cmd.Process.Pid
			vals := m.expect(t, pid, "READY=1", "STATUS=*")
			addr, ok := strings.CutPrefix(vals["STATUS"], "serving on ")
			if !ok {
				t.Fatalf("STATUS=%s, want serving on ADDR", vals["STATUS"])
			}
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				t.Fatalf("READY=1, but %s: %v", addr, err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			mustWrite(t, c, []byte{5, 1, 0})
			expect(t, c, []byte{5, 0})
			c.Close()

			before := monotonicNow(t)
			cmd.Process.Signal(syscall.SIGHUP)
			vals = m.expect(t, pid, "RELOADING=1", "MONOTONIC_USEC=*")
			if us, err := strconv.ParseInt(vals["MONOTONIC_USEC"], 10, 64); err != nil || us < before || us > monotonicNow(t) {
				t.Errorf("MONOTONIC_USEC=%s, want the time of the reload, between %d and now", vals["MONOTONIC_USEC"], before)
			}
			m.expect(t, pid, "READY=1", "STATUS=serving on "+addr)
			cmd.Process.Signal(syscall.SIGTERM)
			m.expect(t, pid, "STOPPING=1", "STATUS=draining")
			if err := cmd.Wait(); err != nil {
				t.Fatalf("after SIGTERM: %v, want exit 0", err)
			}
		})
	}
}

// TestNotifyWorkers: with --workers, the parent alone speaks to the
// manager (the workers do not inherit NOTIFY_SOCKET), and READY=1 comes
// once every worker listens: then the kernel lists one listening socket
// per worker on the port.
func TestNotifyWorkers(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "notify")
	m := listenManager(t, sock)
	port := freePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // safety net
	defer cancel()
	const workers = 2
	cmd := sluiceCmd(ctx, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--workers", strconv.Itoa(workers), "--drain-timeout", "1s")
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	pid := cmd.Process.Pid
	m.expect(t, pid, "READY=1", fmt.Sprintf("STATUS=serving with %d workers", workers))
	if n := listeningOn(t, port); n != workers {
		t.Fatalf("READY=1 with %d sockets listening on port %d, want %d", n, port, workers)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	m.expect(t, pid, "RELOADING=1", "MONOTONIC_USEC=*")
	m.expect(t, pid, "READY=1", fmt.Sprintf("STATUS=serving with %d workers", workers))
	cmd.Process.Signal(syscall.SIGTERM)
	m.expect(t, pid, "STOPPING=1", "STATUS=draining")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v, want exit 0", err)
	}
}

// listeningOn counts the IPv4 TCP sockets listening on port
// (/proc/net/tcp, state 0A).
func listeningOn(t *testing.T, port int) int {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 3 && fields[3] == "0A" && strings.HasSuffix(fields[1], fmt.Sprintf(":%04X", port)) {
			n++
		}
	}
	return n
}
