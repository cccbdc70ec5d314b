package main

import (
	"errors"
	"math"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"sluice/tune/rawsys"
)

// waiter parks the sessions whose bare client socket has nothing to read
// yet (a client that waits for each answer, as curl and browsers do, sends
// its request only after it read the method reply), or no room for a
// reply (a client that does not read). One epoll instance, itself waited on
// through the runtime poller as the relay's event loops wait on theirs,
// holds each such socket EPOLLONESHOT under the id of its wait; its goroutine
// wakes the session when the socket is ready, when the session's deadline
// passes (the waiter keeps the deadlines, in a heap, and the epoll file's
// read deadline is the earliest) and when the waiter closes. Deadlines are
// kept on the monotonic clock, as nanoseconds since the waiter was made
// (base): a step of the wall clock moves none of them, and one centuries
// away (past 2262, where UnixNano overflows) is far, not passed.
//
// Package os would register the socket with the runtime poller instead
// (os.NewFile: an fcntl to read its flags, an epoll_ctl, a finalizer, a
// read that finds nothing once more) and, before the relay took it, take it
// out again (a dup and a close, which deregisters it), and a deadline would
// cost a timer. Here a wait costs one epoll_ctl, and one more takes the
// socket out when the relay takes it over (forget): a disarmed registration
// would cost nothing to keep but would have every wake-up of the relayed
// socket take this epoll instance's lock, shared by all sessions.
//
// It also watches a pending dial's client, bare or package net's (watch):
// a *net.TCPConn's socket, registered with the runtime poller's epoll set,
// goes into this one beside it, each set with a registration of its own.
type waiter struct {
	epfd     int
	file     *os.File
	rc       syscall.RawConn
	fn       func(uintptr) bool // w.turn, bound once
	events   [64]unix.EpollEvent
	finished chan struct{} // closed when serve returns
	base     time.Time     // when the waiter was made, with its monotonic reading: the origin of deadline.at
	// watchAfter is how long a dial waits before its client's socket is
	// registered for its watch (watch); set before the waiter is used.
	watchAfter time.Duration

	mu        sync.Mutex
	closed    bool
	next      uint64             // the last wait id given
	parked    map[uint64]*client // by wait id
	deadlines deadlineHeap       // of waits in parked, and of earlier ones (stale)
	timer     int64              // the epoll file's read deadline (as deadline.at); 0: none
}

func newWaiter() (*waiter, error) {
	// An epoll descriptor the runtime poller did not take could neither
	// wait nor time out: serve would return at once and parked sessions
	// wait for ever. NewEpoll refuses one, and the caller then does
	// without.
	ep, err := rawsys.NewEpoll("waiter")
	if err != nil {
		return nil, err
	}
	w := &waiter{epfd: ep.Fd, file: ep.File, rc: ep.Conn, finished: make(chan struct{}), base: time.Now(), parked: make(map[uint64]*client), watchAfter: defaultWatchAfter}
	w.fn = w.turn
	go w.serve()
	return w, nil
}

// serve is the waiter's goroutine: inside RawConn.Read on the epoll
// descriptor, which returns at the earliest deadline and once the waiter is
// closed.
func (w *waiter) serve() {
	defer close(w.finished)
	for {
		err := w.rc.Read(w.fn)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return // closed
		}
		w.expire()
	}
}

// turn wakes the sessions whose sockets epoll reports, and reports false:
// Read waits for the epoll descriptor to be readable again.
func (w *waiter) turn(uintptr) bool {
	for {
		n, e := rawsys.EpollPoll(w.epfd, w.events[:])
		if e != nil || n == 0 {
			return false
		}
		w.mu.Lock()
		for i := range w.events[:n] {
			ev := &w.events[i]
			c := w.parked[uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32]
			switch {
			case c == nil:
			case c.abort != nil:
				w.leftLocked(c, ev.Events)
			default:
				w.wakeLocked(c, nil)
			}
		}
		w.mu.Unlock()
		if int(n) < len(w.events) {
			return false
		}
	}
}

