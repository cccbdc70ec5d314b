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
	p, _, err := openPipe(want)
	return p, err
}

// PipeSizeRefused makes one pipe as the relay's pool would for o, closes it,
// and reports the kernel's refusal of the size o asks for (Options.PipeBytes),
// with that size and the one a pipe keeps then: EPERM above fs.pipe-max-size
// without CAP_SYS_RESOURCE, or once the user's pipes hold
// fs.pipe-user-pages-soft pages. err is nil where the size is granted, none is
// asked for, or no pipe could be made to ask.
func PipeSizeRefused(o Options) (want, kept int, err error) {
	want = o.pipeBytes()
	p, refused, perr := openPipe(want)
	if perr != nil {
		return want, 0, nil
	}
	p.close()
	return want, p.size, refused
}

// openPipe is newPipe, and also returns the kernel's refusal of want (nil:
// granted, or not asked).
func openPipe(want int) (p *pipe, refused, err error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, nil, os.NewSyscallError("pipe2", err)
	}
	p = &pipe{rfd: fds[0], wfd: fds[1]}
	size := 0
	// EPERM past fs.pipe-user-pages-soft or above fs.pipe-max-size:
	// keep what we have. Above 2 GiB every kernel refuses the size, but
	// fcntl takes it as 32 bits, so 4 GiB would come out as a page: not
	// asked for.
	if want > 0 && int64(want) <= maxPipeBytes {
		size, refused = unix.FcntlInt(uintptr(p.rfd), unix.F_SETPIPE_SZ, want)
	}
	if size <= 0 {
		var err error
		if size, err = unix.FcntlInt(uintptr(p.rfd), unix.F_GETPIPE_SZ, 0); err != nil || size <= 0 {
			size = os.Getpagesize() // a pipe holds at least one page
		}
	}
	p.size = size
	p.slots = max(size/os.Getpagesize(), 1)
	return p, refused, nil
}

func (p *pipe) close() {
	unix.Close(p.rfd)
	unix.Close(p.wfd)
}

// grow asks the kernel again for want bytes of capacity; a refusal leaves p
// as it was. p must be empty: a pipe is never shrunk below the bytes it holds,
// but sizes are only ever raised here.
func (p *pipe) grow(want int) {
	if want <= 0 || int64(want) > maxPipeBytes || want <= p.size {
		return
	}
	if size, err := unix.FcntlInt(uintptr(p.rfd), unix.F_SETPIPE_SZ, want); err == nil && size > p.size {
		p.size = size
		p.slots = max(size/os.Getpagesize(), 1)
	}
}

// pipePool keeps up to max idle, empty pipes for reuse, last in first out so
// that the pipe taken next is the one most recently warm. Its lock is held for
// a slice push or pop only.
//
// A pipe can come out smaller than asked: once an unprivileged user's pipes
// hold fs.pipe-user-pages-soft pages, the kernel refuses to grow its pipes
// (F_SETPIPE_SZ: EPERM) and makes new ones two pages or one. Such a short
// pipe still relays, at a fraction of the throughput, and the quota that cut
// it frees as busy sessions end; so the pool keeps short pipes apart, hands
// them out only when no full one is idle, and asks for the full size again
// each time it does (one fcntl, short pipes only). A pipe is short when it is
// smaller than the largest the pool has seen, so that a size the kernel
// always refuses (above fs.pipe-max-size) makes no pipe short.
type pipePool struct {
	want int // F_SETPIPE_SZ request; 0: kernel default
	max  int // idle pipes, full and short together

	// refuse, set by tests, makes every get fail with EMFILE, as when no
	// descriptor is left and no pooled pipe is idle.
	refuse atomic.Bool

	// full is the size of the largest pipe the pool has made or grown.
	full atomic.Int64

	mu     sync.Mutex
	free   []*pipe // full-size
	short  []*pipe
	closed bool
}

func newPipePool(want, max int) *pipePool {
	return &pipePool{want: want, max: max}
}

// get returns an empty pipe: a pooled full one, else a pooled short one grown
// if the kernel lets it, else a new one.
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
	if n := len(pp.short); n > 0 {
		p := pp.short[n-1]
		pp.short[n-1] = nil
		pp.short = pp.short[:n-1]
		pp.mu.Unlock()
		want := pp.want
		if want <= 0 {
			want = int(pp.full.Load()) // the kernel default, seen unshrunk
		}
		p.grow(want)
		if full := int(pp.full.Load()); p.size < full {
			// want refused (above fs.pipe-max-size for this user, where
			// every pipe keeps the kernel's default, which is then
			// full): the size the pool's pipes do have.
			p.grow(full)
		}
		pp.saw(p)
		return p, nil
	}
	pp.mu.Unlock()
	p, err := newPipe(pp.want)
	if err == nil {
		pp.saw(p)
	}
	return p, err
}

// saw raises full to p's size.
func (pp *pipePool) saw(p *pipe) {
	for {
		full := pp.full.Load()
		if int64(p.size) <= full || pp.full.CompareAndSwap(full, int64(p.size)) {
			return
		}
	}
}

// put gives p back. A pipe with bytes stuck in it, or one the pool has no
// room for, is closed instead; a full pipe takes the place of a short one
// when the pool is full.
func (pp *pipePool) put(p *pipe) {
	if p.data != 0 {
		p.close()
		return
	}
	isShort := int64(p.size) < pp.full.Load()
	pp.mu.Lock()
	if pp.closed {
		pp.mu.Unlock()
		p.close()
		return
	}
	var evict *pipe
	if len(pp.free)+len(pp.short) >= pp.max {
		n := len(pp.short)
		if isShort || n == 0 {
			pp.mu.Unlock()
			p.close()
			return
		}
		evict = pp.short[n-1]
		pp.short[n-1] = nil
		pp.short = pp.short[:n-1]
	}
	if isShort {
		pp.short = append(pp.short, p)
	} else {
		pp.free = append(pp.free, p)
	}
	pp.mu.Unlock()
	if evict != nil {
		evict.close()
	}
}

// idle returns the number of pooled pipes.
func (pp *pipePool) idle() int {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return len(pp.free) + len(pp.short)
}

// trim closes the pooled pipes; the pool keeps working.
func (pp *pipePool) trim() int {
	pp.mu.Lock()
	free, short := pp.free, pp.short
	pp.free, pp.short = nil, nil
	pp.mu.Unlock()
	for _, p := range free {
		p.close()
	}
	for _, p := range short {
		p.close()
	}
	return len(free) + len(short)
}

// close closes the pooled pipes; pipes given back later are closed too.
func (pp *pipePool) close() {
	pp.mu.Lock()
	free, short := pp.free, pp.short
	pp.free, pp.short, pp.closed = nil, nil, true
	pp.mu.Unlock()
	for _, p := range free {
		p.close()
	}
	for _, p := range short {
		p.close()
	}
}
