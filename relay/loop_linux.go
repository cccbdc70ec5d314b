//go:build linux

package relay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"sluice/tune/rawsys"
)

// A loop relays many sessions with splice on one goroutine, HAProxy's way:
// each session's two sockets are registered once, edge-triggered, in the
// loop's own epoll instance, and a session costs no goroutine and no stack
// while it lives, only its flow (a few hundred bytes) and its sockets.
//
// The loop waits on its epoll descriptor through the runtime poller (an epoll
// descriptor is itself pollable), so it never blocks a thread. It tracks the
// readiness of every socket as epoll reports it and makes a splice call only
// where one can move bytes: an edge is consumed by the EAGAIN that ends a
// burst, or by a read short enough to prove it took all there was, and never
// by a blind first try. Its sessions are flows (flow_linux.go).
type loop struct {
	pipes       *pipePool
	idle        time.Duration // Options.IdleTimeout; 0: off
	mature      func(int)     // Options.Mature; nil: none
	matureAfter int64         // Options.MatureAfter in nanoseconds
	fallback    goPath        // the goroutine path, for sessions the loop hands over
	refuse      [2]error      // set by tests before any session: every splice from that side's socket answers it
	copyBelow   int           // Options.CopyBelow's size; 0: every read splices
	bufBytes    int           // the small-read buffers' size: copyBelow, else copyOnlyBytes

	// testNow, when a test sets it, is the loop's clock (clock), which the
	// test moves on; the loop then sets no read deadline, and the test
	// wakes it (kick).
	testNow atomic.Pointer[atomic.Int64]

	epfd int
	wake int // eventfd, registered with data 0: aborts and Close
	file *os.File
	rc   syscall.RawConn
	base time.Time // l.now counts from here

	mu       sync.Mutex
	flows    map[uint64]*flow // registered and not ended
	watches  map[<-chan struct{}]*watch
	idleW    int // watches with no flow (n 0), up to maxIdleWatches
	nextID   uint64
	aborted  []abortion    // ended from outside (context, failed registration)
	closed   atomic.Bool   // closing: set under l.mu, read without it too
	released bool          // the loop returned and closed its descriptors
	finished chan struct{} // closed when the loop goroutine returns
	young    []*flow       // flows waiting for mature, oldest first, from youngAt on
	youngAt  int           // young[:youngAt] are taken (nil)

	// Owned by the loop goroutine.
	events    [128]unix.EpollEvent
	batch     [128]*flow
	err       error // epoll_wait failed: the loop ends its sessions
	now       int64 // nanoseconds since base, once per wait
	ready     []*flow
	spare     []*flow
	nextSweep int64
	bufs      []*[]byte // free small-read buffers of bufBytes, up to maxFreeBufs
	deadline  int64     // the read deadline set on file; 0: none
	nextRipe  int64     // when ripen is due; 0: no flow waits for mature
	ripe      []*flow   // ripen's batch, taken from young
	turnFn    func(fd uintptr) bool

	// live counts the bytes the loop's flows wrote, per direction, as they
	// move: written by the loop goroutine, read by Relay.Relayed.
	live [2]lineCount
}

// sessionFlow: a Session holds its session's flow.
type sessionFlow = flow

// Side indexes into a flow's fds and readiness: 0 the client, 1 the upstream;
// direction d reads side d and writes side 1-d.
const (
	sideClient = iota
	sideUpstream
)