// wakeLocked ends c's wait with err. w.mu is held.
func (w *waiter) wakeLocked(c *client, err error) {
	delete(w.parked, c.wid)
	c.werr = err
	select {
	case c.wake <- struct{}{}: // buffered, and empty: one wake per wait
	default:
	}
}

// leftLocked ends c's watch (watch) on events: a reset or a close both
// ways aborts the dial, and so does a FIN with no bytes behind the request;
// a FIN after bytes the client sent for the target (queued, or read with
// its request: c.sent) is a client that pipelined its data and
// half-closed, whose dial goes on, watched from then on for a reset alone
// (halfClosedLocked). w.mu is held, and the session, in its dial, keeps
// the socket open.
func (w *waiter) leftLocked(c *client, events uint32) {
	delete(w.parked, c.wid)
	if events&(unix.EPOLLHUP|unix.EPOLLERR) == 0 {
		if c.sent {
			w.halfClosedLocked(c)
			return
		}
		// A peek finds the bytes queued without taking them: they are
		// the target's still. Not SIOCINQ, which stops at an urgent
		// mark: 0 there though bytes came behind it (the peek skips the
		// urgent byte, as the relay does; a signal pending at the mark
		// answers EAGAIN, and the dial goes on).
		var b [1]byte
		if n, _, err := unix.Recvfrom(c.pollFd(), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT); err != nil || n > 0 {
			w.halfClosedLocked(c)
			return
		}
	}
	c.left = true
	c.abort()
}

// halfClosedLocked re-arms the watch of c, whose client half-closed after
// bytes for the target, under a new id, for EPOLLHUP and EPOLLERR alone
// (which come without asking): EPOLLRDHUP stays set from the FIN on, and a
// reset after it is still the client leaving. On failure, or once the
// waiter is closed, the watch ends here. w.mu is held.
func (w *waiter) halfClosedLocked(c *client) {
	w.next++
	c.wid = w.next
	if w.ctlLocked(c, 0) == nil {
		w.parked[c.wid] = c
	}
}

// watch has the waiter abort c's pending dial (abort, as tune.DialFdYield
// hands it) when the client leaves meanwhile: resets, or closes without
// leaving bytes for the target (leftLocked). It does not wait; unwatch ends
// the watch. The socket is registered with the waiter's epoll set only once
// the dial has lasted w.watchAfter (at once when that is not positive), on
// the watchTick that follows, so that one wake-up of the waiter serves the
// watches of a whole tick: registering and taking out again costs two
// epoll_ctl calls, 2.5 to 3 µs (BenchmarkDialWatch), where a dial to a
// machine a few milliseconds away, whose client rarely leaves that soon,
// costs the waiter a map entry and a deadline. Registered, the socket stays
// so for c's later waits, and forget takes it out; a client of package net
// (c.tc) is taken out when its watch ends (unwatch), before the session,
// the only one to close it, goes on. A session that cannot be watched (the
// waiter closed, an epoll_ctl that failed) dials on unwatched.
func (w *waiter) watch(c *client, abort func()) {
	after := w.watchAfter
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.next++
	c.wid = w.next
	c.abort = abort
	w.parked[c.wid] = c
	if after <= 0 {
		w.armWatchLocked(c)
		return
	}
	at := w.at(time.Now().Add(after))
	if at <= math.MaxInt64-watchTick {
		at += watchTick - at%watchTick
	}
	w.pushDeadlineLocked(deadline{at: at, id: c.wid})
}

// defaultWatchAfter is how long a dial waits before its client is watched
// (waiter.watch): the kernel's first SYN retransmission comes after a
// second, so a dial that lasts that long has met a lost packet or a target
// that does not answer, and may well last the dial timeout.
const defaultWatchAfter = time.Second

// watchTick is the grain of the times at which watches are registered.
const watchTick = int64(100 * time.Millisecond)

