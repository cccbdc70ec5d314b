package rawsys

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestSockaddrSet checks the bytes Set writes against the kernel's layout,
// and that AddrPort reads them back.
func TestSockaddrSet(t *testing.T) {
	for _, tc := range []struct {
		name   string
		addr   string
		family int
		n      uintptr
		want   string // AddrPort's answer
		scope  uint32 // the scope id written
	}{
		{"ipv4", "192.0.2.7:4660", unix.AF_INET, unix.SizeofSockaddrInet4, "192.0.2.7:4660", 0},
		{"mapped on AF_INET", "[::ffff:192.0.2.7]:4660", unix.AF_INET, unix.SizeofSockaddrInet4, "192.0.2.7:4660", 0},
		{"ipv4 on AF_INET6", "192.0.2.7:4660", unix.AF_INET6, unix.SizeofSockaddrInet6, "[::ffff:192.0.2.7]:4660", 0},
		{"ipv6", "[2001:db8::1]:4660", unix.AF_INET6, unix.SizeofSockaddrInet6, "[2001:db8::1]:4660", 0},
		{"ipv6 zone by name", "[fe80::1%lo]:4660", unix.AF_INET6, unix.SizeofSockaddrInet6, "[fe80::1]:4660", 1},
		{"ipv6 zone by number", "[fe80::1%7]:4660", unix.AF_INET6, unix.SizeofSockaddrInet6, "[fe80::1]:4660", 7},
		{"ipv6 zone of no interface", "[fe80::1%nosuch0]:4660", unix.AF_INET6, unix.SizeofSockaddrInet6, "[fe80::1]:4660", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sa Sockaddr
			sa.raw.Scope_id = 99 // Set must clear what an earlier address left
			if n := sa.Set(netip.MustParseAddrPort(tc.addr), tc.family); n != tc.n {
				t.Fatalf("Set: length %d, want %d", n, tc.n)
			}
			raw := unsafe.Slice((*byte)(sa.Pointer()), SizeofSockaddr)
			if int(sa.raw.Family) != tc.family {
				t.Fatalf("family %d, want %d", sa.raw.Family, tc.family)
			}
			if !bytes.Equal(raw[2:4], []byte{0x12, 0x34}) { // 4660, network byte order
				t.Fatalf("port bytes % x, want 12 34", raw[2:4])
			}
			if tc.family == unix.AF_INET6 && sa.raw.Scope_id != tc.scope {
				t.Fatalf("scope id %d, want %d (none left over)", sa.raw.Scope_id, tc.scope)
			}
			if got := sa.AddrPort().String(); got != tc.want {
				t.Fatalf("AddrPort %s, want %s", got, tc.want)
			}
		})
	}
	var sa Sockaddr
	if ap := sa.AddrPort(); ap.IsValid() {
		t.Fatalf("AF_UNSPEC read as %v", ap)
	}
}

// listenLoopback is a non-blocking TCP listener on addr's loopback address
// and a kernel-chosen port, and that address.
func listenLoopback(t *testing.T, addr string) (int, netip.AddrPort) {
	t.Helper()
	ip := netip.MustParseAddr(addr)
	family := unix.AF_INET6
	var bind unix.Sockaddr = &unix.SockaddrInet6{Addr: ip.As16()}
	if ip.Is4() {
		family, bind = unix.AF_INET, &unix.SockaddrInet4{Addr: ip.As4()}
	}
	fd := socket(t, family, unix.SOCK_STREAM)
	if err := unix.Bind(fd, bind); err != nil {
		t.Skipf("no %s here: %v", addr, err)
	}
	if err := unix.Listen(fd, 8); err != nil {
		t.Fatal(err)
	}
	return fd, Getsockname(fd)
}

