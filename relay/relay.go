package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrIdleTimeout is wrapped by the error Pipe returns when no byte moved
// either way for Options.IdleTimeout. That error also matches
// os.ErrDeadlineExceeded.
var ErrIdleTimeout = errors.New("relay: idle timeout")

const (
	defaultPipeBytes       = 1 << 20
	defaultMaxIdlePipes    = 1024
	defaultCopyBufferBytes = 256 << 10
)

// MaxCopyBelow is the largest Options.CopyBelow used.
const MaxCopyBelow = 1 << 20

// Options configures a Relay. The zero value works; each field documents its
// default (0 means the default, negative means off).
type Options struct {
	// IdleTimeout ends a session when no byte moved either way for this long.
	// On an event loop the check runs every quarter of IdleTimeout, so a
	// silent session ends between one and one and a quarter IdleTimeouts
	// after its last byte; on goroutines it runs once per IdleTimeout
	// (between one and two). 0 or negative: off.
	IdleTimeout time.Duration

	// PipeBytes is the splice pipe size asked for with F_SETPIPE_SZ.
	// 0 means 1 MiB; negative keeps the kernel default (64 KiB). When the
	// kernel refuses the size (EPERM past fs.pipe-user-pages-soft or above
	// fs.pipe-max-size), the pipe keeps the size it got.
	PipeBytes int

	// MaxIdlePipes bounds the pipes kept pooled for reuse. 0 means 1024;
	// negative pools none (every pipe is closed once drained).
	MaxIdlePipes int

	// ForceCopy moves bytes with plain read/write calls instead of splice,
	// for benchmarks and comparison.
	ForceCopy bool

	// CopyBufferBytes sizes the pooled buffer of the plain path.
	// 0 or negative means 256 KiB.
	CopyBufferBytes int

	// CopyBelow, when positive, lets the size of what a socket brings pick
	// the system calls that move it, on an event loop: a direction reads
	// into a buffer of CopyBelow bytes with read(2) and writes it out with
	// write(2) until a read fills that buffer; from then on it splices
	// through a pipe, until a splice brings fewer than CopyBelow bytes.
	// Small messages cost less copied than spliced, bulk transfers less
	// spliced (README, --copy-below). The buffer, like a pipe, is held only
	// while its bytes wait for the destination. At most MaxCopyBelow is used. 0
	// or negative: every read splices, and no payload byte enters user
	// space.
	CopyBelow int

	// Loops is the number of event loops (Linux). 0 means four per P
	// (GOMAXPROCS): a loop makes one splice call at a time, and a bulk
	// splice keeps it in the kernel for a while, so more loops than Ps keep
	// several in flight (`sluice-bench tput -P 8`, 8 streams on 2 Ps: 0.81x
	// the throughput of goroutines with one loop per P, level at four).
	// Negative: no loop, every session runs on goroutines.
	Loops int

	// CallerCloses promises that the caller of Start closes both sockets
	// as soon as done has run. An event loop then leaves out the half-close
	// of the direction that ends last: the close sends that FIN, as the
	// socket has nothing left unread (its peer's FIN came first). One
	// system call fewer per session. Pipe does not use it.
	CallerCloses bool

	// TakeSockets lets Start take both sockets over when a session goes to
	// an event loop: it duplicates their descriptors, closes client and
	// upstream (package net's poller then forgets them, so only the loop's
	// epoll set wakes for them) and closes the duplicates when the session
	// ends, before done runs. done may still read the conns' addresses;
	// closing them again does nothing. Pipe does not use it.
	TakeSockets bool

	// Mature, when set, is called once with the upstream descriptor of
	// each session started with StartFds that is still relaying
	// MatureAfter after it started: on an event loop between one and one
	// and a quarter MatureAfter, on the goroutine path (no loop, or a
	// session handed to it) at once. It runs on the loop's goroutine (on
	// the goroutine path, on StartFds's caller's) and must not block. sluice sets the upstream's TCP keepalive there
	// (tune.Options.ArmKeepAlive), so that a session that ends within a
	// second never pays those system calls.
	Mature func(upstream int)

	// MatureAfter: see Mature. 0 or negative means 1 s.
	MatureAfter time.Duration
}

func (o Options) matureAfter() time.Duration {
	if o.MatureAfter <= 0 {
		return time.Second
	}
	return o.MatureAfter
}

