//go:build !linux

package relay

import (
	"net"
	"sync"
)

var datagramBufs = sync.Pool{New: func() any { return new([maxDatagram + 64]byte) }}

// readDatagrams reads datagrams from c one at a time, each at offset
// headroom of a pooled buffer, and hands them to handle, until a read fails.
func readDatagrams(c *net.UDPConn, headroom int, handle handleFunc) error {
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