// newLoop makes a loop and starts its goroutine.
func newLoop(pipes *pipePool, o Options, fallback goPath) (*loop, error) {
	ep, err := rawsys.NewEpoll("epoll")
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		ep.File.Close()
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	if err := unix.EpollCtl(ep.Fd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(wake)
		ep.File.Close()
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	l := &loop{
		pipes: pipes, idle: max(o.IdleTimeout, 0), fallback: fallback,
		mature: o.Mature, matureAfter: int64(o.matureAfter()),
		copyBelow: o.copyBelow(), bufBytes: cmp.Or(o.copyBelow(), copyOnlyBytes),
		epfd: ep.Fd, wake: wake, file: ep.File, rc: ep.Conn, base: time.Now(),
		flows: make(map[uint64]*flow), watches: make(map[<-chan struct{}]*watch), finished: make(chan struct{}),
	}
	l.turnFn = l.turn
	go l.serve()
	return l, nil
}

// add registers a session with the loop, or reports false when the loop is
// closing. From then on the loop owns the session and calls done once.
// fds[side], when not -1, is that socket's bare descriptor (its conn is then
// nil), the loop's from now on, whatever add reports. callerCloses and
// take: see Options.CallerCloses and TakeSockets. f is in sess when it is
// not nil (StartFdsIn).
func (l *loop) add(ctx context.Context, sess *Session, client, upstream *net.TCPConn, fds [2]int, done Ender, callerCloses, take bool) bool {
	var f *flow
	if sess != nil {
		f = &sess.f
	} else {
		f = new(flow)
	}
	// Both sockets start writable, a connected socket's usual state (a
	// write that finds no room answers EAGAIN and clears it), so that
	// writable false means its socket answered EAGAIN (flow.stalled), not
	// that its first EPOLLOUT is not dispatched yet. fds start at -1: a
	// failed rawFd leaves the other side's unset, and the flow, ended as a
	// failed registration, must touch no descriptor it does not hold.
	*f = flow{client: client, upstream: upstream, ctx: ctx, done: done, callerCloses: callerCloses,
		unripe: l.mature != nil && fds[sideUpstream] >= 0, writable: [2]bool{true, true}, fds: [2]int{-1, -1}}
	var err error
	for side, fd := range fds {
		if fd >= 0 {
			f.fds[side], f.owned[side] = fd, true
		}
	}
	if !take || !takeSockets(f) {
		for side, c := range [2]*net.TCPConn{client, upstream} {
			if err == nil && !f.owned[side] {
				f.fds[side], err = rawFd(c)
			}
		}
	}
	l.mu.Lock()
	if l.closed.Load() {
		l.mu.Unlock()
		if f.owned[sideClient] || f.owned[sideUpstream] {
			// A socket is the loop's already: the session goes to the
			// plain path from the loop's descriptors. It was never
			// registered, and the loop's epoll descriptor, closed once
			// the loop returned, may be another file's by now: untouched.
			l.goPlain(f)
			return true
		}
		return false
	}
	l.nextID++
	f.id = l.nextID
	f.last = l.clock()
	f.born = f.last
	l.flows[f.id] = f
	if f.unripe {
		if len(l.young) == l.youngAt {
			l.kick() // the loop sets its next ripen
		}
		l.young = append(l.young, f)
	}
	if ch := ctx.Done(); ch != nil {
		w := l.watches[ch]
		switch {
		case w == nil:
			w = &watch{}
			l.watches[ch] = w
			// Registered under l.mu, which the callback takes first.
			w.stop = context.AfterFunc(ctx, func() { l.abortWatch(ch, w) })
		case w.n == 0:
			l.idleW-- // idle, in use again
		}
		w.n++
		f.watch, f.doneCh = w, ch
	}
	// The sockets are registered under l.mu, f published in the same hold:
	// nothing can end f and close its descriptors before it is released
	// (the loop finds a flow, for an event, a sweep or an abort, only under
	// l.mu), nor can an event of theirs be dispatched before f is in
	// l.flows. From the release on, f may end at any time, its descriptors
	// be closed and their numbers reused. Last in the hold: an event that
	// the registration raises wakes the loop, which takes l.mu next.
	if err == nil {
		err = l.register(f, sideClient)
	}
	if err == nil {
		err = l.register(f, sideUpstream)
	}
	if err != nil {
		// The loop ends f, on its goroutine as always; f is in l.flows
		// meanwhile, so the loop does not return before it has.
		l.abortLocked(f, err)
	}
	l.mu.Unlock()
	if testHookAdded != nil {
		testHookAdded()
	}
	return true
}

// testHookAdded, when a test sets it, runs in add once the session is
// published to the loop and l.mu released.
var testHookAdded func()

// register adds one socket of f to the epoll set, edge-triggered, for both
// directions' needs at once, so that it never has to be modified.
func (l *loop) register(f *flow, side int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLPRI | unix.EPOLLET}
	setData(&ev, f.id<<1|uint64(side))
	err := rawsys.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, f.fds[side], &ev)
	if err == unix.EEXIST {
		// The socket served an earlier session of this loop and stayed
		// open: it is still registered, under that session's id.
		err = rawsys.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, f.fds[side], &ev)
	}
	if err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// kick wakes the loop goroutine. l.mu is held: the eventfd is closed under
