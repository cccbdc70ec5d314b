//go:build unix

package relay

import (
	"io"
	"os"
	"syscall"
)

// copier carries one direction of the plain path into its RawConn
// callbacks, method values made once, so moving bytes allocates nothing.
type copier struct {
	r     *Relay
	h     *half
	bp    *[]byte // held only while data is arriving
	n     int     // bytes the last read returned; 0 with err nil is EOF
	err   error
	out   []byte // bytes read and not yet written
	read  func(fd uintptr) bool
	write func(fd uintptr) bool
}

// readFrom is the src RawConn.Read callback: one read(2) into the buffer,
// taken from the pool if none is held. On EAGAIN the buffer goes back to the
// pool before the runtime poller waits, so a direction that waits holds no
// buffer, as with splice's pipes.
func (c *copier) readFrom(fd uintptr) bool {
	if c.bp == nil {
		c.bp = c.r.getBuf()
	}
	for {
		n, err := syscall.Read(int(fd), *c.bp)
		switch err {
		case nil:
			c.n, c.err = n, nil
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			c.r.putBuf(c.bp)
			c.bp = nil
			return false
		}
		c.n, c.err = 0, os.NewSyscallError("read", err)
		return true
	}
}

// writeTo is the dst RawConn.Write callback: write(2) until c.out is
// written, each call's bytes counted as they go (h.moved), so that the idle
// watchdog sees a slow destination take them; a write waits in the runtime
// poller on EAGAIN. Package net's Write would report the whole buffer only
// once the last of it went out, which a destination reading slowly takes
// longer than an idle timeout to allow.
func (c *copier) writeTo(fd uintptr) bool {
	for len(c.out) > 0 {
		n, err := syscall.Write(int(fd), c.out)
		if n > 0 {
			c.out = c.out[n:]
			c.h.moved(n)
			continue
		}
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		case nil:
			err = io.ErrNoProgress // cannot happen for a write of bytes
		}
		c.err = os.NewSyscallError("write", err)
		return true
	}
	return true
}

// copyHalf moves h.src to h.dst with plain read and write calls through a
// pooled buffer, then half-closes h.dst on EOF. It does not use io.Copy,
// which would take the ReadFrom/splice path. Invariant: at the top of each
// iteration every byte read so far has been written to h.dst, so the buffer,
// when held, is free.
func (r *Relay) copyHalf(h *half) error {
	src, err := h.src.SyscallConn()
	if err != nil {
		return err
	}
	dst, err := h.dst.SyscallConn()
	if err != nil {
		return err
	}
	c := &copier{r: r, h: h}
	c.read, c.write = c.readFrom, c.writeTo
	defer func() {
		if c.bp != nil {
			r.putBuf(c.bp)
		}
	}()
	for {
		if err := src.Read(c.read); err != nil {
			return err
		}
		if c.err != nil {
			return c.err
		}
		if c.n == 0 {
			return closeWrite(h.dst)
		}
		c.out = (*c.bp)[:c.n]
		if err := dst.Write(c.write); err != nil {
			return err
		}
		if c.err != nil {
			return c.err
		}
	}
}
