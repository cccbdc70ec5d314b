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
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// cmdUDPAssociate is the UDP ASSOCIATE command (RFC 1928 section 4).
const cmdUDPAssociate = 0x03

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
	Mode      string  `json:"mode"`
	Proxy     string  `json:"proxy,omitempty"`
	SizeBytes int     `json:"size_bytes"`
	Window    int     `json:"window"`
	Seconds   float64 `json:"seconds"`
	// Sent and Received count datagrams; Lost is Sent - Received after the
	// run drained.
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	Lost     uint64 `json:"lost"`
	// LossPercent is Lost over Sent.
	LossPercent float64 `json:"loss_percent"`
	// DatagramsPerSec counts verified echoes; Mbps is their payload, one way.
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
		// The relay socket listens where the control connection arrived.
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

// UDP runs datagrams through an association (or directly) until the
// duration or ctx ends, keeping Window datagrams in flight; each echo is
// checked against what was sent. A datagram whose echo does not come back
// within 100 ms frees its window slot and counts as lost at the end.
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
	var sent, received atomic.Uint64
	slots := make(chan struct{}, o.window())
	start := time.Now()
	end := start.Add(o.duration())
	var wg sync.WaitGroup
	var recvErrs Errors
	wg.Add(1)
	go udpReceive(path, o.size(), slots, &received, &recvErrs, &wg)
	sendErr := udpSend(ctx, path, o.size(), slots, &sent, end)
	// Drain: let the last echoes arrive, then unblock the receiver.
	drainUntil := time.Now().Add(200 * time.Millisecond)
	for received.Load() < sent.Load() && time.Now().Before(drainUntil) {
		<-time.After(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	path.conn.SetReadDeadline(aLongTimeAgo)
	wg.Wait()
	after, err := smp.sample()
	if err != nil {
		return nil, err
	}
	res.Seconds = elapsed.Seconds()
	res.Sent, res.Received = sent.Load(), received.Load()
	res.Lost = res.Sent - min(res.Received, res.Sent)
	if res.Sent > 0 {
		res.LossPercent = 100 * float64(res.Lost) / float64(res.Sent)
	}
	res.DatagramsPerSec = float64(res.Received) / elapsed.Seconds()
	res.Mbps = res.DatagramsPerSec * float64(o.size()) * 8 / 1e6
	res.Errors.merge(&recvErrs)
	if sendErr != nil {
		res.Errors.add(sendErr)
	}
	if o.PID != 0 {
		res.CPU = cpuBetween(o.PID, before, after, elapsed)
	}
	return res, nil
}

// udpSend sends numbered datagrams while a window slot is free, until end.
func udpSend(ctx context.Context, p *udpPath, size int, slots chan struct{}, sent *atomic.Uint64, end time.Time) error {
	msg := make([]byte, len(p.header)+size)
	copy(msg, p.header)
	payload := msg[len(p.header):]
	lost := time.NewTimer(time.Hour)
	defer lost.Stop()
	for seq := uint64(0); ctx.Err() == nil && time.Now().Before(end); seq++ {
		select {
		case slots <- struct{}{}:
		default:
			// The window is full: wait for an echo, or give up on one.
			lost.Reset(100 * time.Millisecond)
			select {
			case slots <- struct{}{}:
			case <-lost.C:
				<-slots // a datagram (or its echo) was lost: free its slot
				slots <- struct{}{}
			case <-ctx.Done():
				return nil
			}
		}
		fillDatagram(payload, seq)
		if _, err := p.conn.Write(msg); err != nil {
			return fmt.Errorf("bench: udp: send: %w", err)
		}
		sent.Add(1)
	}
	return nil
}

// udpReceive reads echoes until its socket's deadline passes, checks them
// and frees a window slot for each.
func udpReceive(p *udpPath, size int, slots chan struct{}, received *atomic.Uint64, errs *Errors, wg *sync.WaitGroup) {
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
		fillDatagram(want, binary.BigEndian.Uint64(got))
		if string(got) != string(want) {
			errs.add(fmt.Errorf("%w: udp: echo differs from the datagram", ErrMismatch))
			continue
		}
		received.Add(1)
		select {
		case <-slots:
		default:
		}
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