// it once the loop returned, and its number must not be written after.
func (l *loop) kick() {
	if l.released {
		return
	}
	var one = [8]byte{1}
	unix.Write(l.wake, one[:]) // EAGAIN: the counter is already non-zero
}

// close makes the loop return once its last session ended.
func (l *loop) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed.Store(true)
	l.kick()
}

// serve is the loop goroutine. It spends its life inside RawConn.Read on the
// epoll descriptor, whose callback (turn) runs the loop; Read returns only
// when the loop ends or at the read deadline set for the next idle sweep.
func (l *loop) serve() {
	defer close(l.finished)
	defer l.release()
	for {
		l.setDeadline()
		err := l.rc.Read(l.turnFn)
		switch {
		case err == nil && l.err == nil:
			return // closing, and no session left
		case err == nil:
			err = l.err
		case errors.Is(err, os.ErrDeadlineExceeded):
			l.now = l.clock()
			if l.housekeep() {
				return
			}
			continue
		}
		// The epoll descriptor failed, which cannot happen while the loop
		// holds it: end every session rather than hang them.
		l.endAll(fmt.Errorf("relay: event loop: %w", err))
		return
	}
}

// housekeep makes the idle sweep when it is due and reports whether the loop
// should return: it is closing and serves no session any more.
func (l *loop) housekeep() (exit bool) {
	if l.idle > 0 && l.now >= l.nextSweep {
		l.sweep()
	}
	if l.nextRipe > 0 && l.now >= l.nextRipe {
		l.ripen()
	}
	if !l.closed.Load() {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.flows) == 0
}

// turn is the RawConn.Read callback: it collects the ready events without
// blocking and runs their flows, again while a wait could not block (a full
// batch, flows ready to run on), and then asks the runtime poller to wait by
// returning false. It returns true to end the Read: the loop is closing and
// serves no session, or epoll failed (l.err).
//
// Asking to wait right after a harvest, without another epoll_wait that would
// find nothing, is safe only inside one Read call: every event that arrives
// after a harvest wakes the runtime poller for the epoll descriptor, and the
// readiness it records survives until this Read waits, while a new Read
// would reset it.
func (l *loop) turn(fd uintptr) bool {
	for {
		n, err := epollWait(int(fd), l.events[:])
		if err != nil {
			l.err = err
			return true
		}
		l.now = l.clock()
		if l.dispatch(n) {
			l.takeAborts()
		}
		l.runReady()
		if l.housekeep() {
			return true
		}
		if n < len(l.events) && len(l.ready) == 0 {
			l.setDeadline() // a sweep moved the next one
			return false
		}
	}
}