// wrapFd wraps a TCP socket's bare descriptor in a *net.TCPConn, which
// holds a duplicate, and closes the descriptor. When the duplicate cannot
// be made (EMFILE), failed, if not nil, gets the descriptor before its
// close.
func wrapFd(fd int, failed func(fd int)) (*net.TCPConn, error) {
	f := os.NewFile(uintptr(fd), "socket")
	c, err := net.FileConn(f)
	if err != nil && failed != nil {
		failed(fd)
	}
	f.Close()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("relay: descriptor %d is not a TCP socket", fd)
	}
	return tc, nil
}

// loops returns the number of event loops to start.
func (o *Options) loops() int {
	switch {
	case o.ForceCopy || o.Loops < 0:
		return 0
	case o.Loops == 0:
		return 4 * runtime.GOMAXPROCS(0)
	}
	return o.Loops
}

// pipeBytes returns the size to ask for, or 0 to leave the kernel default.
func (o *Options) pipeBytes() int {
	switch {
	case o.PipeBytes < 0:
		return 0
	case o.PipeBytes == 0:
		return defaultPipeBytes
	}
	return o.PipeBytes
}

func (o *Options) maxIdlePipes() int {
	switch {
	case o.MaxIdlePipes < 0:
		return 0
	case o.MaxIdlePipes == 0:
		return defaultMaxIdlePipes
	}
	return o.MaxIdlePipes
}

func (o *Options) copyBelow() int {
	return min(max(o.CopyBelow, 0), MaxCopyBelow)
}

func (o *Options) copyBufferBytes() int {
	if o.CopyBufferBytes <= 0 {
		return defaultCopyBufferBytes
	}
	return o.CopyBufferBytes
}

// Stats reports what one Pipe call moved.
type Stats struct {
	// ClientToUpstream and UpstreamToClient count the bytes written to the
	// destination of each direction.
	ClientToUpstream, UpstreamToClient int64

	// Spliced is true when at least one byte moved through splice(2): the
	// proof that the fast path ran.
	Spliced bool

	// SpliceCalls counts the splice(2) calls that moved bytes, both
	// directions, into and out of the pipes. The one-byte read that passes
	// an urgent mark into a pipe is not one.
	SpliceCalls int64

	// CopyCalls counts the read(2) and write(2) calls that moved bytes
	// through an event loop's buffers, both directions: its small reads
	// (Options.CopyBelow), and a direction that reads through a buffer
	// because it could not splice (Fallback). The goroutine path's copies
	// (ForceCopy, or splice refused there) are not counted.
	CopyCalls int64

	// Fallback is true when splice was refused (the kernel answered EINVAL
	// or EOPNOTSUPP before a direction spliced a byte, as for some MPTCP
	// sockets, or no pipe could be made) and a direction used the plain
	// path instead, or, on an event loop whose other direction held bytes
	// then, went on with read(2) and write(2) through a buffer of its own.
	Fallback bool
}

// Relay moves bytes between pairs of connections and keeps a bounded pool of
// splice pipes shared by its sessions. On Linux, unless ForceCopy is set, its
// sessions run on event loops (Options.Loops) that splice without a goroutine
// per session; elsewhere, and where the kernel refuses splice, each
// session runs on a goroutine per direction. A Relay is safe for concurrent
// use; its zero value is not usable, call New.
type Relay struct {
	opts  Options
	pipes *pipePool
	loops *loopSet  // nil without event loops
	bufs  sync.Pool // *[]byte of opts.copyBufferBytes()
	// bufsOut counts copy buffers taken and not yet given back: sessions
	// whose plain path has data in hand (tests read it).
	bufsOut atomic.Int64
	closed  atomic.Bool

	// live counts the bytes that goroutine-path halves wrote, per
	// direction, as they move (Relayed); each on a cache line of its own.
	live [2]lineCount
	// udp counts the datagrams associations sent on, per direction
	// (RelayedDatagrams).
	udp [2]udpCount
	// drops counts the datagrams associations dropped, per reason, as
	// they are dropped (DroppedDatagrams), but for those a flush saw the
	// kernel refuse, which udp counts.
	drops [NumDrops]atomic.Int64

	// refuseSplice, when set by tests, stands for the kernel's answer to
	// every direction's first splice.
	refuseSplice error

	// resets watches the goroutine path's half-closed sessions for a
	// reset that no goroutine would see (session.watchReset).
	resets resetWatch
}

