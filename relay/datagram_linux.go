//go:build linux

package relay

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"sluice/tune/rawsys"
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
	names [batchSlots]rawsys.Sockaddr
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
		h.Hdr.Name = (*byte)(b.names[i].Pointer())
		h.Hdr.Namelen = rawsys.SizeofSockaddr
		h.Hdr.Iov = &b.iovs[i]
		h.Hdr.SetIovlen(1)
		h.Len = 0
	}
}

// from returns slot i's source address.
func (b *batch) from(i int) netip.AddrPort { return b.names[i].AddrPort() }

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
		n, e := rawsys.Recvmmsg(int(fd), r.b.hdrs[:], unix.MSG_DONTWAIT)
		switch e {
		case nil:
			r.n, r.err = n, nil
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
// call, each at offset headroom of its slot, and hands them to handle, then
// flushes what handle queued on out, until a read fails. Invariant: r.b is
// held only between a recvmmsg that returned datagrams and the next one
// that finds none.
func readDatagrams(c *net.UDPConn, headroom int, handle handleFunc, out *sender) error {
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
		out.flush() // before the next recvmmsg reuses the buffers
	}
}

// sender sends datagrams on one UDP socket with raw sendmmsg calls
// (rawsys.Sendmmsg), for one direction of an association (one goroutine).
// Package net's WriteToUDPAddrPort makes a system call that tells the
// runtime, which wakes its sysmon (package rawsys says why that costs): at
// 70,000 datagrams a second each way, sysmon took 10 % of the relay's
// samples. send queues a datagram that the raw path can take; readDatagrams
// flushes the queue after each batch it read, while the batch's buffers,
// which the queue points into, are still unused: one system call for the
// batch instead of one per datagram. The socket is non-blocking; a send that
// would block waits in the runtime poller (RawConn.Write), as package net's
// would. Its callback is a method value made once, so sending allocates
// nothing.
type sender struct {
	c      *net.UDPConn
	rc     syscall.RawConn
	family int // the socket's: on AF_INET6, IPv4 destinations go v4-mapped
	fn     func(fd uintptr) bool

	// The queue: n datagrams, of which the current flush has sent done.
	hdrs [batchSlots]unix.Mmsghdr
	iovs [batchSlots]unix.Iovec
	sas  [batchSlots]rawsys.Sockaddr
	acct [batchSlots]int64 // what each adds to its direction's byte count
	n    int
	done int

	// Datagrams queued (so counted as relayed by the caller) that the
	// kernel refused, and their bytes as the caller counted them.
	failed      int64
	failedBytes int64

	queuedBytes int64     // what the queue's datagrams add to the byte count
	live        *udpCount // where sent datagrams are counted as they leave; nil: nowhere
}

// newSender returns a sender on c that counts what it sends in live (nil:
// nowhere).
func newSender(c *net.UDPConn, live *udpCount) *sender {
	s := &sender{c: c, live: live}
	rc, err := c.SyscallConn()
	if err != nil {
		return s // send falls back to package net
	}
	var domain int
	var derr error
	if err := rc.Control(func(fd uintptr) {
		domain, derr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	}); err != nil || derr != nil || domain != unix.AF_INET && domain != unix.AF_INET6 {
		return s
	}
	s.rc, s.family = rc, domain
	s.fn = s.sendmmsg
	return s
}

// send sends p to dst, as c.WriteToUDPAddrPort(p, dst) would, or queues it
// for flush; acct is what the datagram adds to the caller's byte count,
// taken back (failedBytes) if the kernel refuses it at the flush. p must
// stay unchanged until then.
func (s *sender) send(p []byte, dst netip.AddrPort, acct int64) error {
	if a := dst.Addr(); s.rc == nil || !dst.IsValid() || a.Zone() != "" || s.family == unix.AF_INET && !a.Unmap().Is4() {
		// No raw path; or package net's own answer (no address, an
		// IPv6 destination on an IPv4 socket); or a scoped address,
		// whose zone package net turns into an interface index. What
		// is queued goes first, in order.
		s.flush()
		_, err := s.c.WriteToUDPAddrPort(p, dst)
		if err == nil {
			s.live.add(1, acct)
		}
		return err
	}
	if s.n == batchSlots {
		s.flush()
	}
	i := s.n
	salen := s.sas[i].Set(dst, s.family)
	s.iovs[i].Base = nil
	if len(p) > 0 {
		s.iovs[i].Base = &p[0]
	}
	s.iovs[i].SetLen(len(p))
	h := &s.hdrs[i]
	h.Hdr.Name = (*byte)(s.sas[i].Pointer())
	h.Hdr.Namelen = uint32(salen)
	h.Hdr.Iov = &s.iovs[i]
	h.Hdr.SetIovlen(1)
	h.Len = 0
	s.acct[i] = acct
	s.queuedBytes += acct
	s.n++
	return nil
}

// flush sends what send queued and counts what left in s.live. A datagram
// the kernel refuses is counted in failed, and in s.live's refused; so are
// those left unsent when the socket fails.
func (s *sender) flush() {
	if s.n == 0 {
		return
	}
	s.done = 0
	failed, failedBytes := s.failed, s.failedBytes
	if err := s.rc.Write(s.fn); err != nil {
		for i := s.done; i < s.n; i++ {
			s.fail(i)
		}
	}
	s.live.add(int64(s.n)-(s.failed-failed), s.queuedBytes-(s.failedBytes-failedBytes))
	s.live.refuse(s.failed - failed)
	s.n, s.queuedBytes = 0, 0
	for i := range s.iovs {
		s.iovs[i].Base = nil // hold no reference to a batch's buffer
	}
}

// refused reports the queued datagrams the kernel refused, and their bytes
// as counted when they were queued.
func (s *sender) refused() (n, bytes int64) { return s.failed, s.failedBytes }

func (s *sender) fail(i int) {
	s.failed++
	s.failedBytes += s.acct[i]
}

// sendmmsg is the RawConn.Write callback: sendmmsg calls until the queue is
// sent; false on EAGAIN, so that the runtime poller waits until the socket
// is writable. A refused datagram is counted and skipped.
func (s *sender) sendmmsg(fd uintptr) bool {
	for s.done < s.n {
		k, e := rawsys.Sendmmsg(int(fd), s.hdrs[s.done:s.n], 0)
		switch e {
		case nil:
			s.done += k
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default: // the first datagram of the call was refused
			s.fail(s.done)
			s.done++
		}
	}
	return true
}