// armWatchLocked registers c's socket for its watch: EPOLLRDHUP (EPOLLHUP
// and EPOLLERR come without asking), without EPOLLIN: bytes the client
// pipelines are not its leaving. On failure the watch ends here (the dial
// goes on unwatched). w.mu is held, and c is parked under its watch's id.
func (w *waiter) armWatchLocked(c *client) {
	// On the waiter's goroutine at expire, too, where ctlLocked writes
	// c.waited: the session reads it again only after unwatch took w.mu.
	var err error
	if c.tc != nil {
		err = w.ctlNetLocked(c, unix.EPOLLRDHUP)
	} else {
		err = w.ctlLocked(c, unix.EPOLLRDHUP)
	}
	if err != nil {
		delete(w.parked, c.wid)
	}
}

// ctlNetLocked is ctlLocked for a client of package net (c.tc), whose
// descriptor it reads (c.netFd) and registers within RawConn.Control, which
// holds it open meanwhile; the session, in its dial, keeps it open until
// unwatch takes it out. Two allocations (the RawConn, the closure), for a
// dial that has lasted w.watchAfter. w.mu is held.
func (w *waiter) ctlNetLocked(c *client, events uint32) error {
	rc, err := c.tc.SyscallConn()
	if err != nil {
		return err
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		c.netFd = int32(fd)
		cerr = w.ctlLocked(c, events)
	}); err != nil {
		return err
	}
	return cerr
}

// ctlLocked arms c's socket, one-shot, for events under c's current id:
// added to the epoll set the first time, modified after (c.waited). Once w
// is closed its epoll descriptor may be too: net.ErrClosed. w.mu is held.
func (w *waiter) ctlLocked(c *client, events uint32) error {
	if w.closed {
		return net.ErrClosed
	}
	op := unix.EPOLL_CTL_MOD // re-armed: registered by an earlier wait or watch
	if !c.waited {
		op = unix.EPOLL_CTL_ADD
	}
	ev := unix.EpollEvent{Events: events | unix.EPOLLONESHOT}
	ev.Fd, ev.Pad = int32(uint32(c.wid)), int32(uint32(c.wid>>32))
	if e := rawsys.EpollCtl(w.epfd, op, c.pollFd(), &ev); e != nil {
		return e
	}
	c.waited = true
	return nil
}

// unwatch ends c's watch, once its dial returned, and reports whether the
// client left (the watch aborted the dial). A client of package net that
// was registered leaves the epoll set here, while the session still holds
// its socket open: a registration lasts as long as the open socket, not its
// descriptor, and the relay may take the session over through a duplicate
// and close the conn, which would leave the socket registered here to the
// relay's end, its events found under no id (ids are never reused).
func (w *waiter) unwatch(c *client) (left bool) {
	w.mu.Lock()
	if c.abort != nil {
		delete(w.parked, c.wid)
		c.abort = nil
	}
	if c.tc != nil && c.waited {
		w.delLocked(c)
	}
	left, c.left = c.left, false
	w.mu.Unlock()
	return left
}

// expire wakes the sessions whose deadline passed and sets the epoll file's
// read deadline to the next one.
func (w *waiter) expire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.at(time.Now())
	for len(w.deadlines) > 0 && w.deadlines[0].at <= now {
		d := w.deadlines.pop()
		switch c := w.parked[d.id]; {
		case c == nil:
		case c.abort != nil: // a watch, due for its registration
			w.armWatchLocked(c)
		default:
			w.wakeLocked(c, os.ErrDeadlineExceeded)
		}
	}
	w.timer = 0
	w.armTimerLocked()
}

// at is t as a deadline's at: nanoseconds since w.base, monotonic when t
// has a monotonic reading (time.Now's, and times added to it), saturated
// at the bounds of a time.Duration.
func (w *waiter) at(t time.Time) int64 { return int64(t.Sub(w.base)) }

// pushDeadlineLocked adds d, and brings the epoll file's read deadline
// forward to it if it is the earliest. w.mu is held.
func (w *waiter) pushDeadlineLocked(d deadline) {
	if len(w.deadlines) > 2*len(w.parked)+64 {
		w.deadlines.prune(w.parked) // deadlines of waits that ended otherwise
	}
	w.deadlines.push(d)
	w.armTimerLocked()
}

