package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"text/tabwriter"
	"time"
)

// cmdUDPAssociate is the UDP ASSOCIATE command (RFC 1928 section 4).
const cmdUDPAssociate = 0x03

// ErrNoEcho reports a udp run in which no datagram came back (intact, and in
// time): it measured nothing.
var ErrNoEcho = errors.New("bench: udp: no datagram came back")

// udpAssociateRequest asks for an association without naming the client's
// address (0.0.0.0:0): the relay takes the control connection's address.
var udpAssociateRequest = []byte{socksVersion, cmdUDPAssociate, 0, atypIPv4, 0, 0, 0, 0, 0, 0}

// UDPOptions configures a datagram run: one association (or, direct, one
// socket) keeps Window datagrams in flight to a udp-echo target.
type UDPOptions struct {
	Client
	// Target is the udp-echo target's host:port.
	Target string
	// SizeBytes is the payload of each datagram; 0 means 512, at least 16.
	SizeBytes int
	// Window is how many datagrams may await their echo; 0 means 32.
	Window int
}

func (o *UDPOptions) size() int {
	if o.SizeBytes <= 0 {
		return 512
	}
	return max(o.SizeBytes, 16)
}

func (o *UDPOptions) window() int {
	if o.Window > 0 {
		return o.Window
	}
	return 32
}

// UDPResult is the outcome of a datagram run.
type UDPResult struct {
	Mode      string `json:"mode"`
	Proxy     string `json:"proxy,omitempty"`
	SizeBytes int    `json:"size_bytes"`
	Window    int    `json:"window"`
	// Seconds runs from the first datagram sent to the last echo counted in
	// Received (or to the end of sending, if that is later), without the
	// wait for the last datagrams that may be lost.
	Seconds float64 `json:"seconds"`
	// Sent and Received count datagrams; Lost counts those whose echo did
	// not come back within 100 ms of their sending (Sent = Received + Lost).
	// Late counts echoes that came after that, or twice, and freed nothing.
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	Lost     uint64 `json:"lost"`
	Late     uint64 `json:"late,omitempty"`
	// LossPercent is Lost over Sent.
	LossPercent float64 `json:"loss_percent"`
	// DatagramsPerSec is Received over Seconds; Mbps is their payload, one way.
	DatagramsPerSec float64 `json:"datagrams_per_sec"`
	Mbps            float64 `json:"mbps"`
	CPU             *CPU    `json:"cpu,omitempty"`
	Errors          Errors  `json:"errors"`
}

// WriteText writes the result as a readable table.
func (r *UDPResult) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "udp via %s, %d-byte datagrams, window %d, %.2f s\n", via(r.Proxy), r.SizeBytes, r.Window, r.Seconds)
	fmt.Fprintf(tw, "sent\t%d\t\nreceived\t%d\t\nlost\t%d\t%.3f %%\t\n", r.Sent, r.Received, r.Lost, r.LossPercent)
	if r.Late > 0 {
		fmt.Fprintf(tw, "late echoes\t%d\t\n", r.Late)
	}
	fmt.Fprintf(tw, "datagrams/s\t%.0f\t\nMbit/s\t%.1f\t\n", r.DatagramsPerSec, r.Mbps)
	if r.CPU != nil {
		fmt.Fprintf(tw, "relay cpu\t%.2f s\t%.2f cores\t\t\n", r.CPU.Seconds, r.CPU.Cores)
	}
	return flushWithErrors(tw, w, &r.Errors)
}

// udpPath is where datagrams go and how they are wrapped.
type udpPath struct {
	conn   *net.UDPConn // connected to the relay socket, or to the target
	header []byte       // RFC 1928 section 7 header naming the target; nil direct
	ctrl   *net.TCPConn // the association's control connection; nil direct
}

func (p *udpPath) close() {
	p.conn.Close()
	if p.ctrl != nil {
		p.ctrl.Close()
	}
}