// New returns a Relay configured by o, with its event loops started. The
// caller must call Close when done with it, which stops the loops once their
// sessions ended and releases the pooled pipes.
func New(o Options) *Relay {
	r := &Relay{opts: o, pipes: newPipePool(o.pipeBytes(), o.maxIdlePipes())}
	size := o.copyBufferBytes()
	r.bufs.New = func() any { b := make([]byte, size); return &b }
	if n := o.loops(); n > 0 {
		r.loops = newLoopSet(n, r.pipes, o, r.pipeGoroutines)
	}
	return r
}

// Close releases the pooled pipes and lets the event loops return once their
// sessions ended. Sessions still running keep working; the pipes they use are
// closed when they are given back, and sessions started after Close run on
// goroutines. Close returns nil.
func (r *Relay) Close() error {
	r.closed.Store(true)
	if r.loops != nil {
		r.loops.close()
	}
	r.pipes.close()
	return nil
}

// lineCount is a counter alone on its cache line, so that two goroutines
// adding to neighbouring counters do not take the line from each other.
type lineCount struct {
	atomic.Int64
	_ [56]byte
}

// Relayed returns the bytes r's sessions have written to their
// destinations so far, client to upstream and upstream to client, running
// sessions' included: bytes count as they move, not when a session ends.
// It is safe to call at any time, from any goroutine; each counter is
// loaded on its own, so the two may be a splice call apart.
func (r *Relay) Relayed() (up, down int64) {
	up, down = r.live[0].Load(), r.live[1].Load()
	if r.loops != nil {
		lu, ld := r.loops.relayed()
		up, down = up+lu, down+ld
	}
	return up, down
}

// getBuf takes a copy buffer from the pool.
func (r *Relay) getBuf() *[]byte {
	r.bufsOut.Add(1)
	return r.bufs.Get().(*[]byte)
}

// putBuf gives a copy buffer back.
func (r *Relay) putBuf(bp *[]byte) {
	r.bufsOut.Add(-1)
	r.bufs.Put(bp)
}

// Trim closes the idle pooled pipes and returns how many it closed, giving
// their descriptors back; the Relay keeps working and pools pipes again.
// Call it when the process runs out of file descriptors (EMFILE), so that
// idle pipes do not keep new connections out.
func (r *Relay) Trim() int {
	return r.pipes.trim()
}

// abort causes, in s.cause: the first to happen wins.
const (
	causeNone int32 = iota
	causeClientToUpstream
	causeUpstreamToClient
	causeContext
	causeIdle
)

// half is one direction of a session. Its counters are written only by the
// goroutine running it, except progress, which the idle watchdog reads.
type half struct {
	label       string // "client->upstream" or "upstream->client"
	cause       int32  // abort cause when this half fails
	passed      bool   // its EOF was passed on: before Pipe (an event loop's hand-off; it only watches src), or by runHalf
	s           *session
	src, dst    *net.TCPConn
	bytes       int64 // written to dst
	spliceCalls int64
	spliced     bool
	fallback    bool
	err         error
	watching    bool         // src is registered with the reset watch (stall)
	reg         resetReg     // that registration, under the watch's lock
	reset       error        // src failed as the reset watch saw, under its lock
	finReset    error        // src failed after its FIN, as the reset watch saw, under its lock: h ends with it at its EOF
	finSeen     bool         // src's FIN came before any error, as the reset watch saw, under its lock
	dropped     bool         // h ended holding bytes read from src and never written to dst
	cut         bool         // h ended on a failure, its own or one whose error another call took (errCutShort)
	shutting    atomic.Bool  // h is half-closing dst, or did (closeWrite): the relay's FIN to dst is out or on its way
	watched     bool         // the idle watchdog reads progress
	progress    atomic.Int64 // bytes, published for the watchdog
	live        *lineCount   // the Relay's count of this direction (Relayed)
	_           [64]byte     // keep the other half's progress off this cache line
}

// moved records n more bytes written to dst.
func (h *half) moved(n int) {
	h.bytes += int64(n)
	h.live.Add(int64(n))
	if h.watched {
		h.progress.Store(h.bytes)
	}
}

