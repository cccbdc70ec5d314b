package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Drop is why a datagram was not relayed.
type Drop int

// Reasons for dropping a datagram, counted in DatagramStats.Dropped.
const (
	Relayed         Drop = iota // not dropped
	DropStranger                // from an address other than the associated client
	DropFragment                // a fragment; fragments are not reassembled
	DropMalformed               // a header the codec cannot parse
	DropUnresolved              // a destination name that does not resolve
	DropNoClient                // from upstream before the client sent anything
	DropSendFailed              // the kernel refused to send it, or the association ended before it left
	DropUnsolicited             // from upstream, by a source the client has not sent to (Association.Filter)
	NumDrops
)

var dropNames = [NumDrops]string{"relayed", "stranger", "fragment", "malformed", "unresolved", "no_client", "send_failed", "unsolicited"}

// Filter says which datagrams reaching an association's upstream socket go
// on to the client, in RFC 4787's terms.
type Filter int

const (
	// FilterAddrPort relays only datagrams from an address and port the
	// client has sent to (address and port-dependent filtering): replies.
	FilterAddrPort Filter = iota
	// FilterAddr relays datagrams from any port of an address the client
	// has sent to (address-dependent filtering).
	FilterAddr
	// FilterNone relays datagrams from anyone, as a full-cone NAT does
	// (endpoint-independent filtering).
	FilterNone
)

// maxPeers bounds the destinations an association remembers for its
// filter. Past it the set starts again empty: replies from destinations
// the client sent to before then are dropped until it sends to them again.
const maxPeers = 4096

// String returns a short snake_case name for d, fit for a metric label.
func (d Drop) String() string {
	if d < 0 || d >= NumDrops {
		return "unknown"
	}
	return dropNames[d]
}

// Codec translates between the client's datagrams, which carry a header
// naming the far end, and bare payloads. It keeps relay ignorant of the
// header's format. Decode runs in one goroutine and Encode in another.
type Codec interface {
	// Decode parses a datagram from the client and returns its destination
	// and payload (a subslice of b), or the reason to drop it. ctx ends
	// with the association (its ctx, the idle timeout, a failed socket):
	// a Decode that waits (a name lookup) must give up then.
	Decode(ctx context.Context, b []byte) (dst netip.AddrPort, payload []byte, drop Drop)
	// Headroom is the most bytes Encode writes in front of a payload.
	Headroom() int
	// Encode writes the header for a payload from src so that it ends right
	// before b[off], and returns the offset where the datagram starts.
	Encode(b []byte, off int, src netip.AddrPort) int
}

// Association is one UDP ASSOCIATE's sockets and rules.
type Association struct {
	// Client is the relay socket the client sends to; Upstream sends to and
	// receives from destinations. Datagrams closes neither.
	Client, Upstream *net.UDPConn
	// From is the client: only datagrams from its IP are relayed and, when
	// its port is not 0, from that port. With port 0 the port of the first
	// datagram the codec accepts is taken for the rest of the association:
	// one it drops (garbage from another program on the client's host, a
	// fragment) does not tie the association to its port.
	From netip.AddrPort
	// Codec decodes client datagrams and encodes replies.
	Codec Codec
	// IdleTimeout ends the association when no datagram moved either way
	// for this long; 0 means never.
	IdleTimeout time.Duration
	// Filter: which sources' datagrams reach the client. The zero value,
	// FilterAddrPort, relays replies only.
	Filter Filter
}

// DatagramStats counts one association's traffic.
type DatagramStats struct {
	FromClient, ToClient           int64 // datagrams relayed each way
	FromClientBytes, ToClientBytes int64 // payload bytes relayed each way
	Dropped                        [NumDrops]int64
}

// udpCount counts one direction's datagrams and their payload bytes as they
// leave, for Relay.RelayedDatagrams, and those a batch's flush saw the
// kernel refuse, for Relay.DroppedDatagrams, alone on its cache line.
type udpCount struct {
	n, bytes atomic.Int64
	refused  atomic.Int64 // written only when the kernel refuses a datagram
	_        [40]byte
}

// add counts n datagrams of b bytes; a nil c counts nothing.
func (c *udpCount) add(n, b int64) {
	if c != nil && n > 0 {
		c.n.Add(n)
		c.bytes.Add(b)
	}
}

