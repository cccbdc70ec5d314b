package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// needNetns skips (or, with SLUICE_REQUIRE_NETNS=1, fails) a test that needs
// root and iproute2 to build network namespaces.
func needNetns(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root to create network namespaces"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "needs ip (iproute2) to create network namespaces"
	}
	if why == "" {
		return
	}
	if os.Getenv("SLUICE_REQUIRE_NETNS") == "1" {
		t.Fatal(why + " (SLUICE_REQUIRE_NETNS=1)")
	}
	t.Skip(why)
}

// ipCmd runs ip with args and fails the test on error.
func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// vethNamespaces makes two network namespaces, named after a and b and this
// process, joined by a veth pair whose ends are named alike, and removes
// them when the test ends; the links are left down, without addresses.
func vethNamespaces(t *testing.T, a, b string) (nsA, nsB, vethA, vethB string) {
	t.Helper()
	id := os.Getpid() % 100000
	nsA, nsB = fmt.Sprintf("sluice-%s%d", a, id), fmt.Sprintf("sluice-%s%d", b, id)
	vethA, vethB = fmt.Sprintf("sl%s%d", a, id), fmt.Sprintf("sl%s%d", b, id)
	for _, ns := range []string{nsA, nsB} {
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	ipCmd(t, "link", "add", vethA, "netns", nsA, "type", "veth", "peer", "name", vethB, "netns", nsB)
	return nsA, nsB, vethA, vethB
}

// inNetns runs fn on an OS thread that has joined network namespace ns
// (created by ip netns add). Sockets fn creates belong to ns for life and
// may then be used from any goroutine. The thread is discarded afterwards.
func inNetns(t *testing.T, ns string, fn func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		done <- fn()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestHalfOpenTarget puts sluice in one network namespace and the target in
// another, joined by a veth pair (10.250.0.1 - 10.250.0.2, private to the
// two namespaces), starts two sessions, then takes the target's link down
// so that nothing from sluice is acknowledged and the target never sends a
// FIN or RST. A session that keeps sending must end by --user-timeout; an
// idle one by TCP keepalive. Each is ended within a bound that the kernel's
// own retransmission limits (minutes) would blow, its client is closed, and
// sluice's sockets return to their baseline.
func TestHalfOpenTarget(t *testing.T) {
	needNetns(t)
	t.Parallel()
	nsS, nsT, vethS, vethT := vethNamespaces(t, "s", "t")
	ipCmd(t, "-n", nsS, "addr", "add", "10.250.0.1/30", "dev", vethS)
	ipCmd(t, "-n", nsT, "addr", "add", "10.250.0.2/30", "dev", vethT)
	for _, ns := range [][2]string{{nsS, vethS}, {nsT, vethT}} {
		ipCmd(t, "-n", ns[0], "link", "set", "lo", "up")
		ipCmd(t, "-n", ns[0], "link", "set", ns[1], "up")
	}

	// The target: an echo server in its namespace.
	var target net.Listener
	inNetns(t, nsT, func() (err error) { target, err = net.Listen("tcp", "10.250.0.2:0"); return err })
	t.Cleanup(func() { target.Close() })
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go io.Copy(c, c)
		}
	}()
	targetAddr := target.Addr().(*net.TCPAddr).AddrPort()

	wrap := []string{"ip", "netns", "exec", nsS}
	userTimeout := spawnSluice(t, wrap, "--listeners", "1", "--user-timeout", "1s", "--keepalive=false")
	keepalive := spawnSluice(t, wrap, "--listeners", "1", "--keepalive-idle", "1s", "--keepalive-interval", "1s", "--keepalive-count", "2")
	var base [2]int
	for i, p := range []*sluiceProc{userTimeout, keepalive} {
		_, base[i] = procFDs(t, p.cmd.Process.Pid)
	}
	session := func(p *sluiceProc) net.Conn {
		var c net.Conn
		inNetns(t, nsS, func() (err error) { c, err = net.Dial("tcp", p.addr); return err })
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(30 * time.Second)) // safety net
		mustWrite(t, c, append(connectReq(targetAddr), "hello"...))
		expect(t, c, []byte{5, 0})
		if rep, _ := readReply(t, c); rep != 0 {
			t.Fatalf("CONNECT %v: REP = %#02x", targetAddr, rep)
		}
		expect(t, c, []byte("hello"))
		return c
	}
	sending, idle := session(userTimeout), session(keepalive)

	ipCmd(t, "-n", nsT, "link", "set", vethT, "down")
	cut := time.Now()
	go func() { // keeps data unacknowledged on sluice's upstream socket
		chunk := faultPattern(64 << 10)
		for {
			if _, err := sending.Write(chunk); err != nil {
				return
			}
		}
	}()
	const bound = 15 * time.Second
	for _, s := range []struct {
		name string
		c    net.Conn
		p    *sluiceProc
		base int
	}{{"--user-timeout 1s (sending)", sending, userTimeout, base[0]}, {"keepalive 1s+2x1s (idle)", idle, keepalive, base[1]}} {
		s.c.SetReadDeadline(cut.Add(bound))
		_, err := io.Copy(io.Discard, s.c)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: session still open %v after the target's link went down", s.name, bound)
			continue
		}
		t.Logf("%s: client closed %v after the target's link went down (%v)", s.name, time.Since(cut).Round(10*time.Millisecond), err)
		pid := s.p.cmd.Process.Pid
		if !waitFor(10*time.Second, func() bool { _, n := procFDs(t, pid); return n <= s.base }) {
			_, n := procFDs(t, pid)
			t.Errorf("%s: sluice holds %d sockets after the session ended, baseline %d", s.name, n, s.base)
		}
	}
}