func socket(t *testing.T, family, typ int) int {
	t.Helper()
	fd, err := unix.Socket(family, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// connect connects a new non-blocking socket to addr with Connect, as
// tune.DialFd does: on loopback the second call tells established.
func connect(t *testing.T, addr netip.AddrPort) int {
	t.Helper()
	family := unix.AF_INET6
	if addr.Addr().Is4() {
		family = unix.AF_INET
	}
	fd := socket(t, family, unix.SOCK_STREAM)
	err := Connect(fd, addr)
	for err == unix.EINPROGRESS || err == unix.EALREADY || err == unix.EINTR {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(pfd, 5000); err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		err = Connect(fd, addr)
	}
	if err != nil && err != unix.EISCONN {
		t.Fatalf("connect to %v: %v", addr, err)
	}
	return fd
}

// TestStream drives a TCP connection on loopback through the package's
// calls alone, on IPv4 and IPv6: connect, accept, addresses, read, write,
// splice through a pipe, epoll and shutdown.
func TestStream(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			lfd, laddr := listenLoopback(t, host)
			if laddr.Addr().String() != host || laddr.Port() == 0 {
				t.Fatalf("listener at %v", laddr)
			}
			if _, _, err := Accept4(lfd); err != unix.EAGAIN {
				t.Fatalf("accept with none queued: %v, want EAGAIN", err)
			}
			cfd := connect(t, laddr)
			sfd, peer, err := Accept4(lfd)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Close(sfd) })
			if local := Getsockname(cfd); peer != local {
				t.Fatalf("accepted peer %v, client's own address %v", peer, local)
			}
			if fl, err := unix.FcntlInt(uintptr(sfd), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
				t.Fatalf("accepted socket not non-blocking: flags %#x, %v", fl, err)
			}

			buf := make([]byte, 64)
			if _, err := Read(sfd, buf); err != unix.EAGAIN {
				t.Fatalf("read with nothing sent: %v, want EAGAIN", err)
			}
			epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { Close(epfd) })
			ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(sfd)}
			if err := EpollCtl(epfd, unix.EPOLL_CTL_ADD, sfd, &ev); err != nil {
				t.Fatal(err)
			}
			events := make([]unix.EpollEvent, 4)
			if n, err := EpollPoll(epfd, events); n != 0 || err != nil {
				t.Fatalf("poll with nothing sent: %d, %v", n, err)
			}
			if n, err := Write(cfd, []byte("hello")); n != 5 || err != nil {
				t.Fatalf("write: %d, %v", n, err)
			}
			if n, err := EpollPoll(epfd, events); n != 1 || err != nil || events[0].Fd != int32(sfd) {
				t.Fatalf("poll after a write: %d, %v, fd %d (want %d)", n, err, events[0].Fd, sfd)
			}
			if err := EpollCtl(epfd, unix.EPOLL_CTL_DEL, sfd, nil); err != nil {
				t.Fatal(err)
			}

			// The bytes go on to the client through a pipe: socket to
			// pipe, pipe back into the accepted socket.
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { Close(p[0]); Close(p[1]) })
			flags := unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK
			if n, err := Splice(sfd, p[1], 64, flags); n != 5 || err != nil {
				t.Fatalf("splice socket to pipe: %d, %v", n, err)
			}
			if n, err := Splice(p[0], sfd, 64, flags); n != 5 || err != nil {
				t.Fatalf("splice pipe to socket: %d, %v", n, err)
			}
			if _, err := Splice(p[0], sfd, 64, flags); err != unix.EAGAIN {
				t.Fatalf("splice from an empty pipe: %v, want EAGAIN", err)
			}
			got := readAll(t, cfd, buf)
			if string(got) != "hello" {
				t.Fatalf("client read %q, want hello", got)
			}

			if err := Shutdown(cfd, unix.SHUT_WR); err != nil {
				t.Fatal(err)
			}
			if n, err := readWait(t, sfd, buf); n != 0 || err != nil {
				t.Fatalf("read after the peer's shutdown: %d, %v, want 0 (EOF)", n, err)
			}
			if err := Shutdown(-1, unix.SHUT_WR); err != unix.EBADF {
				t.Fatalf("shutdown(-1): %v, want EBADF", err)
			}
		})
	}
}

// readWait reads fd once it is readable.
func readWait(t *testing.T, fd int, buf []byte) (int, error) {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if _, err := unix.Poll(pfd, 5000); err != nil {
		t.Fatal(err)
	}
	return Read(fd, buf)
}

// readAll reads fd until 5 bytes came.
func readAll(t *testing.T, fd int, buf []byte) []byte {
	t.Helper()
	var got []byte
	for len(got) < 5 {
		n, err := readWait(t, fd, buf)
		if err != nil || n == 0 {
			t.Fatalf("read: %d, %v after %q", n, err, got)
		}
		got = append(got, buf[:n]...)
	}
	return got
}

