package main

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"sluice/tune/netnstest"
)

// TestHalfOpenTarget puts sluice in one network namespace and the target in
// another, joined by a veth pair (10.250.0.1 - 10.250.0.2, private to the
// two namespaces), starts two sessions, then takes the target's link down
// so that nothing from sluice is acknowledged and the target never sends a
// FIN or RST. A session that keeps sending must end by --user-timeout; an
// idle one by TCP keepalive. Each is ended within a bound that the kernel's
// own retransmission limits (minutes) would blow, its client is closed, and
// sluice's sockets return to their baseline.
func TestHalfOpenTarget(t *testing.T) {
	netnstest.Need(t)
	t.Parallel()
	nsS, nsT, vethS, vethT := netnstest.Veth(t, "s", "t")
	netnstest.IP(t, "-n", nsS, "addr", "add", "10.250.0.1/30", "dev", vethS)
	netnstest.IP(t, "-n", nsT, "addr", "add", "10.250.0.2/30", "dev", vethT)
	for _, ns := range [][2]string{{nsS, vethS}, {nsT, vethT}} {
		netnstest.IP(t, "-n", ns[0], "link", "set", "lo", "up")
		netnstest.IP(t, "-n", ns[0], "link", "set", ns[1], "up")
	}

	// The target: an echo server in its namespace.
	var target net.Listener
	netnstest.In(t, nsT, func() (err error) { target, err = net.Listen("tcp", "10.250.0.2:0"); return err })
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
		netnstest.In(t, nsS, func() (err error) { c, err = net.Dial("tcp", p.addr); return err })
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

	netnstest.IP(t, "-n", nsT, "link", "set", vethT, "down")
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