// refuse counts n datagrams the kernel refused at a flush; a nil c counts
// nothing.
func (c *udpCount) refuse(n int64) {
	if c != nil && n > 0 {
		c.refused.Add(n)
	}
}

// RelayedDatagrams returns the datagrams r's associations have sent on
// from their clients and to them, and their payload bytes, running
// associations' included: counted as the kernel takes each batch, not when
// an association ends. It is safe to call at any time, from any goroutine.
func (r *Relay) RelayedDatagrams() (fromClient, toClient, fromClientBytes, toClientBytes int64) {
	return r.udp[0].n.Load(), r.udp[1].n.Load(), r.udp[0].bytes.Load(), r.udp[1].bytes.Load()
}

// DroppedDatagrams returns the datagrams r's associations have dropped, by
// reason (indexed by Drop; Relayed is 0), running associations' included:
// counted as each is dropped, not when its association ends. Each count
// only grows. It is safe to call at any time, from any goroutine.
func (r *Relay) DroppedDatagrams() [NumDrops]int64 {
	var d [NumDrops]int64
	for i := range d {
		d[i] = r.drops[i].Load()
	}
	d[DropSendFailed] += r.udp[0].refused.Load() + r.udp[1].refused.Load()
	return d
}

// errDatagramIdle ends an association that moved nothing for the idle
// timeout; IsIdle tells it.
var errDatagramIdle = errors.New("relay: udp association idle")

// maxDatagram is the largest UDP payload.
const maxDatagram = 65535

// handleFunc processes one datagram: its payload is buf[off:off+n], and
// buf[:off] is free headroom for a header.
type handleFunc func(buf []byte, off, n int, from netip.AddrPort)

// association is the state both directions share. client is the learned
// client address, written once by the client-side loop.
type association struct {
	a        *Association
	r        *Relay
	client   atomic.Pointer[netip.AddrPort]
	progress atomic.Int64
	last     int64              // progress at the previous check; the watchdog's own
	quiet    int                // looks in a row that found no progress; the watchdog's own
	stats    [2]DatagramStats   // one per direction, summed at the end
	cancel   context.CancelFunc // ends the ctx Decode is given; halt calls it

	// mu orders what comes from outside the loops (ctx's end, the idle
	// watchdog) with the end of Datagrams: an abort or a re-arm decided
	// before it but run after it would halt sockets that are the caller's
	// again, report the wrong end, or keep a timer running.
	mu      sync.Mutex
	over    bool        // Datagrams is returning: aborts and re-arms do nothing
	stopped bool        // an abort (ctx, idle timeout) ended it
	idle    bool        // that abort was the idle timeout's
	timer   *time.Timer // the idle watchdog, when on

	peersMu sync.Mutex
	peers   map[netip.AddrPort]struct{} // destinations the client sent to, keyed by peerKey
	lastDst netip.AddrPort              // the client side's last destination, known to be in peers
}

// peerKey is ap as the filter remembers it: unmapped, without a zone (a
// link-local source comes with one, a destination from the header
// without), and without its port for FilterAddr.
func (as *association) peerKey(ap netip.AddrPort) netip.AddrPort {
	ip := ap.Addr().Unmap().WithZone("")
	if as.a.Filter == FilterAddr {
		return netip.AddrPortFrom(ip, 0)
	}
	return netip.AddrPortFrom(ip, ap.Port())
}

// sentTo records that the client sends to dst. It runs before the
// datagram leaves, so that the reply finds dst recorded.
func (as *association) sentTo(dst netip.AddrPort) {
	if as.a.Filter == FilterNone || dst == as.lastDst {
		return
	}
	k := as.peerKey(dst)
	as.peersMu.Lock()
	if _, ok := as.peers[k]; !ok {
		if as.peers == nil || len(as.peers) >= maxPeers {
			as.peers = make(map[netip.AddrPort]struct{})
		}
		as.peers[k] = struct{}{}
	}
	as.peersMu.Unlock()
	as.lastDst = dst
}

// solicited reports whether the filter lets a datagram from src through.
func (as *association) solicited(src netip.AddrPort) bool {
	if as.a.Filter == FilterNone {
		return true
	}
	k := as.peerKey(src)
	as.peersMu.Lock()
	_, ok := as.peers[k]
	as.peersMu.Unlock()
	return ok
}

