//go:build !linux

package relay

import (
	"net"
	"net/netip"
	"sync"
)

var datagramBufs = sync.Pool{New: func() any { return new([maxDatagram + 64]byte) }}

// readDatagrams reads datagrams from c one at a time, each at offset
// headroom of a pooled buffer, and hands them to handle, until a read fails.
func readDatagrams(c *net.UDPConn, headroom int, handle handleFunc, _ *sender) error {
	buf := datagramBufs.Get().(*[maxDatagram + 64]byte)
	defer datagramBufs.Put(buf)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf[headroom:])
		if err != nil {
			return err
		}
		handle(buf[:], headroom, n, from)
	}
}

// sender sends datagrams on one UDP socket through package net.
type sender struct {
	c    *net.UDPConn
	live *udpCount // where sent datagrams are counted; nil: nowhere
}

func newSender(c *net.UDPConn, live *udpCount) *sender { return &sender{c: c, live: live} }

// send sends p to dst at once (acct: see the Linux sender).
func (s *sender) send(p []byte, dst netip.AddrPort, acct int64) error {
	_, err := s.c.WriteToUDPAddrPort(p, dst)
	if err == nil {
		s.live.add(1, acct)
	}
	return err
}

// refused: what the Linux sender's flush refused; none here, where send
// sends at once.
func (s *sender) refused() (n, bytes int64) { return 0, 0 }