// dispatch records the readiness that n events report and runs their flows.
// It reports whether the wake eventfd fired. Every event of the batch is
// recorded before any flow runs: a flow's two sockets' events may come in
// either order, and the room a destination reports (EPOLLOUT) must count
// before run's stalled check, which ends a session whose source failed
// while its destination took nothing, sees the source's EPOLLERR. A flow
// then runs once per event, as before.
func (l *loop) dispatch(n int) (woken bool) {
	events := l.events[:n]
	l.mu.Lock()
	for i := range events {
		data := getData(&events[i])
		if data == 0 {
			woken = true
			l.batch[i] = nil
			continue
		}
		l.batch[i] = l.flows[data>>1] // nil: ended, its sockets not yet closed
	}
	l.mu.Unlock()
	for i := range events {
		f := l.batch[i]
		if f == nil {
			continue
		}
		side, ev := getData(&events[i])&1, events[i].Events
		if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLPRI) != 0 {
			f.readable[side] = true
		}
		if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLPRI) != 0 {
			f.probe[side] = true
		}
		if ev&unix.EPOLLPRI != 0 {
			f.urgent[side] = true
		}
		if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			f.writable[side] = true
		}
		if ev&(unix.EPOLLRDHUP|unix.EPOLLERR) == unix.EPOLLRDHUP {
			f.finSeen[side] = true
		}
		if ev&unix.EPOLLRDHUP != 0 {
			f.finTold[side] = true
		}
		if ev&unix.EPOLLERR != 0 {
			// Kept for the direction's EOF (step), behind which a
			// reset that came after the FIN stays pending.
			f.erred[side] = true
		}
	}
	for i := range events {
		f := l.batch[i]
		if f == nil {
			continue
		}
		l.batch[i] = nil
		side, ev := getData(&events[i])&1, events[i].Events
		if ev&unix.EPOLLERR != 0 && f.dirs[side].done && !f.ended {
			// A socket whose reading is over (its FIN was passed
			// on) failed: a reset after the half-close. Nothing
			// reads it, and the other direction writes to it only
			// if its own source has bytes, which a silent far side
			// never sends: take the error here.
			if err := sockError(f.fds[side]); err != nil {
				l.fail(f, fmt.Errorf("relay: %s: %w", dirLabel[side], err))
				continue
			}
		}
		l.run(f)
	}
	return woken
}

func epollWait(epfd int, events []unix.EpollEvent) (int, error) {
	n, err := rawsys.EpollPoll(epfd, events)
	if err != nil {
		return 0, os.NewSyscallError("epoll_wait", err)
	}
	return n, nil
}

// clock returns the loop's time in nanoseconds since base, or, when a test
// set one (testNow), the test's.
func (l *loop) clock() int64 {
	if c := l.testNow.Load(); c != nil {
		return c.Load()
	}
	return int64(time.Since(l.base))
}

// setDeadline arms the read deadline of the epoll file for the next idle
// sweep or ripen, whichever comes first, or clears it when neither is due
// (or the loop runs on a test's clock, whose test wakes it).
func (l *loop) setDeadline() {
	var next int64
	if l.idle > 0 {
		next = l.nextSweep
	}
	if l.nextRipe > 0 && (next == 0 || l.nextRipe < next) {
		next = l.nextRipe
	}
	if l.testNow.Load() != nil {
		next = 0
	}
	if next == l.deadline {
		return
	}
	if next == 0 {
		l.file.SetReadDeadline(time.Time{})
	} else {
		l.file.SetReadDeadline(l.base.Add(time.Duration(next)))
	}
	l.deadline = next
}

// ripen calls mature on the flows that have lived matureAfter and still
// relay, and sets the next ripen: a quarter of matureAfter after the oldest
// flow left waiting is due, so that one ripen serves a batch; none when no
// flow waits.
func (l *loop) ripen() {
	l.mu.Lock()
	i := l.youngAt
	for ; i < len(l.young) && l.now-l.young[i].born >= l.matureAfter; i++ {
		l.ripe = append(l.ripe, l.young[i])
		l.young[i] = nil
	}
	l.youngAt = i
	switch {
	case i == len(l.young):
		l.young, l.youngAt = l.young[:0], 0
		l.nextRipe = 0
	default:
		if i > 1024 && i > len(l.young)/2 {
			n := copy(l.young, l.young[i:])
			clear(l.young[n:])
			l.young, l.youngAt = l.young[:n], 0
		}
		l.nextRipe = l.young[l.youngAt].born + l.matureAfter + l.matureAfter/4
	}
	l.mu.Unlock()
	for i, f := range l.ripe {
		if !f.ended && f.unripe {
			f.unripe = false
			l.mature(f.fds[sideUpstream])
		}
		l.ripe[i] = nil
	}
	l.ripe = l.ripe[:0]
}