// session is the state of one Pipe call.
type session struct {
	client, upstream *net.TCPConn
	halves           [2]half // client->upstream, upstream->client
	cause            atomic.Int32
	finished         atomic.Int32 // halves that passed their EOF on

	resets *resetWatch // the Relay's (half.stall)

	// mu orders the aborts from outside, by the context's AfterFunc and
	// the idle watchdog on goroutines of their own, with the session's
	// end: once over, they do nothing. It also guards taken and
	// takenWhole (takeError).
	mu         sync.Mutex
	over       bool     // Pipe is returning: the conns are the caller's again
	taken      [2]error // per socket (0 the client, 1 the upstream): its error, taken by a call that does not read it
	takenWhole [2]bool  // that error came after the socket's FIN
}

// takeError takes the pending error (SO_ERROR) of the session's socket of
// side (0 the client, 1 the upstream) for a call that does not read that
// socket: the reset watch, or the other direction's closeWrite. It records
// the error, under s.mu, for the direction that reads the socket: a read
// after a reset whose error was taken answers 0, as an EOF would, and that
// direction asks takenFrom before it passes the EOF on. fin: the socket's
// FIN came before the error (the reset watch saw it); so did it when the
// error is EPIPE (a reset in CLOSE_WAIT).
func (s *session) takeError(side int, rc syscall.RawConn, fin bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	rc.Control(func(fd uintptr) { err = sockError(int(fd)) })
	if err != nil && s.taken[side] == nil {
		s.taken[side] = err
		s.takenWhole[side] = fin || errors.Is(err, syscall.EPIPE)
	}
	if hook := testHookTaken; hook != nil && err != nil {
		hook([2]*net.TCPConn{s.client, s.upstream}[side])
	}
	return err
}

// Test hooks, when a test sets them (in init, before any session):
// testHookRead is called with a goroutine-path direction's source each time
// that direction's read callback runs; testHookTaken with a socket whose
// error takeError took, or whose write or splice into it failed.
var (
	testHookRead  func(src *net.TCPConn)
	testHookTaken func(c *net.TCPConn)
)

// takenFrom returns the error of side's socket that another call took
// (takeError), nil if none, and whether it came after the socket's FIN
// (whole). An EOF
// read from a socket whose error was taken before its FIN stands for that
// failure: the stream is cut short, and the call that took the error ends
// the session with it.
func (s *session) takenFrom(side int) (taken error, whole bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.taken[side], s.takenWhole[side]
}

// side is the side (0 the client, 1 the upstream) of h's source.
func (s *session) side(h *half) int {
	if h == &s.halves[0] {
		return 0
	}
	return 1
}

// errCutShort: the EOF a half read stands for a failure that another call
// took and ends the session with (takenFrom, passEOF); the half adds nothing.
var errCutShort = errors.New("relay: source failed, its error taken elsewhere")

// aLongTimeAgo is a deadline in the past, set to unblock both directions.
var aLongTimeAgo = time.Unix(1, 0)

// abort records why the session ends early, if nothing did before, and
// unblocks both directions by setting past deadlines on both conns.
func (s *session) abort(cause int32) {
	if !s.cause.CompareAndSwap(causeNone, cause) {
		return
	}
	s.client.SetDeadline(aLongTimeAgo)
	s.upstream.SetDeadline(aLongTimeAgo)
}

func (s *session) abortContext() { s.abortOutside(causeContext) }

