package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sendFlags sends b on c with send(2) flags (MSG_OOB: its last byte urgent).
func sendFlags(t *testing.T, c *net.TCPConn, b string, flags int) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), []byte(b), flags, nil)
		return serr != unix.EAGAIN
	}); err != nil || serr != nil {
		t.Fatalf("send %q: %v, %v", b, err, serr)
	}
}

// fullListener returns the address of a loopback TCP listener with a
// backlog of 0 that never accepts, after filling its accept queue: Linux
// drops SYNs to a listener whose queue is full (tcp_abort_on_overflow=0),
// so a connect to it hangs until the caller gives up.
func fullListener(t *testing.T) netip.AddrPort {
	t.Helper()
	_, addr := fullListenerFd(t)
	return addr
}

// fullListenerFd is fullListener with the listener's descriptor, to accept
// from: once one queued connection is taken, the kernel's retransmission of
// a dropped SYN (a second after the first) gets in.
func fullListenerFd(t *testing.T) (int, netip.AddrPort) {
	t.Helper()
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_abort_on_overflow"); err == nil && len(b) > 0 && b[0] != '0' {
		t.Skip("net.ipv4.tcp_abort_on_overflow is on: a full accept queue resets instead of dropping SYNs")
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4(sa.(*unix.SockaddrInet4).Addr), uint16(sa.(*unix.SockaddrInet4).Port))
	// Fill the queue: connects succeed until it is full, then one hangs.
	for range 8 {
		c, err := net.DialTimeout("tcp", addr.String(), 300*time.Millisecond)
		if err != nil {
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				return fd, addr
			}
			t.Fatalf("filling the accept queue: %v", err)
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("%v accepted 8 connections with a backlog of 0", addr)
	return -1, addr
}

// synSent waits until a socket of this process's namespace is in SYN_SENT
// towards addr (IPv4), as /proc/net/tcp shows: a connect in progress.
func synSent(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	port := fmt.Sprintf(":%04X", addr.Port())
	found := waitFor(10*time.Second, func() bool {
		b, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// rem_address is HEXIP:HEXPORT; state 02 is SYN_SENT.
			if f := strings.Fields(line); len(f) > 3 && f[3] == "02" && strings.HasSuffix(f[2], port) {
				return true
			}
		}
		return false
	})
	if !found {
		t.Fatalf("no connect in progress to %v", addr)
	}
}

// TestClientLeavesPendingDial: a client that leaves while its CONNECT's
// dial is still pending (its target's SYNs dropped) ends the dial and its
// session then, or from a second into the dial when it left before, not at
// the dial timeout (a minute here), whether it closes or resets, to an
// address or to a name; the access log and sluice_sessions_total say why,
// and its one place under --max-sessions 1 is given back (leavePendingDials,
// which TestNetClientLeavesPendingDial runs with --net-sockets). A client
// that half-closes after bytes for the target is not leaving: its dial goes
// on, and the bytes and its FIN reach the target once it accepts. Not
// parallel: it counts the whole process.
func TestClientLeavesPendingDial(t *testing.T) {
	var log syncBuffer
	at := leavePendingDials(t, &log)
	if got := strings.Count(log.String(), errClientGone.Error()); got != 6 {
		t.Errorf("%d access log lines say %q; want 6\n%s", got, errClientGone, log.String())
	}

	// The bytes read with the request (client.sent), or queued behind it
	// when the FIN comes (a peek).
	for _, how := range halfCloses {
		t.Run("half-close-with-data/"+how, func(t *testing.T) {
			halfCloseWithData(t, at, how)
		})
	}
}

// halfCloses are halfCloseWithData's ways to send the bytes.
var halfCloses = []string{"pipelined", "during the dial", "behind an urgent byte"}