// openUDP sets up the path: a UDP ASSOCIATE through the proxy, or a socket
// connected to the target.
func openUDP(ctx context.Context, o *UDPOptions) (*udpPath, error) {
	d, err := NewDialer(o.Proxy, o.Target)
	if err != nil {
		return nil, err
	}
	if !d.proxied {
		c, err := net.Dial("udp", o.Target)
		if err != nil {
			return nil, err
		}
		return &udpPath{conn: c.(*net.UDPConn)}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	c, err := d.dialer.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, err
	}
	ctrl := c.(*net.TCPConn)
	deadline, _ := ctx.Deadline()
	ctrl.SetDeadline(deadline)
	pipelined := append(append(append([]byte(nil), d.greeting...), d.auth...), udpAssociateRequest...)
	bnd, err := d.negotiate(ctrl, udpAssociateRequest, pipelined)
	if err != nil {
		ctrl.Close()
		return nil, &HandshakeError{Proxy: d.addr, Err: err}
	}
	ctrl.SetDeadline(time.Time{})
	if !bnd.IsValid() || bnd.Addr().IsUnspecified() {
		// The relay socket listens where the control connection arrived:
		// BND.ADDR is 0.0.0.0 or ::, or a domain name (whose BND.PORT
		// bnd still holds).
		bnd = netip.AddrPortFrom(ctrl.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(), bnd.Port())
	}
	u, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(bnd))
	if err != nil {
		ctrl.Close()
		return nil, err
	}
	hdr, err := appendConnect(nil, targetHost(o.Target), targetPort(o.Target))
	if err != nil {
		ctrl.Close()
		u.Close()
		return nil, err
	}
	hdr[0], hdr[1], hdr[2] = 0, 0, 0 // RSV, RSV, FRAG in place of VER, CMD, RSV
	return &udpPath{conn: u, header: hdr, ctrl: ctrl}, nil
}

func targetHost(hostport string) string {
	h, _, _ := net.SplitHostPort(hostport)
	return h
}

func targetPort(hostport string) uint16 {
	_, p, _ := net.SplitHostPort(hostport)
	var n uint16
	fmt.Sscan(p, &n)
	return n
}

// lossTimeout is how long a datagram waits for its echo: then it counts as
// lost, its window slot takes the next datagram, and an echo that still comes
// is ignored.
const lossTimeout = 100 * time.Millisecond

// UDP runs datagrams through an association (or directly) until the
// duration or ctx ends, keeping Window datagrams in flight; each echo is
// checked against what was sent and frees its own datagram's window slot. A
// datagram whose echo does not come back within lossTimeout (100 ms) counts
// as lost, and its slot takes the next datagram. The rate is taken from the
// first datagram sent until the last echo came back (or sending stopped, if
// that is later); the wait for the last datagrams, up to lossTimeout after
// sending stops, decides only whether they were lost. A run that sent
// datagrams and had none back has an error (ErrNoEcho): it measured nothing.
func UDP(ctx context.Context, o UDPOptions) (*UDPResult, error) {
	path, err := openUDP(ctx, &o)
	res := &UDPResult{Mode: "udp", Proxy: o.Proxy.Addr, SizeBytes: o.size(), Window: o.window()}
	if err != nil {
		var he *HandshakeError
		if errors.As(err, &he) {
			res.Errors.add(err)
			return res, nil
		}
		return nil, err
	}
	defer path.close()
	smp := sampler{o.PID}
	before, err := smp.sample()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	w := newUDPWindow(o.window(), start, lossTimeout)
	var wg sync.WaitGroup
	var recvErrs Errors
	wg.Add(1)
	go udpReceive(path, o.size(), w, &recvErrs, &wg)
	sendErr := udpSend(ctx, path, o.size(), w, o.duration())
	elapsed := w.finish(time.Since(start))
	path.conn.SetReadDeadline(aLongTimeAgo)
	wg.Wait()
	after, err := smp.sample()
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	res.Sent, res.Received, res.Lost, res.Late = w.sent, w.received, w.lost, w.late
	w.mu.Unlock()
	res.Seconds = elapsed.Seconds()
	if res.Sent > 0 {
		res.LossPercent = 100 * float64(res.Lost) / float64(res.Sent)
	}
	res.DatagramsPerSec = float64(res.Received) / elapsed.Seconds()
	res.Mbps = res.DatagramsPerSec * float64(o.size()) * 8 / 1e6
	res.Errors.merge(&recvErrs)
	if sendErr != nil {
		res.Errors.add(sendErr)
	}
	if res.Sent > 0 && res.Received == 0 {
		// Nothing came back: the rate is 0 and the loss 100 % whatever
		// the relay does, so the run measured nothing.
		late := ""
		if res.Late > 0 {
			late = fmt.Sprintf(" (%d echoes came later)", res.Late)
		}
		res.Errors.add(fmt.Errorf("%w: none of the %d datagrams sent was echoed intact within %v%s",
			ErrNoEcho, res.Sent, lossTimeout, late))
	}
	if o.PID != 0 {
		res.CPU = cpuBetween(o.PID, before, after, elapsed)
	}
	return res, nil
}

