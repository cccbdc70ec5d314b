//go:build linux

package relay

import (
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// pipe is one kernel pipe used as the splice buffer of one direction.
type pipe struct {
	rfd, wfd int // read and write ends, both O_NONBLOCK
	size     int // effective capacity in bytes, as the kernel reports it
	slots    int // pipe buffers: size in pages
	data     int // bytes in the pipe now
}

// maxPipeBytes is the largest size the kernel sets a pipe to (round_pipe_size).
const maxPipeBytes = 1 << 31

// newPipe makes a pipe and asks for want bytes of capacity (0: the kernel
// default). A refused size is not an error: the pipe keeps the size it got.
func newPipe(want int) (*pipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	p := &pipe{rfd: fds[0], wfd: fds[1]}
	size := 0
	// EPERM past fs.pipe-user-pages-soft or above fs.pipe-max-size:
	// keep what we have. Above 2 GiB every kernel refuses the size, but
	// fcntl takes it as 32 bits, so 4 GiB would come out as a page: not
	// asked for.
	if want > 0 && int64(want) <= maxPipeBytes {
		size, _ = unix.FcntlInt(uintptr(p.rfd), unix.F_SETPIPE_SZ, want)
	}
	if size <= 0 {
		var err error
		if size, err = unix.FcntlInt(uintptr(p.rfd), unix.F_GETPIPE_SZ, 0); err != nil || size <= 0 {
			size = os.Getpagesize() // a pipe holds at least one page
		}
	}
	p.size = size
	p.slots = max(size/os.Getpagesize(), 1)
	return p, nil
}

func (p *pipe) close() {
	unix.Close(p.rfd)
	unix.Close(p.wfd)
}

// pipePool keeps up to max idle, empty pipes for reuse, last in first out so
// that the pipe taken next is the one most recently warm. Its lock is held for
// a slice push or pop only.
type pipePool struct {
	want int // F_SETPIPE_SZ request; 0: kernel default
	max  int

	// refuse, set by tests, makes every get fail with EMFILE, as when no
	// descriptor is left and no pooled pipe is idle.
	refuse atomic.Bool

	mu     sync.Mutex
	free   []*pipe
	closed bool
}

func newPipePool(want, max int) *pipePool {
	return &pipePool{want: want, max: max}
}

// get returns an empty pipe, pooled or new.
func (pp *pipePool) get() (*pipe, error) {
	if pp.refuse.Load() {
		return nil, os.NewSyscallError("pipe2", unix.EMFILE)
	}
	pp.mu.Lock()
	if n := len(pp.free); n > 0 {
		p := pp.free[n-1]
		pp.free[n-1] = nil
		pp.free = pp.free[:n-1]
		pp.mu.Unlock()
		return p, nil
	}
	pp.mu.Unlock()
	return newPipe(pp.want)
}

// put gives p back. A pipe with bytes stuck in it, or one the pool has no
// room for, is closed instead.
func (pp *pipePool) put(p *pipe) {
	if p.data != 0 {
		p.close()
		return
	}
	pp.mu.Lock()
	if pp.closed || len(pp.free) >= pp.max {
		pp.mu.Unlock()
		p.close()
		return
	}
	pp.free = append(pp.free, p)
	pp.mu.Unlock()
}

// idle returns the number of pooled pipes.
func (pp *pipePool) idle() int {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return len(pp.free)
}

// trim closes the pooled pipes; the pool keeps working.
func (pp *pipePool) trim() int {
	pp.mu.Lock()
	free := pp.free
	pp.free = nil
	pp.mu.Unlock()
	for _, p := range free {
		p.close()
	}
	return len(free)
}

// close closes the pooled pipes; pipes given back later are closed too.
func (pp *pipePool) close() {
	pp.mu.Lock()
	free := pp.free
	pp.free, pp.closed = nil, true
	pp.mu.Unlock()
	for _, p := range free {
		p.close()
	}
}
