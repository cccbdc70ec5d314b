//go:build unix

package relay

import (
	"os"
	"syscall"
)

// copier carries one direction of the plain path into its RawConn callback,
// a method value made once, so reading allocates nothing.
type copier struct {
	r    *Relay
	bp   *[]byte // held only while data is arriving
	n    int     // bytes the last read returned; 0 with err nil is EOF
	err  error
	read func(fd uintptr) bool
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
	c := &copier{r: r}
	c.read = c.readFrom
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
			return h.dst.CloseWrite()
		}
		w, err := h.dst.Write((*c.bp)[:c.n])
		h.moved(w)
		if err != nil {
			return err
		}
	}
}
