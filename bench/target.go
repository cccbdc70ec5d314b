package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Target is what a target server does with each connection.
type Target int

// The target kinds. The sink reads until EOF, then writes the number of
// bytes it received as a big-endian uint64 and closes; the source writes the
// pattern of its seed until the peer goes away; the echo writes back what it
// reads until EOF.
const (
	Sink Target = iota + 1
	Source
	Echo
)

var targetNames = map[Target]string{Sink: "sink", Source: "source", Echo: "echo"}

// String returns the kind's name as the command line spells it.
func (t Target) String() string {
	if s, ok := targetNames[t]; ok {
		return s
	}
	return fmt.Sprintf("Target(%d)", int(t))
}

// ParseTarget returns the kind named s ("sink", "source" or "echo").
func ParseTarget(s string) (Target, error) {
	for t, name := range targetNames {
		if name == s {
			return t, nil
		}
	}
	return 0, fmt.Errorf("bench: unknown target kind %q", s)
}

// Server serves one target kind. The zero value is not usable: Kind must be set.
type Server struct {
	// Kind is what the server does with each connection.
	Kind Target
	// Seed selects the source's byte pattern; clients verify with the same seed.
	Seed uint64
	// BufBytes is the read and write size; 0 means 256 KiB (16 KiB for echo).
	BufBytes int
}

func (s *Server) bufBytes() int {
	switch {
	case s.BufBytes > 0:
		return s.BufBytes
	case s.Kind == Echo:
		return 16 << 10
	}
	return 256 << 10
}

// aLongTimeAgo is a deadline in the past, used to unblock pending I/O.
var aLongTimeAgo = time.Unix(1, 0)

// Serve accepts connections on ln until ctx ends, then closes ln, unblocks
// every connection it serves, waits for their goroutines and returns nil.
// Serve owns ln and every connection it accepts.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if _, ok := targetNames[s.Kind]; !ok {
		ln.Close()
		return fmt.Errorf("bench: serve: %v", s.Kind)
	}
	var src *pattern
	if s.Kind == Source {
		src = newPattern(s.Seed)
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of descriptors and similar: back off, the load ends soon.
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
			continue
		}
		wg.Add(1)
		go s.serveConn(ctx, &wg, c, src)
	}
}

// serveConn runs one connection's kind-specific loop and closes c.
func (s *Server) serveConn(ctx context.Context, wg *sync.WaitGroup, c net.Conn, src *pattern) {
	defer wg.Done()
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(aLongTimeAgo) })
	defer stop()
	buf := make([]byte, s.bufBytes())
	switch s.Kind {
	case Sink:
		serveSink(c, buf)
	case Source:
		serveSource(c, src.fill(buf))
	case Echo:
		serveEcho(c, buf)
	}
}

// serveSink reads until EOF, then answers with the byte count.
func serveSink(c net.Conn, buf []byte) {
	var n uint64
	for {
		m, err := c.Read(buf)
		n += uint64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return
		}
	}
	_, _ = c.Write(binary.BigEndian.AppendUint64(buf[:0], n))
}

// serveSource writes buf, whose length is a whole number of pattern periods,
// until a write fails.
func serveSource(c net.Conn, buf []byte) {
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// serveEcho writes back every read until EOF or an error.
func serveEcho(c net.Conn, buf []byte) {
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