// udpWindow tracks the datagrams in flight, in window slots. A datagram's
// sequence number names its slot (seq % slots) and the slot's turn (seq /
// slots), so that an echo frees exactly its own datagram's slot, and a
// second echo, or one that comes after the datagram counted as lost, frees
// nothing. The slots in flight are linked oldest first, so that the oldest is
// reclaimed, and counted lost, once the loss timeout has passed.
type udpWindow struct {
	start   time.Time
	timeout time.Duration
	freed   chan struct{} // wakes a waiter when a slot is freed

	mu         sync.Mutex
	slots      []udpSlot
	head, tail int  // slots in flight, oldest first; -1 when none
	free       int  // free slots, linked by next; -1 when none
	waiting    bool // someone waits on freed
	// sent, received and lost count datagrams (received + lost = sent once
	// nothing is in flight); late counts echoes that freed nothing.
	sent, received, lost, late uint64
	lastEcho                   time.Duration // since start, of the last echo that freed a slot
}

type udpSlot struct {
	seq        uint64        // the datagram in the slot, while busy
	turns      uint64        // datagrams the slot has carried
	sentAt     time.Duration // since start
	prev, next int
	busy       bool
}

func newUDPWindow(n int, start time.Time, timeout time.Duration) *udpWindow {
	w := &udpWindow{start: start, timeout: timeout, freed: make(chan struct{}, 1),
		slots: make([]udpSlot, n), head: -1, tail: -1, free: 0}
	for i := range w.slots {
		w.slots[i].next = i + 1
	}
	w.slots[n-1].next = -1
	return w
}

// expire counts as lost the datagrams sent timeout or longer before now and
// frees their slots. w.mu is held.
func (w *udpWindow) expire(now time.Duration) {
	for w.head >= 0 && now-w.slots[w.head].sentAt >= w.timeout {
		w.release(w.head)
		w.lost++
	}
}

// release takes slot i off the list in flight and frees it. w.mu is held.
func (w *udpWindow) release(i int) {
	s := &w.slots[i]
	if s.prev >= 0 {
		w.slots[s.prev].next = s.next
	} else {
		w.head = s.next
	}
	if s.next >= 0 {
		w.slots[s.next].prev = s.prev
	} else {
		w.tail = s.prev
	}
	s.busy = false
	s.next = w.free
	w.free = i
}

// take claims a free slot for a datagram sent now and returns its sequence
// number. With every slot in flight it returns false and, in wake, when the
// oldest datagram's time runs out; freed then signals an echo.
func (w *udpWindow) take(now time.Duration) (seq uint64, ok bool, wake time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.expire(now)
	i := w.free
	if i < 0 {
		w.waiting = true
		return 0, false, w.slots[w.head].sentAt + w.timeout
	}
	s := &w.slots[i]
	w.free = s.next
	s.seq = s.turns*uint64(len(w.slots)) + uint64(i)
	s.turns++
	s.sentAt, s.busy = now, true
	s.prev, s.next = w.tail, -1
	if w.tail >= 0 {
		w.slots[w.tail].next = i
	} else {
		w.head = i
	}
	w.tail = i
	w.sent++
	return s.seq, true, 0
}

// untake gives back the slot of a datagram that could not be sent.
func (w *udpWindow) untake(seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.release(int(seq % uint64(len(w.slots))))
	w.sent--
}

// echo records a verified echo of seq arriving now: it frees the datagram's
// slot if the datagram is still in flight, and is counted late if not.
func (w *udpWindow) echo(seq uint64, now time.Duration) {
	w.mu.Lock()
	i := int(seq % uint64(len(w.slots)))
	if s := &w.slots[i]; !s.busy || s.seq != seq {
		w.late++
		w.mu.Unlock()
		return
	}
	w.release(i)
	w.received++
	w.lastEcho = now
	wake := w.waiting
	w.waiting = false
	w.mu.Unlock()
	if wake {
		select {
		case w.freed <- struct{}{}:
		default:
		}
	}
}

// settle counts as lost what has run out of time and reports whether any
// datagram is still in flight, and if so when the oldest one's time runs out.
func (w *udpWindow) settle(now time.Duration) (busy bool, wake time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.expire(now)
	if w.head < 0 {
		return false, 0
	}
	w.waiting = true
	return true, w.slots[w.head].sentAt + w.timeout
}