// TestConnectRefused: a refused connect comes back as the kernel's errno.
// The port is held by a socket bound to it that does not listen, so no
// other process can take it meanwhile.
func TestConnectRefused(t *testing.T) {
	held := socket(t, unix.AF_INET, unix.SOCK_STREAM)
	if err := unix.Bind(held, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	to := Getsockname(held)
	fd := socket(t, unix.AF_INET, unix.SOCK_STREAM)
	err := Connect(fd, to)
	for err == unix.EINPROGRESS || err == unix.EALREADY {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(pfd, 5000); err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		err = Connect(fd, to)
	}
	if err != unix.ECONNREFUSED {
		t.Fatalf("connect to %v, bound but not listening: %v, want ECONNREFUSED", to, err)
	}
}

// TestDatagrams sends with Sendmmsg and receives with Recvmmsg on IPv4, IPv6
// and a dual-stack socket (IPv4 v4-mapped), and checks the source address
// recvmmsg stores in a Sockaddr.
func TestDatagrams(t *testing.T) {
	for _, tc := range []struct {
		name         string
		family, from int
		to           string
	}{
		{"ipv4", unix.AF_INET, unix.AF_INET, "127.0.0.1"},
		{"ipv6", unix.AF_INET6, unix.AF_INET6, "::1"},
		{"dual-stack to ipv4", unix.AF_INET, unix.AF_INET6, "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rfd := socket(t, tc.family, unix.SOCK_DGRAM)
			sfd := socket(t, tc.from, unix.SOCK_DGRAM)
			ip := netip.MustParseAddr(tc.to)
			var bind unix.Sockaddr = &unix.SockaddrInet6{Addr: ip.As16()}
			if tc.family == unix.AF_INET {
				bind = &unix.SockaddrInet4{Addr: ip.As4()}
			}
			if err := unix.Bind(rfd, bind); err != nil {
				t.Skipf("no %s here: %v", tc.to, err)
			}
			to := Getsockname(rfd)
			var dst Sockaddr
			n := dst.Set(to, tc.from)
			// Three in one sendmmsg (an empty one among them), two in
			// another.
			for _, msgs := range [][]string{{"one", "", "three"}, {"four", "five"}} {
				out := make([]unix.Mmsghdr, len(msgs))
				iovs := make([]unix.Iovec, len(msgs))
				for i, msg := range msgs {
					if msg != "" {
						iovs[i].Base = unsafe.StringData(msg)
					}
					iovs[i].SetLen(len(msg))
					out[i].Hdr.Name = (*byte)(dst.Pointer())
					out[i].Hdr.Namelen = uint32(n)
					out[i].Hdr.Iov = &iovs[i]
					out[i].Hdr.SetIovlen(1)
				}
				if sent, err := Sendmmsg(sfd, out, 0); sent != len(msgs) || err != nil {
					t.Fatalf("sendmmsg %v: %d sent, %v; want %d", to, sent, err, len(msgs))
				}
			}
			var (
				hdrs  [4]unix.Mmsghdr
				iovs  [4]unix.Iovec
				names [4]Sockaddr
				bufs  [4][64]byte
			)
			for i := range hdrs {
				iovs[i].Base = &bufs[i][0]
				iovs[i].SetLen(len(bufs[i]))
				hdrs[i].Hdr.Name = (*byte)(names[i].Pointer())
				hdrs[i].Hdr.Namelen = SizeofSockaddr
				hdrs[i].Hdr.Iov = &iovs[i]
				hdrs[i].Hdr.SetIovlen(1)
			}
			var got []string
			for len(got) < 5 {
				pfd := []unix.PollFd{{Fd: int32(rfd), Events: unix.POLLIN}}
				if _, err := unix.Poll(pfd, 5000); err != nil {
					t.Fatal(err)
				}
				m, err := Recvmmsg(rfd, hdrs[:], unix.MSG_DONTWAIT)
				if err != nil {
					t.Fatalf("recvmmsg after %q: %v", got, err)
				}
				for i := range m {
					got = append(got, string(bufs[i][:hdrs[i].Len]))
					from := names[i].AddrPort()
					if want := Getsockname(sfd); from.Port() != want.Port() || from.Addr().Unmap() != ip {
						t.Fatalf("datagram %d from %v, sender bound to port %d on %v", len(got), from, want.Port(), ip)
					}
				}
			}
			if want := []string{"one", "", "three", "four", "five"}; !slices.Equal(got, want) {
				t.Fatalf("received %q, want %q", got, want)
			}
			if _, err := Recvmmsg(rfd, hdrs[:], unix.MSG_DONTWAIT); err != unix.EAGAIN {
				t.Fatalf("recvmmsg with nothing queued: %v, want EAGAIN", err)
			}
		})
	}
}

// TestNoAlloc: the calls and the address codec allocate nothing.
func TestNoAlloc(t *testing.T) {
	lfd, laddr := listenLoopback(t, "127.0.0.1")
	cfd := connect(t, laddr)
	sfd, _, err := Accept4(lfd)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sfd)
	buf := make([]byte, 8)
	var sa Sockaddr
	allocs := testing.AllocsPerRun(100, func() {
		sa.Set(laddr, unix.AF_INET6)
		_ = sa.AddrPort()
		_ = Getsockname(cfd)
		Write(cfd, buf[:1])
		Read(sfd, buf) // EAGAIN at times: errors allocate nothing either
		Read(sfd, nil)
		Accept4(lfd) // EAGAIN
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run, want 0", allocs)
	}
}