// drop counts a datagram of st's direction dropped for d, in st and in the
// relay's live count (DroppedDatagrams): one atomic add, off the path of
// the datagrams relayed.
func (as *association) drop(st *DatagramStats, d Drop) {
	st.Dropped[d]++
	as.r.drops[d].Add(1)
}

// Datagrams relays between an association's client and upstream sockets
// until ctx ends, the idle timeout fires, or a socket fails. It starts one
// goroutine, for upstream-to-client, and joins it before returning. A ctx
// that ends is a normal end: the error is nil; the idle timeout's end
// returns an error that IsIdle tells; a socket that fails ends the
// association with its error. Steady-state relaying
// allocates nothing.
func (r *Relay) Datagrams(ctx context.Context, a *Association) (DatagramStats, error) {
	as := &association{a: a, r: r}
	// Decode's ctx: halt cancels it, so that the end of the association
	// (the idle timeout too, which ctx does not see) ends a lookup.
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	as.cancel = cancel
	if a.From.Port() != 0 {
		from := netip.AddrPortFrom(a.From.Addr().Unmap(), a.From.Port())
		as.client.Store(&from)
	}
	stop := context.AfterFunc(ctx, as.abortCtx)
	defer stop()
	if a.IdleTimeout > 0 {
		as.last = -1
		// Stored under mu, which checkIdle takes before it re-arms
		// through as.timer: a short timeout may fire before the store.
		as.mu.Lock()
		as.timer = time.AfterFunc(as.idlePeriod(), as.checkIdle)
		as.mu.Unlock()
	}
	var wg sync.WaitGroup
	var downErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		if downErr = as.upstreamToClient(); downErr != nil {
			as.halt() // a failed socket ends the association
		}
	}()
	upErr := as.clientToUpstream(dctx)
	as.halt()
	wg.Wait()
	stopped, idle := as.end()
	st := as.stats[0]
	st.ToClient, st.ToClientBytes = as.stats[1].ToClient, as.stats[1].ToClientBytes
	for i, n := range as.stats[1].Dropped {
		st.Dropped[i] += n
	}
	if stopped { // ctx or the idle timeout ended it
		if idle {
			return st, errDatagramIdle
		}
		return st, nil
	}
	return st, errors.Join(upErr, downErr)
}

// end marks the association over, both loops returned, and stops the
// watchdog: an abort under way completes first, and one that comes later
// does nothing. It reports whether an abort ended the association, and
// whether that was the idle timeout.
func (as *association) end() (stopped, idle bool) {
	as.mu.Lock()
	defer as.mu.Unlock()
	as.over = true
	if as.timer != nil {
		as.timer.Stop()
	}
	return as.stopped, as.idle
}

// IsIdle reports whether err is the idle-timeout end of Datagrams.
func IsIdle(err error) bool { return errors.Is(err, errDatagramIdle) }

// idleChecks is how many times per idle timeout the watchdog looks: an
// association ends after idleChecks looks in a row found that no datagram
// moved, between 1 and 1 + 1/idleChecks idle timeouts after its last one,
// as a TCP session's --idle-timeout does.
const idleChecks = 4

// idlePeriod is the time between the watchdog's looks.
func (as *association) idlePeriod() time.Duration {
	return max(as.a.IdleTimeout/idleChecks, 1)
}

// checkIdle runs once per idle period in a timer goroutine: it aborts the
// association when idleChecks looks in a row found no datagram moved, and
// re-arms itself otherwise (one timer, no work per datagram). Once the
// association ended (end) it does neither: both are decided under mu.
func (as *association) checkIdle() {
	if now := as.progress.Load(); now != as.last {
		as.last, as.quiet = now, 0
	} else if as.quiet++; as.quiet >= idleChecks {
		as.abort(true)
		return
	}
	as.mu.Lock()
	defer as.mu.Unlock()
	if !as.over && !as.stopped {
		as.timer.Reset(as.idlePeriod())
	}
}

// abortCtx is abort for the end of Datagrams' ctx.
func (as *association) abortCtx() { as.abort(false) }

// abort ends the association normally, by the end of ctx or (idle) by the
// idle timeout: it records which and halts both loops, unless an abort
// came first or Datagrams is returning (end), when the sockets are about
// to be the caller's again.
func (as *association) abort(idle bool) {
	if h := testHookDatagramAbort; h != nil {
		after := h(idle)
		defer after()
	}
	as.mu.Lock()
	defer as.mu.Unlock()
	if as.over || as.stopped {
		return
	}
	as.stopped, as.idle = true, idle
	as.halt()
}