// finish waits until every datagram sent has its echo or has counted as
// lost (drain) and returns the run's time: from the start to the last echo
// counted, or to sendingEnd, when sending stopped, if that is later. The
// wait for the last datagrams decides only whether they were lost: it is no
// part of the run's time (before, it added up to 200 ms to any run that lost
// a datagram).
func (w *udpWindow) finish(sendingEnd time.Duration) time.Duration {
	w.drain()
	// Nothing is in flight now: a later echo is late and moves no time.
	w.mu.Lock()
	defer w.mu.Unlock()
	return max(sendingEnd, w.lastEcho)
}

// drain waits until every datagram sent has its echo or has counted as lost.
func (w *udpWindow) drain() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		now := time.Since(w.start)
		busy, wake := w.settle(now)
		if !busy {
			return
		}
		t.Reset(wake - now)
		select {
		case <-w.freed:
		case <-t.C:
		}
	}
}

// udpSend sends numbered datagrams while a window slot is free, for d from
// w's start.
func udpSend(ctx context.Context, p *udpPath, size int, w *udpWindow, d time.Duration) error {
	msg := make([]byte, len(p.header)+size)
	copy(msg, p.header)
	payload := msg[len(p.header):]
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for ctx.Err() == nil {
		now := time.Since(w.start)
		if now >= d {
			return nil
		}
		seq, ok, wake := w.take(now)
		if !ok {
			// The window is full: wait for an echo, for the oldest
			// datagram's time to run out, or for the end.
			select {
			case <-w.freed:
				continue
			default:
			}
			t.Reset(min(wake, d) - now)
			select {
			case <-w.freed:
			case <-t.C:
			case <-ctx.Done():
				return nil
			}
			continue
		}
		fillDatagram(payload, seq)
		if _, err := p.conn.Write(msg); err != nil {
			w.untake(seq)
			return fmt.Errorf("bench: udp: send: %w", err)
		}
	}
	return nil
}

// udpReceive reads echoes until its socket's deadline passes, checks them
// and gives each to w.
func udpReceive(p *udpPath, size int, w *udpWindow, errs *Errors, wg *sync.WaitGroup) {
	defer wg.Done()
	buf := make([]byte, 65536)
	want := make([]byte, size)
	for {
		n, err := p.conn.Read(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
				errs.add(fmt.Errorf("bench: udp: receive: %w", err))
			}
			return
		}
		now := time.Since(w.start)
		got := buf[:n]
		if p.header != nil {
			hl := udpHeaderLen(got)
			if hl < 0 {
				errs.add(fmt.Errorf("%w: udp: malformed header", ErrMismatch))
				continue
			}
			got = got[hl:]
		}
		if len(got) != size {
			errs.add(fmt.Errorf("%w: udp: echo of %d bytes, want %d", ErrMismatch, len(got), size))
			continue
		}
		seq := binary.BigEndian.Uint64(got)
		fillDatagram(want, seq)
		if string(got) != string(want) {
			errs.add(fmt.Errorf("%w: udp: echo differs from the datagram", ErrMismatch))
			continue
		}
		w.echo(seq, now)
	}
}

// fillDatagram writes seq and a pattern derived from it into b.
func fillDatagram(b []byte, seq uint64) {
	binary.BigEndian.PutUint64(b, seq)
	x := seq*0x9e3779b97f4a7c15 + 1
	for i := 8; i < len(b); i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
}

// udpHeaderLen returns the length of the RFC 1928 header at the start of b,
// or -1 when it is not a whole, unfragmented header.
func udpHeaderLen(b []byte) int {
	if len(b) < 4 || b[0] != 0 || b[1] != 0 || b[2] != 0 {
		return -1
	}
	n := -1
	switch b[3] {
	case atypIPv4:
		n = 4 + net.IPv4len + 2
	case atypIPv6:
		n = 4 + net.IPv6len + 2
	case atypDomain:
		if len(b) > 4 {
			n = 5 + int(b[4]) + 2
		}
	}
	if n > len(b) {
		return -1
	}
	return n
}

// ServeUDPEcho echoes every datagram received on pc back to its sender until
// ctx ends; it then closes pc and returns nil.
func ServeUDPEcho(ctx context.Context, pc net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("bench: udp-echo: %w", err)
		}
		pc.WriteTo(buf[:n], from)
	}
}