// runReady gives another turn to the flows whose last one ran out of budget.
func (l *loop) runReady() {
	if len(l.ready) == 0 {
		return
	}
	ready := l.ready
	l.ready = l.spare[:0]
	for i, f := range ready {
		f.queued = false
		l.run(f)
		ready[i] = nil
	}
	l.spare = ready[:0]
}

// sweep ends the flows in which no byte moved for the idle timeout. It runs
// every quarter of the timeout, so a silent session ends between one and one
// and a quarter timeouts after its last byte.
func (l *loop) sweep() {
	l.nextSweep = l.now + int64(max(l.idle/4, time.Millisecond))
	var idle []*flow
	l.mu.Lock()
	for _, f := range l.flows {
		if l.now-f.last >= int64(l.idle) {
			idle = append(idle, f)
		}
	}
	l.mu.Unlock()
	for _, f := range idle {
		l.finish(f, fmt.Errorf("%w: no byte moved for %v: %w", ErrIdleTimeout, l.idle, os.ErrDeadlineExceeded))
	}
}

// endAll ends every flow with err.
func (l *loop) endAll(err error) {
	l.mu.Lock()
	flows := make([]*flow, 0, len(l.flows))
	for _, f := range l.flows {
		flows = append(flows, f)
	}
	l.closed.Store(true)
	l.mu.Unlock()
	for _, f := range flows {
		l.finish(f, err)
	}
}

// release closes the loop's descriptors.
func (l *loop) release() {
	l.mu.Lock()
	l.released = true
	unix.Close(l.wake)
	var stops []func() bool
	for ch, w := range l.watches { // idle ones: no flow is left
		stops = append(stops, w.stop)
		delete(l.watches, ch)
	}
	l.idleW = 0
	l.mu.Unlock()
	for _, stop := range stops {
		stop()
	}
	l.file.Close()
}

// loopSet is a Relay's loops, chosen in turn.
type loopSet struct {
	loops []*loop
	turn  atomic.Uint32
	err   error // why fewer loops than asked for were made; nil: none
}

func newLoopSet(n int, pipes *pipePool, o Options, fallback goPath) *loopSet {
	ls := &loopSet{}
	for range n {
		l, err := newLoop(pipes, o, fallback)
		if err != nil {
			ls.err = fmt.Errorf("%d of %d event loops made: %w", len(ls.loops), n, err)
			break // sessions take the goroutine path
		}
		ls.loops = append(ls.loops, l)
	}
	return ls
}

// start hands a session to the next loop; false: none takes it (and fds
// are still the caller's).
func (ls *loopSet) start(ctx context.Context, sess *Session, client, upstream *net.TCPConn, fds [2]int, done Ender, callerCloses, take bool) bool {
	if len(ls.loops) == 0 {
		return false
	}
	l := ls.loops[int(ls.turn.Add(1))%len(ls.loops)]
	return l.add(ctx, sess, client, upstream, fds, done, callerCloses, take)
}

// relayed sums the loops' live byte counts (Relay.Relayed).
func (ls *loopSet) relayed() (up, down int64) {
	for _, l := range ls.loops {
		up += l.live[0].Load()
		down += l.live[1].Load()
	}
	return up, down
}

// close makes every loop return once its sessions ended.
func (ls *loopSet) close() {
	for _, l := range ls.loops {
		l.close()
	}
}

// setData stores v as the event's 64-bit user data.
func setData(ev *unix.EpollEvent, v uint64) {
	ev.Fd, ev.Pad = int32(uint32(v)), int32(uint32(v>>32))
}

// getData returns the event's 64-bit user data.
func getData(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