// armTimerLocked brings the epoll file's read deadline forward to the
// earliest deadline, when that is earlier. w.mu is held.
func (w *waiter) armTimerLocked() {
	if len(w.deadlines) == 0 {
		w.timer = 0
		w.file.SetReadDeadline(time.Time{})
		return
	}
	if at := w.deadlines[0].at; w.timer == 0 || at < w.timer {
		w.timer = at
		w.file.SetReadDeadline(w.base.Add(time.Duration(at)))
	}
}

// wait parks c's session until its socket is readable, or writable when
// out is set (or reports an error or its peer's close), c's deadline passes
// (os.ErrDeadlineExceeded) or the waiter closes (net.ErrClosed). A socket
// ready already wakes it at once.
func (w *waiter) wait(c *client, out bool) error {
	if !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		return os.ErrDeadlineExceeded
	}
	if c.wake == nil {
		c.wake = make(chan struct{}, 1)
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return net.ErrClosed
	}
	w.next++
	c.wid = w.next // this wait's: an earlier wait's deadline finds it no more
	events := uint32(unix.EPOLLIN | unix.EPOLLRDHUP)
	if out {
		events = unix.EPOLLOUT
	}
	// Under w.mu, so never after close (w.closed), and with the session
	// parked first: the event may come at once.
	w.parked[c.wid] = c
	if e := w.ctlLocked(c, events); e != nil {
		delete(w.parked, c.wid)
		w.mu.Unlock()
		return os.NewSyscallError("epoll_ctl", e)
	}
	if !c.deadline.IsZero() {
		w.pushDeadlineLocked(deadline{at: w.at(c.deadline), id: c.wid})
	}
	w.mu.Unlock()
	<-c.wake
	return c.werr
}

// forget takes c's socket out of the waiter's epoll set, before the socket
// goes to the relay (client.takeFd).
func (w *waiter) forget(c *client) {
	w.mu.Lock()
	w.delLocked(c)
	w.mu.Unlock()
}

// delLocked takes c's socket out of the epoll set; once w is closed, its
// set is gone already. w.mu is held.
func (w *waiter) delLocked(c *client) {
	if !w.closed {
		rawsys.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, c.pollFd(), nil)
	}
	c.waited = false
}

// close ends the waits in progress with net.ErrClosed, refuses later ones
// and stops the waiter's goroutine.
func (w *waiter) close() {
	if w == nil {
		return
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	for _, c := range w.parked {
		if c.abort == nil { // a watch ends with its dial
			w.wakeLocked(c, net.ErrClosed)
		}
	}
	w.mu.Unlock()
	// No epoll_ctl from now on (w.closed). Not under w.mu: Close waits for
	// the Read that serve is in, whose turn may be waiting for w.mu.
	if w.file.Close() == nil {
		<-w.finished
	}
}

// deadline is a wait's end, by the wait's id: a wait still parked is in
// parked under it, one that ended is not.
type deadline struct {
	at int64 // waiter.at
	id uint64
}

// deadlineHeap is a min-heap of deadlines by at, kept by hand: through
// container/heap's interface each push and pop would allocate.
type deadlineHeap []deadline

func (h *deadlineHeap) push(d deadline) {
	*h = append(*h, d)
	q := *h
	for i := len(q) - 1; i > 0; {
		p := (i - 1) / 2
		if q[p].at <= q[i].at {
			break
		}
		q[p], q[i] = q[i], q[p]
		i = p
	}
}

func (h *deadlineHeap) pop() deadline {
	q := *h
	d := q[0]
	n := len(q) - 1
	q[0] = q[n]
	*h = q[:n]
	h.down(0)
	return d
}

func (h deadlineHeap) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h[r].at < h[l].at {
			m = r
		}
		if h[i].at <= h[m].at {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

// prune drops the deadlines of waits no longer parked.
func (h *deadlineHeap) prune(parked map[uint64]*client) {
	kept := (*h)[:0]
	for _, d := range *h {
		if parked[d.id] != nil {
			kept = append(kept, d)
		}
	}
	*h = kept
	for i := len(kept)/2 - 1; i >= 0; i-- {
		kept.down(i)
	}
}
