package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/tune"
)

// bareListener listens on loopback with tune's defaults and returns the
// listener and the raw conn newBareAccept takes, both closed at cleanup.
func bareAccepting(t testing.TB) (*net.TCPListener, *os.File) {
	t.Helper()
	o := &tune.Options{}
	ls, err := o.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := ls[0]
	t.Cleanup(func() { l.Close() })
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return l, f
}

// acceptBare dials l and accepts the connection bare.
func acceptBare(t testing.TB, l *net.TCPListener, f *os.File) (*client, *net.TCPConn) {
	t.Helper()
	d, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	peer := d.(*net.TCPConn)
	t.Cleanup(func() { peer.Close() })
	peer.SetDeadline(time.Now().Add(10 * time.Second))
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	c, err := newBareAccept(rc).accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if want := peer.LocalAddr().(*net.TCPAddr).AddrPort(); c.peer != want || c.addr() != want.String() {
		t.Errorf("peer %v (%s), want %v", c.peer, c.addr(), want)
	}
	return c, peer
}

// TestAcceptFd: a bare accept gives a non-blocking, close-on-exec socket
// that inherited TCP_NODELAY from its listener, and reads and writes on it
// need no poller while data is there.
func TestAcceptFd(t *testing.T) {
	t.Parallel()
	l, f := bareAccepting(t)
	c, peer := acceptBare(t, l, f)
	if fl, err := unix.FcntlInt(uintptr(c.fd), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Errorf("F_GETFL %#x, %v; want O_NONBLOCK", fl, err)
	}
	if fl, err := unix.FcntlInt(uintptr(c.fd), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
		t.Errorf("F_GETFD %#x, %v; want FD_CLOEXEC", fl, err)
	}
	if v, err := unix.GetsockoptInt(c.fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v != 1 {
		t.Errorf("TCP_NODELAY %d, %v; want 1, from the listener", v, err)
	}
	if _, err := peer.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(peer, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v", b, err)
	}
	if c.f != nil {
		t.Error("a read of data already there registered the socket with the poller")
	}
	if fd, err := c.takeFd(); err != nil || fd < 0 || c.fd != -1 {
		t.Fatalf("takeFd %d, %v; client fd %d after", fd, err, c.fd)
	} else {
		unix.Close(fd)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close after takeFd: %v; want nothing to do", err)
	}
}

// TestClientWaits: a read with nothing to read waits through the poller,
// within the deadline, and the socket then still hands over bare (takeFd)
// or adopted into package net (conn), where it keeps relaying.
func TestClientWaits(t *testing.T) {
	t.Parallel()
	l, f := bareAccepting(t)
	c, peer := acceptBare(t, l, f)
	c.SetDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read of nothing: %v; want os.ErrDeadlineExceeded", err)
	}
	if c.f == nil {
		t.Fatal("the read that had to wait did not register with the poller")
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go peer.Write([]byte{1})
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("read after the wait: %v", err)
	}
	fd, err := c.takeFd()
	if err != nil {
		t.Fatal(err)
	}
	if c.f != nil {
		t.Error("takeFd left the poller's file open")
	}
	n, err := unix.Write(fd, []byte{2})
	if n != 1 || err != nil {
		t.Fatalf("write on the taken descriptor: %d, %v", n, err)
	}
	unix.Close(fd)
	if _, err := io.ReadFull(peer, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}

	c2, peer2 := acceptBare(t, l, f)
	tc, err := c2.conn()
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := c2.conn(); again != tc {
		t.Error("a second conn adopted the socket again")
	}
	if got := tc.RemoteAddr().(*net.TCPAddr).AddrPort(); got != c2.peer {
		t.Errorf("adopted conn's peer %v, want %v", got, c2.peer)
	}
	if _, err := peer2.Write([]byte{3}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c2, make([]byte, 1)); err != nil {
		t.Fatalf("read through the adopted conn: %v", err)
	}
	c2.Close()
	if _, err := peer2.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("peer after Close: %v; want EOF", err)
	}
}
