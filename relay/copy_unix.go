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
	if hook := testHookRead; hook != nil {
		hook(c.h.src)
	}
	if c.bp == nil {
		c.bp = c.r.getBuf()
	}
	for tries := 0; ; {
		n, err := readSock(int(fd), *c.bp)
		switch err {
		case nil:
			c.n, c.err = n, nil
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			// The runtime poller does not report urgent data, so each
			// EAGAIN is checked for a read cut short at the mark (one
			// ioctl), as a splice that finds nothing is (passMark).
			if cut, _ := cutAtMark(int(fd)); cut && tries < markRetries {
				tries++
				continue
			}
			c.r.putBuf(c.bp)
			c.bp = nil
			return false
		}
		c.n, c.err = 0, os.NewSyscallError("read", err)
		return true
	}
}

// markRetries bounds the reads made again at a mark (cutAtMark): each one
// is cut short only by another signal that came in the microseconds since
// the last, so the bound is never met; it is there so that no misreading
// of the kernel's ways can turn into a busy loop.
const markRetries = 8

// readSock is read(2) of a socket, with the test hook in front of it.
func readSock(fd int, b []byte) (int, error) {
	if cutByTest(fd) {
		return 0, syscall.EAGAIN
	}
	return syscall.Read(fd, b)
}

// testHookCutAtMark, when a test sets it, is asked before each read of a
// socket that may be at its urgent mark: true makes the read answer EAGAIN
// without reading, as Linux does at the mark when the reading thread has a
// signal pending (cutAtMark), which no test can arrange.
var testHookCutAtMark func(fd int) bool

// cutByTest reports whether the test hook cuts this read short.
func cutByTest(fd int) bool {
	h := testHookCutAtMark
	return h != nil && h(fd)
}

// writeTo is the dst RawConn.Write callback: write(2) until c.out is
// written, each call's bytes counted as they go (h.moved), so that the idle
// watchdog sees a slow destination take them; a write waits in the runtime
// poller on EAGAIN (half.stall). Package net's Write would report the whole
// buffer only once the last of it went out, which a destination reading
// slowly takes longer than an idle timeout to allow.
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
			c.h.stall()
			return false
		case nil:
			err = io.ErrNoProgress // cannot happen for a write of bytes
		}
		if hook := testHookTaken; hook != nil {
			hook(c.h.dst) // the write took dst's error, if one was pending
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
		h.dropped = len(c.out) > 0
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
			return h.passEOF()
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
