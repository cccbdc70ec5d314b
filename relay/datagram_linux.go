//go:build linux

package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchSlots is how many datagrams one recvmmsg(2) call may return.
const batchSlots = 8

// slotBytes holds the largest datagram behind the largest headroom.
const slotBytes = maxDatagram + 64

// batch is the scratch of one recvmmsg call: a message header, an iovec, a
// source address and a full-size buffer per slot. Batches are pooled and
// taken only while a socket has datagrams waiting, so an idle association
// holds none.
type batch struct {
	hdrs  [batchSlots]unix.Mmsghdr
	iovs  [batchSlots]unix.Iovec
	names [batchSlots]unix.RawSockaddrInet6 // large enough for IPv4 too
	bufs  [batchSlots][slotBytes]byte
}

var batches = sync.Pool{New: func() any { return new(batch) }}

// arm points every slot at its buffer (at offset headroom) and address, as
// recvmmsg expects them before each call.
func (b *batch) arm(headroom int) {
	for i := range b.hdrs {
		b.iovs[i].Base = &b.bufs[i][headroom]
		b.iovs[i].SetLen(slotBytes - headroom)
		h := &b.hdrs[i]
		h.Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Hdr.Namelen = unix.SizeofSockaddrInet6
		h.Hdr.Iov = &b.iovs[i]
		h.Hdr.SetIovlen(1)
		h.Len = 0
	}
}

// from returns slot i's source address.
func (b *batch) from(i int) netip.AddrPort {
	sa := &b.names[i]
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), ntohs(sa4.Port))
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), ntohs(sa.Port))
	}
	return netip.AddrPort{}
}

// ntohs turns a port as the kernel stores it (network byte order) into a
// number.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return binary.BigEndian.Uint16(b[:])
}

// batchReader reads a socket's datagrams in batches. Its callback is a
// method value made once, so reading allocates nothing.
type batchReader struct {
	headroom int
	b        *batch // held only while datagrams are waiting
	n        int    // datagrams the last recvmmsg returned
	err      error
	recv     func(fd uintptr) bool
}

// recvmmsg is the RawConn.Read callback: one recvmmsg call, taking a batch
// from the pool if none is held. On EAGAIN the batch goes back to the pool
// before the runtime poller waits, so a socket that waits holds nothing. The
// call is raw (MSG_DONTWAIT: it cannot block), for the reason sender gives.
func (r *batchReader) recvmmsg(fd uintptr) bool {
	if r.b == nil {
		r.b = batches.Get().(*batch)
	}
	r.b.arm(r.headroom)
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.b.hdrs[0])), batchSlots,
			unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			r.n, r.err = int(n), nil
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			batches.Put(r.b)
			r.b = nil
			return false
		}
		r.n, r.err = 0, os.NewSyscallError("recvmmsg", e)
		return true
	}
}

// readDatagrams reads datagrams from c with recvmmsg, up to batchSlots per
// call, each at offset headroom of its slot, and hands them to handle, until
// a read fails. Invariant: r.b is held only between a recvmmsg that returned
// datagrams and the next one that finds none.
func readDatagrams(c *net.UDPConn, headroom int, handle handleFunc) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	r := &batchReader{headroom: headroom}
	r.recv = r.recvmmsg
	defer func() {
		if r.b != nil {
			batches.Put(r.b)
		}
	}()
	for {
		if err := rc.Read(r.recv); err != nil {
			return err
		}
		if r.err != nil {
			return r.err
		}
		for i := range r.n {
			h := &r.b.hdrs[i]
			if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
				continue // cannot happen: every slot holds the largest datagram
			}
			handle(r.b.bufs[i][:], headroom, int(h.Len), r.b.from(i))
		}
	}
}

// sender sends datagrams on one UDP socket with raw sendto calls, for one
// direction of an association (one goroutine). Package net's
// WriteToUDPAddrPort makes a system call that tells the runtime, and one
// made after the process had gone idle wakes the runtime's sysmon, which
// then polls every 20 µs for a millisecond or more: at 70,000 datagrams a
// second each way, sysmon took 10 % of the relay's samples. The socket is
// non-blocking; a send that would block waits in the runtime poller
// (RawConn.Write), as package net's would. Its callback is a method value
// made once, so sending allocates nothing.
type sender struct {
	c     *net.UDPConn
	rc    syscall.RawConn
	inet6 bool // the socket is AF_INET6: IPv4 destinations go v4-mapped
	p     []byte
	sa    unix.RawSockaddrInet6 // large enough for IPv4 too
	salen uintptr
	err   error
	fn    func(fd uintptr) bool
}

func newSender(c *net.UDPConn) *sender {
	s := &sender{c: c}
	rc, err := c.SyscallConn()
	if err != nil {
		return s // send falls back to package net
	}
	var domain int
	var derr error
	if err := rc.Control(func(fd uintptr) {
		domain, derr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	}); err != nil || derr != nil {
		return s
	}
	s.rc, s.inet6 = rc, domain == unix.AF_INET6
	s.fn = s.sendto
	return s
}

// send sends p to dst, as c.WriteToUDPAddrPort(p, dst) would.
func (s *sender) send(p []byte, dst netip.AddrPort) error {
	a := dst.Addr()
	switch {
	case s.rc == nil || !dst.IsValid() || a.Zone() != "" || !s.inet6 && !a.Unmap().Is4():
		// No raw path; or package net's own answer (no address, an
		// IPv6 destination on an IPv4 socket); or a scoped address,
		// whose zone package net turns into an interface index.
		_, err := s.c.WriteToUDPAddrPort(p, dst)
		return err
	case s.inet6:
		s.sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&s.sa.Port))[:], dst.Port())
		s.salen = unix.SizeofSockaddrInet6
	default:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&s.sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Unmap().As4()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:], dst.Port())
		s.salen = unix.SizeofSockaddrInet4
	}
	s.p, s.err = p, nil
	err := s.rc.Write(s.fn)
	s.p = nil
	if err != nil {
		return err
	}
	return s.err
}

// sendto is the RawConn.Write callback: one sendto call; false on EAGAIN,
// so that the runtime poller waits until the socket is writable.
func (s *sender) sendto(fd uintptr) bool {
	var b unsafe.Pointer
	if len(s.p) > 0 {
		b = unsafe.Pointer(&s.p[0])
	}
	for {
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(b), uintptr(len(s.p)), 0,
			uintptr(unsafe.Pointer(&s.sa)), s.salen)
		switch e {
		case 0:
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		s.err = os.NewSyscallError("sendto", e)
		return true
	}
}