// abortOutside is abort for the context's AfterFunc and the idle watchdog,
// which may fire as Pipe returns: it does nothing once the session ended
// (end), so that no deadline is set on conns that are the caller's again.
func (s *session) abortOutside(cause int32) {
	if h := testHookAbortOutside; h != nil {
		after := h(cause)
		defer after()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.over {
		s.abort(cause)
	}
}

// end marks the session over, both halves returned: an abort from outside
// that is under way completes first, and one that comes later does nothing.
func (s *session) end() {
	s.mu.Lock()
	s.over = true
	s.mu.Unlock()
}

// testHookAbortOutside, when a test sets it, is called as abortOutside
// begins, and what it returns as abortOutside returns.
var testHookAbortOutside func(cause int32) (after func())

// Pipe relays client<->upstream until both directions end, ctx ends, or the
// idle timeout fires. EOF from one side half-closes (CloseWrite) the other
// while the reverse direction keeps flowing. Pipe half-closes but never
// closes the conns it is given: the caller owns and closes them, and may find
// their deadlines set in the past when Pipe returns early.
//
// A clean EOF on both sides gives a nil error. Otherwise the error says which
// direction failed, labelled "relay: client->upstream: ..." or "relay:
// upstream->client: ..." (joined with errors.Join when both did on the
// goroutine path); the timeout that a failure inflicts on the other direction
// to unblock it is left out. When ctx ends first Pipe returns ctx.Err(); when
// the idle timeout fires first it returns an error wrapping ErrIdleTimeout.
// When a connection failed, Pipe leaves SO_LINGER 0 set on each conn whose
// peer's stream it cut short, so that the caller's close resets that peer
// (resetOnClose).
func (r *Relay) Pipe(ctx context.Context, client, upstream *net.TCPConn) (Stats, error) {
	if r.onLoop() {
		ch := make(chan Stats, 1)
		var err error
		if r.loops.start(ctx, nil, client, upstream, noFds, EndFunc(func(st Stats, e error) { err = e; ch <- st }), false, false) {
			st := <-ch
			return st, err
		}
	}
	return r.pipeGoroutines(ctx, client, upstream, [2]bool{})
}

// Start relays like Pipe but returns at once; done is called once with what
// Pipe would have returned. The caller must not close client or upstream
// before done runs, and may close them in done. On an event loop done runs
// on the loop's goroutine, which serves other sessions: it must not block.
// A session on an event loop costs no goroutine while it lives.
func (r *Relay) Start(ctx context.Context, client, upstream *net.TCPConn, done func(Stats, error)) {
	if r.onLoop() && r.loops.start(ctx, nil, client, upstream, noFds, EndFunc(done), r.opts.CallerCloses, r.opts.TakeSockets) {
		return
	}
	go func() {
		st, err := r.pipeGoroutines(ctx, client, upstream, [2]bool{})
		done(st, err)
	}()
}

// An Ender is told once that a session ended, with what Pipe would have
// returned: the done of Start, StartFds and StartFdConn as a method
// (StartFdsIn), for a caller that keeps its session in a struct of its own
// and wants no closure allocated per session.
type Ender interface {
	Ended(Stats, error)
}

// EndFunc is a func as an Ender.
type EndFunc func(Stats, error)

// Ended calls f.
func (f EndFunc) Ended(st Stats, err error) { f(st, err) }

// noFds: both sockets are conns.
var noFds = [2]int{-1, -1}

// StartFds is Start for sockets that no *net.TCPConn wraps: connected,
// non-blocking TCP sockets' bare descriptors, such as a raw accept4 and
// tune.Options.DialFd return. The Relay owns both from the call on and
// closes them before done runs, on every path. On an event loop the sockets
// never meet package net; elsewhere (no loop, or a session handed to the
// plain path) they are wrapped in *net.TCPConns first (FileConn).
func (r *Relay) StartFds(ctx context.Context, client, upstream int, done func(Stats, error)) {
	r.startMixed(ctx, nil, nil, [2]int{client, upstream}, EndFunc(done))
}

// StartFdsIn is StartFds with an Ender in place of done and the relay's
// state for the session in sess, which the caller allocated (nil: the
// relay allocates it): a caller that keeps its session in a struct of its
// own, with a Session and an Ended method in it, starts a session without
// an allocation. sess serves one session: the relay holds it until
// e.Ended returns, and it must not be used for another session even then (a
// loop may still look at a session that ended: an abortion or an event
// queued before its end).
func (r *Relay) StartFdsIn(ctx context.Context, sess *Session, client, upstream int, e Ender) {
	r.startMixed(ctx, sess, nil, [2]int{client, upstream}, e)
}

// A Session is what the relay keeps of one session on an event loop, for a
// caller to embed in a per-session struct of its own (StartFdsIn). Its zero
// value is ready for one session; it must not be copied.
type Session struct {
	f sessionFlow
}

// StartFdConn is StartFds for a bare client and an upstream that package
// net dialled (a domain target): client is the Relay's from the call on, as
// in StartFds; upstream is as in Start, taken over on a loop with
// TakeSockets and otherwise the caller's to close after done.
func (r *Relay) StartFdConn(ctx context.Context, client int, upstream *net.TCPConn, done func(Stats, error)) {
	r.startMixed(ctx, nil, upstream, [2]int{client, -1}, EndFunc(done))
}

// startMixed starts a session whose client is the bare descriptor
// fds[0] and whose upstream is fds[1] when not -1, else upstream.
func (r *Relay) startMixed(ctx context.Context, sess *Session, upstream *net.TCPConn, fds [2]int, done Ender) {
	if r.onLoop() && r.loops.start(ctx, sess, nil, upstream, fds, done, r.opts.CallerCloses, r.opts.TakeSockets) {
		return
	}
	if r.opts.Mature != nil && fds[1] >= 0 {
		r.opts.Mature(fds[1])
	}
	go func() {
		st, err := r.pipeAdopted(ctx, upstream, fds)
		done.Ended(st, err)
	}()
}

// pipeAdopted runs the goroutine path for startMixed's session: each bare
// descriptor is wrapped (FileConn) and closed before it returns.
func (r *Relay) pipeAdopted(ctx context.Context, upstream *net.TCPConn, fds [2]int) (Stats, error) {
	conns := [2]*net.TCPConn{nil, upstream}
	var err error
	for side, fd := range fds {
		if fd < 0 {
			continue
		}
		if err != nil { // an earlier side failed: close this one too
			lingerZero(fd)
			os.NewFile(uintptr(fd), "socket").Close()
			continue
		}
		if conns[side], err = fileConn(fd, lingerZero); err == nil {
			defer conns[side].Close()
		}
	}
	if err != nil {
		// No descriptor for package net (EMFILE): the session fails
		// before the relay moved a byte, though the caller may have
		// (pipelined bytes, its reply): both peers are reset, not
		// handed a FIN that passes for the other's end.
		for _, c := range conns {
			if c != nil {
				resetOnClose(c)
			}
		}
		return Stats{}, err
	}
	return r.pipeGoroutines(ctx, conns[0], conns[1], [2]bool{})
}

// Loops returns the number of event loops the Relay started (0: its
// sessions run on goroutines).
func (r *Relay) Loops() int {
	if r.loops == nil {
		return 0
	}
	return len(r.loops.loops)
}

// LoopsErr reports why New made fewer event loops than Options asked for
// (the process ran out of descriptors, say), nil when it made them all;
// sessions the missing loops would have served take the goroutine path.
func (r *Relay) LoopsErr() error {
	if r.loops == nil {
		return nil
	}
	return r.loops.err
}

// onLoop reports whether new sessions go to the event loops.
func (r *Relay) onLoop() bool {
	return r.loops != nil && !r.closed.Load()
}

// goPath is the goroutine path as event loops hand sessions over to it:
// Relay.pipeGoroutines.
type goPath func(ctx context.Context, client, upstream *net.TCPConn, finished [2]bool) (Stats, error)

// pipeGoroutines is Pipe on goroutines: the calling one runs the
// client->upstream direction and one more, joined before it returns, runs
// upstream->client. finished[d] says that direction d (0 client->upstream)
// passed its EOF on before, its destination half-closed: an event loop that
// hands a session over says so, and that half reads nothing and shuts
// nothing down again, it only watches its source (watchSource).
func (r *Relay) pipeGoroutines(ctx context.Context, client, upstream *net.TCPConn, finished [2]bool) (Stats, error) {
	s := &session{client: client, upstream: upstream, resets: &r.resets}
	s.halves[0] = half{label: "client->upstream", cause: causeClientToUpstream, passed: finished[0], s: s, src: client, dst: upstream, live: &r.live[0]}
	s.halves[1] = half{label: "upstream->client", cause: causeUpstreamToClient, passed: finished[1], s: s, src: upstream, dst: client, live: &r.live[1]}
	for i, f := range finished {
		s.halves[i].shutting.Store(f) // the loop sent that FIN
	}

	stop := context.AfterFunc(ctx, s.abortContext)
	defer stop()
	if d := r.opts.IdleTimeout; d > 0 {
		w := startWatchdog(s, d)
		defer w.stop()
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go r.reverseHalf(s, &wg)
	r.runHalf(s, &s.halves[0])
	wg.Wait()
	for i := range s.halves {
		if h := &s.halves[i]; h.watching {
			s.resets.remove(h) // before end: the watch may abort s until then
		}
	}
	s.end() // before the deferred stops, which do not wait for a running callback
	// A peer whose stream toward it is whole (its half passed the FIN on)
	// keeps the FIN, so the tail still in the socket's send buffer goes
	// out behind it; so does one that the session left for the idle
	// timeout or the context's end without dropping bytes the relay
	// acknowledged for it (held, or unread in the source socket).
	c := s.cause.Load()
	failed := c == causeClientToUpstream || c == causeUpstreamToClient
	for _, h := range []*half{&s.halves[0], &s.halves[1]} {
		if !h.passed && (failed || h.cut || h.dropped || unreadConn(h.src)) {
			resetOnClose(h.dst)
		}
	}
	return s.stats(), s.result(ctx)
}

// resetOnClose sets SO_LINGER 0 on c, so that its close sends a reset. A
// session that ended because one of its connections failed (a peer's reset,
// a broken pipe, a kernel's timeout) has each socket whose peer's stream is
// cut short (the direction toward it did not pass its FIN on) closed so, by
// the relay or by its caller: that peer then reads a reset, as it would
// have from the failed peer directly, and never takes a stream cut short
// (bytes dropped in the relay, or never sent by the peer that failed) for a
// whole one, as a FIN would have it do. A socket whose stream is whole keeps
// its FIN, so that the end of the stream still in its send buffer goes out.
// When the context's end or the idle timeout ends the session, a socket
// toward which it drops bytes the relay acknowledged (held, or unread in the
// source socket) is closed so too; one toward which it drops nothing keeps
// its FIN (an idle keep-alive connection).
func resetOnClose(c *net.TCPConn) {
	c.SetLinger(0) // an error: closed by the caller already
}

// unreadConn is unread for a conn: false when its descriptor is gone.
func unreadConn(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var u bool
	rc.Control(func(fd uintptr) { u = unread(int(fd)) })
	return u
}

// reverseHalf runs the upstream->client direction: the one goroutine Pipe starts.
func (r *Relay) reverseHalf(s *session, wg *sync.WaitGroup) {
	defer wg.Done()
	r.runHalf(s, &s.halves[1])
}

// runHalf moves h.src to h.dst until EOF or an error, by splice where it
// can, unless h passed its EOF on already (h.passed).
func (r *Relay) runHalf(s *session, h *half) {
	if !h.passed {
		if err := r.moveHalf(h); err != nil {
			h.cut = err == errCutShort || !isDeadline(err)
			if err == errCutShort {
				// No FIN passed on: the call that took the error ends
				// the session, and the destination is reset (resetOnClose).
				return
			}
			label := h.label
			if errors.As(err, new(dstFailed)) {
				label = s.other(h).label
			}
			h.err = fmt.Errorf("relay: %s: %w", label, err)
			s.abort(h.cause)
			return
		}
		if h.watching {
			// src is at EOF: from now on watchSource, or the session's
			// end, sees its failure.
			s.resets.remove(h)
		}
		h.passed = true
		if h.finReset != nil {
			// The watch took src's error already (after remove, which
			// takes the watch's lock, h.finReset is settled).
			h.err = h.finReset
			s.abort(h.cause)
			return
		}
	}
	if !watchErrors {
		return
	}
	if s.finished.Add(1) == 1 {
		s.watchSource(h)
		return
	}
	// The other half finished first and watches its source: release it.
	s.other(h).src.SetReadDeadline(aLongTimeAgo)
}

// other returns the half of s that is not h.
func (s *session) other(h *half) *half {
	if h == &s.halves[0] {
		return &s.halves[1]
	}
	return &s.halves[0]
}

// dstFailed is a direction's error when its destination failed, not its
// source: a reset that its half-close found (closeWrite; an event loop's
// step). runHalf and a loop's run label it with the direction that reads
// that socket, as when that direction meets the failure itself; on the
// goroutine path the abort cause stays the half's own, so that result
// leaves out the timeout the abort inflicts on the other half.
type dstFailed struct{ err error }

func (e dstFailed) Error() string { return e.err.Error() }
func (e dstFailed) Unwrap() error { return e.err }

// moveHalf moves h.src to h.dst until EOF, which it passes on, or an error.
func (r *Relay) moveHalf(h *half) error {
	if !r.opts.ForceCopy {
		done, err := r.spliceHalf(h)
		if errors.Is(err, errors.ErrUnsupported) {
			done, err = false, nil
		}
		if done {
			return err
		}
	}
	return r.copyHalf(h)
}

// watchSource waits, once h passed its source's EOF on, until the other
// half ends or h's source fails: a reset after the half-close, which nothing
// would read otherwise, and which the other half meets only if its own
// source sends bytes to write there. The failure ends the session. The half
// that ends second releases the watch with a past read deadline, cleared
// here.
func (s *session) watchSource(h *half) {
	rc, err := h.src.SyscallConn()
	if err != nil {
		return
	}
	var failed error
	err = rc.Read(func(fd uintptr) bool {
		failed = sockError(int(fd))
		return failed != nil
	})
	switch {
	case failed != nil:
		h.err = fmt.Errorf("relay: %s: %w", h.label, failed)
		s.abort(h.cause)
	case isDeadline(err) && s.cause.Load() == causeNone:
		h.src.SetReadDeadline(time.Time{})
	}
}

// stall is called each time h's destination has no room and h is about
// to wait for some. While h waits it reads nothing, and the other half may
// wait on that same destination (to read it) or have passed its EOF on
// (it then watches its own source only): no goroutine waits on h's source
// then, and a reset of it would go unseen for as long as the destination
// takes nothing, or until the idle timeout. So, from its first wait on, h
// has the Relay's reset watch watch its source, until that source's EOF
// or the session's end: once per direction, and only for a direction
// that ever waits for room; a direction that never does costs nothing.
func (h *half) stall() {
	if !h.watching {
		h.watching = true
		h.s.resets.add(h)
	}
}

// resetSeen ends s with err, the failure of h's source that the reset watch
// found, under its lock, as if h had met it: labelled with h's direction,
// and with h's abort cause, so that result leaves out the timeout the abort
// inflicts on the other half (and outcome the one it inflicts on h).
//
// A failure after src's FIN (EPIPE: a reset in CLOSE_WAIT; or any error
// once the watch saw the FIN, as a reset in LAST_ACK, which answers
// ECONNRESET) cut nothing short: h passes on what it holds and the FIN, as
// for any session whose destination reads slowly, and then ends s with the
// error (runHalf), where ending s now would drop the end of a whole stream.
func (s *session) resetSeen(h *half, err error) {
	if h.finSeen || errors.Is(err, syscall.EPIPE) {
		h.finReset = fmt.Errorf("relay: %s: %w", h.label, err)
		return
	}
	if h.reset == nil {
		h.reset = fmt.Errorf("relay: %s: %w", h.label, err)
	}
	s.abort(h.cause)
}

// outcome is h's error, or the failure of its source that the reset watch
// found (resetSeen), which stands in for the timeout that the abort
// inflicted on h while it waited for room.
func (h *half) outcome() error {
	if h.reset != nil && (h.err == nil || isDeadline(h.err)) {
		return h.reset
	}
	return orJoin(h.err, h.reset)
}

func (s *session) stats() Stats {
	a, b := &s.halves[0], &s.halves[1]
	return Stats{
		ClientToUpstream: a.bytes,
		UpstreamToClient: b.bytes,
		Spliced:          a.spliced || b.spliced,
		SpliceCalls:      a.spliceCalls + b.spliceCalls,
		Fallback:         a.fallback || b.fallback,
	}
}

// result builds Pipe's error from the halves' errors and the abort cause.
func (s *session) result(ctx context.Context) error {
	e0, e1 := s.halves[0].outcome(), s.halves[1].outcome()
	if e0 == nil && e1 == nil {
		return nil
	}
	switch s.cause.Load() {
	case causeContext:
		if err := ctx.Err(); err != nil {
			return err
		}
	case causeIdle:
		return fmt.Errorf("%w: %w", ErrIdleTimeout, errors.Join(e0, e1))
	case causeClientToUpstream:
		if isDeadline(e1) {
			e1 = nil
		}
	case causeUpstreamToClient:
		if isDeadline(e0) {
			e0 = nil
		}
	}
	return errors.Join(e0, e1)
}

func isDeadline(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// orJoin is errors.Join for two errors, but returns one that is alone as it is.
func orJoin(a, b error) error {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	return errors.Join(a, b)
}