// halfCloseWithData has a client of addr send bytes for its CONNECT's target
// (how: one of halfCloses) and half-close while the dial is pending, and
// checks that the dial goes on and the bytes and the FIN reach the target.
func halfCloseWithData(t *testing.T, addr string, how string) {
	lfd, target := fullListenerFd(t)
	c := dialSluice(t, addr)
	switch how {
	case "pipelined":
		mustWrite(t, c, append(connectReq(target), "early"...))
	case "during the dial", "behind an urgent byte":
		mustWrite(t, c, connectReq(target))
		synSent(t, target)
		if how == "behind an urgent byte" {
			// SIOCINQ stops at the mark, and counted nothing queued;
			// the relay passes the stream, not the urgent byte.
			sendFlags(t, c, "!", unix.MSG_OOB)
		}
		mustWrite(t, c, []byte("early"))
	default:
		t.Fatalf("halfCloseWithData %q", how)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	synSent(t, target)
	up := acceptRetried(t, lfd)
	defer up.Close()
	up.SetDeadline(time.Now().Add(10 * time.Second))
	if got, err := io.ReadAll(up); string(got) != "early" || err != nil {
		t.Fatalf("target read %q, %v; want the client's early bytes, then its FIN", got, err)
	}
	mustWrite(t, up, []byte("late"))
	up.Close()
	expect(t, c, []byte{5, 0})
	if rep, _ := readReply(t, c); rep != 0 {
		t.Fatalf("REP = %#02x; want success", rep)
	}
	expect(t, c, []byte("late"))
}

// TestTargetNeverAccepts sends CONNECT to a target whose SYNs are dropped:
// with --dial-timeout 500ms the client gets 0x06 TTL expired, then a close,
// and nothing is left behind. Not parallel: it counts the whole process.
func TestTargetNeverAccepts(t *testing.T) {
	addr, _ := startSluice(t, "--dial-timeout", "500ms")
	target := fullListener(t)
	noLeak(t, func(t *testing.T) {
		c := dialSluice(t, addr)
		start := time.Now()
		mustWrite(t, c, connectReq(target))
		expect(t, c, []byte{5, 0})
		if rep, _ := readReply(t, c); rep != 0x06 {
			t.Fatalf("REP = %#02x after %v, want 0x06 TTL expired", rep, time.Since(start))
		}
		if d := time.Since(start); d < 450*time.Millisecond {
			t.Errorf("0x06 after %v, before the 500ms dial timeout", d)
		}
		expectEnd(t, c, 10*time.Second)
		c.Close()
	})
}

// TestClientResetsAfterHalfClose: a client that half-closed after bytes for
// the target (pipelined, or queued when its FIN came) is not leaving, and its
// dial goes on; but when it then resets while the dial is still pending, it
// is leaving, as any reset is: its dial and its session end then, not at the
// dial timeout (a minute here). The reset comes once the waiter has taken the
// FIN for a half-close (the watch it came under ended). Not parallel: it
// counts the whole process.
func TestClientResetsAfterHalfClose(t *testing.T) {
	var log syncBuffer
	addr, inst := startSluiceConfig(t, func(cfg *config) { cfg.watchAfter = -1 }, &log, "--dial-timeout", "60s")
	w := inst.srv.waiter
	if w == nil {
		t.Skip("no waiter")
	}
	for _, pipelined := range []bool{true, false} {
		target := fullListener(t) // open to the test's end, as in TestClientLeavesPendingDial
		t.Run(fmt.Sprintf("pipelined=%v", pipelined), func(t *testing.T) {
			noLeak(t, func(t *testing.T) {
				c := dialSluice(t, addr)
				req := connectReq(target)
				if pipelined {
					req = append(req, "early"...)
				}
				mustWrite(t, c, req)
				synSent(t, target)
				id := watchID(t, w)
				if !pipelined {
					mustWrite(t, c, []byte("early"))
				}
				if err := c.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				if !waitFor(10*time.Second, func() bool {
					w.mu.Lock()
					defer w.mu.Unlock()
					return w.parked[id] == nil
				}) {
					t.Fatal("the waiter did not take the client's FIN")
				}
				c.SetLinger(0)
				c.Close()
			})
		})
	}
	if got := strings.Count(log.String(), errClientGone.Error()); got != 2 {
		t.Errorf("%d access log lines say %q; want 2\n%s", got, errClientGone, log.String())
	}
}

// watchID waits until w holds exactly one watch (a pending dial's client,
// waiter.watch) and returns its id.
func watchID(t *testing.T, w *waiter) uint64 {
	t.Helper()
	var id uint64
	if !waitFor(10*time.Second, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		id = 0
		for k, c := range w.parked {
			if c.abort == nil || id != 0 {
				return false
			}
			id = k
		}
		return id != 0
	}) {
		t.Fatal("no watch of the pending dial's client")
	}
	return id
}

// acceptRetried makes room in fullListenerFd's lfd for a pending dial's
// retransmitted SYN (it accepts and closes the filler connection), waits
// up to 10 s for the dial's connection to be queued, and accepts it.
func acceptRetried(t *testing.T, lfd int) net.Conn {
	t.Helper()
	if nfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC); err == nil {
		unix.Close(nfd) // a filler: room for the retransmitted SYN
	}
	if err := unix.SetNonblock(lfd, true); err != nil {
		t.Fatal(err)
	}
	p := []unix.PollFd{{Fd: int32(lfd), Events: unix.POLLIN}}
	if n, err := unix.Poll(p, 10_000); n != 1 || err != nil {
		t.Fatalf("the target accepted nothing in 10 s (%v): the dial did not go on", err)
	}
	nfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(nfd), "target")
	up, err := net.FileConn(f) // a duplicate
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	return up
}