// testHookDatagramAbort, when a test sets it, is called as abort begins,
// and what it returns as abort returns.
var testHookDatagramAbort func(idle bool) (after func())

// halt unblocks both loops by pushing the sockets' deadlines into the past,
// and a Decode waiting on its ctx by cancelling that. The write deadlines
// too: a send waiting for its socket to become writable (a stalled path)
// would otherwise hold Datagrams until it does. What a loop has not yet
// sent is dropped, counted as DropSendFailed.
func (as *association) halt() {
	as.cancel()
	past := time.Unix(1, 0)
	as.a.Client.SetDeadline(past)
	as.a.Upstream.SetDeadline(past)
}

// clientToUpstream relays datagrams from the client, decoding them with
// ctx. Only datagrams from the client's address get past the source check.
func (as *association) clientToUpstream(ctx context.Context) error {
	st := &as.stats[0]
	// A link-local client's address comes with its zone from the control
	// connection, and without one from a raw read: compare without, and
	// send to it with the control connection's zone.
	wantIP := as.a.From.Addr().Unmap().WithZone("")
	zone := as.a.From.Addr().Zone()
	up := newSender(as.a.Upstream, &as.r.udp[0])
	err := readDatagrams(as.a.Client, 0, func(buf []byte, _, n int, from netip.AddrPort) {
		ip := from.Addr().Unmap()
		if ip.WithZone("") != wantIP {
			as.drop(st, DropStranger)
			return
		}
		if ip.Zone() == "" {
			ip = ip.WithZone(zone) // no-op for IPv4 and for an empty zone
		}
		from = netip.AddrPortFrom(ip, from.Port())
		c := as.client.Load()
		if c != nil && *c != from {
			as.drop(st, DropStranger)
			return
		}
		dst, payload, drop := as.a.Codec.Decode(ctx, buf[:n])
		if drop != Relayed {
			as.drop(st, drop)
			return
		}
		if c == nil {
			// The first datagram the codec accepts fixes the client's
			// port; one it dropped did not.
			first := from // its own variable: only the first datagram's escapes
			as.client.Store(&first)
		}
		as.sentTo(dst)
		if err := up.send(payload, dst, int64(len(payload))); err != nil {
			as.drop(st, DropSendFailed)
			return
		}
		as.progress.Add(1)
		st.FromClient++
		st.FromClientBytes += int64(len(payload))
	}, up)
	unsend(up, st, &st.FromClient, &st.FromClientBytes)
	return readErr("udp client->upstream", err)
}

// upstreamToClient relays datagrams from destinations to the client, each
// read behind enough headroom for the codec to put its header in front.
func (as *association) upstreamToClient() error {
	st := &as.stats[1]
	cl := newSender(as.a.Client, &as.r.udp[1])
	err := readDatagrams(as.a.Upstream, as.a.Codec.Headroom(), func(buf []byte, off, n int, from netip.AddrPort) {
		client := as.client.Load()
		if client == nil {
			as.drop(st, DropNoClient)
			return
		}
		if !as.solicited(from) {
			as.drop(st, DropUnsolicited)
			return
		}
		start := as.a.Codec.Encode(buf, off, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
		if err := cl.send(buf[start:off+n], *client, int64(n)); err != nil {
			as.drop(st, DropSendFailed)
			return
		}
		as.progress.Add(1)
		st.ToClient++
		st.ToClientBytes += int64(n)
	}, cl)
	unsend(cl, st, &st.ToClient, &st.ToClientBytes)
	return readErr("udp upstream->client", err)
}

// unsend takes out of a direction's counts (datagrams and bytes, counted
// as each was handed to s) the datagrams s queued and the kernel refused at
// a flush, and counts them as DropSendFailed in st (the relay's live count
// took them at the flush: udpCount.refuse).
func unsend(s *sender, st *DatagramStats, datagrams, bytes *int64) {
	n, b := s.refused()
	*datagrams -= n
	*bytes -= b
	st.Dropped[DropSendFailed] += n
}

// readErr labels a read error; a deadline is the abort signal and is
// reported by Datagrams itself.
func readErr(dir string, err error) error {
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return fmt.Errorf("relay: %s: %w", dir, err)
}
