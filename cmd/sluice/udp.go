package main

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"sluice/handshake"
	"sluice/relay"
)

// errControlGone fails a UDP ASSOCIATE whose control connection failed
// before the association began (the socket no longer has an address).
var errControlGone = errors.New("udp associate: control connection gone")

// associate serves a UDP ASSOCIATE request (RFC 1928 sections 4 and 7): it
// opens a relay socket on the IP the client reached sluice on (never on every
// interface), announces it in the success reply and relays datagrams until
// the control connection closes or the association is idle for the UDP idle
// timeout. Every socket it opens is closed before it returns. An error
// before the reply gets a reply from the caller; later ones are errReplied.
//
// Every datagram's destination is checked against the destination rules
// (for a name, each time it is resolved); denied is how many were dropped
// for that, reported to relay as DropUnresolved since relay has no reason
// for policy.
//
// client is the control connection's peer as accepted: a bare socket
// adopted into package net after its client reset has no RemoteAddr.
func (s *server) associate(ctx context.Context, lv *live, c *net.TCPConn, client netip.AddrPort, r *handshake.Request) (st relay.DatagramStats, denied int64, err error) {
	req := r.Addr
	la, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return st, 0, errControlGone
	}
	local := la.AddrPort().Addr()
	peer := client.Addr().Unmap()
	// Datagrams are taken from the control connection's IP only; a non-zero
	// DST.PORT also fixes the client's port, whatever type DST.ADDR has.
	// DST.ADDR is not trusted: behind a NAT it is often the client's
	// private address.
	port := req.Port
	clientSide, err := s.tune.ListenUDP(ctx, "udp", netip.AddrPortFrom(local, 0), false)
	if err != nil {
		return st, 0, err
	}
	defer clientSide.Close()
	// An IPv4-mapped --source-addr is an IPv4 source, as for CONNECT: as
	// given, it made a v6-only socket that cannot bind it.
	src := s.tune.SourceAddr.Unmap()
	upstream, err := s.tune.ListenUDP(ctx, udpNetwork(src), netip.AddrPortFrom(src, 0), true)
	if err != nil {
		return st, 0, err
	}
	defer upstream.Close()
	if err := r.WriteReply(c, handshake.Succeeded, clientSide.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		return st, 0, errReplied{errReplyUnsent{err}}
	}
	c.SetDeadline(time.Time{})
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go drainControl(c, cancel, done)
	codec := &socksCodec{src: src, resolver: s.dialer.Resolver, timeout: s.tune.DialTimeout, rules: lv.rules, metrics: s.metrics}
	st, err = s.relay.Datagrams(actx, &relay.Association{
		Client:      clientSide,
		Upstream:    upstream,
		From:        netip.AddrPortFrom(peer, port),
		Codec:       codec,
		IdleTimeout: lv.udpIdleTimeout,
		Filter:      lv.udpFilter,
	})
	c.SetReadDeadline(time.Unix(1, 0)) // ends drainControl if the client is still there
	<-done
	if err == nil && ctx.Err() != nil {
		err = ctx.Err() // the drain's end stopped it, as it stops a relayed CONNECT
	}
	if err != nil {
		err = errReplied{err}
	}
	return st, codec.denied, err // Datagrams has joined the goroutine of Decode
}

// errReplyUnsent is the error of an association's success reply that could
// not be written: the client got no reply, and the session ends as one
// closed before one (reply none), as a CONNECT's or a BIND's does.
type errReplyUnsent struct{ error }

func (e errReplyUnsent) Unwrap() error { return e.error }

// udpNetwork is the network for the upstream UDP socket: dual-stack unless a
// source address fixes the family.
func udpNetwork(src netip.Addr) string {
	switch {
	case !src.IsValid():
		return "udp"
	case src.Is4():
		return "udp4"
	}
	return "udp6"
}

// drainControl reads and discards what the client sends on the control
// connection of an association until it closes, then calls cancel: RFC 1928
// ties the association's life to that connection. It closes done on return.
func drainControl(c *net.TCPConn, cancel context.CancelFunc, done chan<- struct{}) {
	defer close(done)
	var b [64]byte
	for {
		if _, err := c.Read(b[:]); err != nil {
			cancel()
			return
		}
	}
}

// maxCachedNames bounds the per-association cache of resolved names.
const maxCachedNames = 256

// unresolvedRetry is how long a name that did not resolve stays unresolved
// in an association's cache before a datagram to it has it looked up again,
// at the least: a failed lookup that took longer (a DNS server that times
// out) waits three times as long as it took, so that a failing name holds
// the association's datagrams (Decode waits for its lookups) for at most a
// quarter of the time. A transient failure is not kept for the association's
// life.
const unresolvedRetry = 5 * time.Second

// socksCodec is the RFC 1928 section 7 datagram header, for relay.Datagrams.
// Decode runs in one goroutine only, so its cache needs no lock. Domain
// destinations are resolved once and cached for the association's life (up
// to maxCachedNames names, past which a new one takes any one's place); a
// name that did not resolve is looked up again after unresolvedRetry.
//
// A reply is named as the client named its source: an IPv4 address the
// client sent to as IPv4-mapped IPv6 (ATYP 4, ::ffff:a.b.c.d) comes back
// in that form, since a client matches replies against the address it sent
// to. Decode records those addresses and Encode, in the relay's other
// goroutine, reads them.
type socksCodec struct {
	src      netip.Addr // the upstream socket's source address (none: dual-stack), whose family a name's address must have
	resolver *net.Resolver
	timeout  time.Duration
	names    map[string]nameEntry
	rules    *policy          // nil: every destination
	denied   int64            // datagrams the rules refused
	now      func() time.Time // nil: time.Now
	metrics  *metrics         // counts what Decode drops as DropUnresolved, as it does (nil: nothing)

	anyMapped atomic.Bool // mapped has held an address: Encode looks there
	mappedMu  sync.Mutex
	mapped    map[netip.Addr]struct{} // IPv4 addresses whose latest datagram named them IPv4-mapped
}

// maxMapped bounds socksCodec.mapped: past it the set starts again empty,
// and replies from the addresses it held are named as IPv4 (ATYP 1) until
// the client sends to them again.
const maxMapped = 4096

// nameEntry is a name in an association's cache.
type nameEntry struct {
	ip    netip.Addr // invalid: the name did not resolve
	retry time.Time  // when an unresolved name is looked up again
}

func (k *socksCodec) clock() time.Time {
	if k.now != nil {
		return k.now()
	}
	return time.Now()
}

// Decode parses the header of a client datagram. FRAG comes first: a
// fragment (RSV zero, FRAG not) is dropped as one whatever follows, an
// address type sluice does not know or a truncated address included (RFC
// 1928 section 7: an implementation that does not support fragmentation
// MUST drop any datagram whose FRAG field is other than X'00').
func (k *socksCodec) Decode(ctx context.Context, b []byte) (netip.AddrPort, []byte, relay.Drop) {
	if len(b) >= 3 && b[0] == 0 && b[1] == 0 && b[2] != 0 {
		return netip.AddrPort{}, nil, relay.DropFragment
	}
	h, n, err := handshake.ParseUDPHeader(b)
	switch {
	case err != nil:
		return netip.AddrPort{}, nil, relay.DropMalformed
	case h.Addr.Type != handshake.AddrDomain:
		if !k.rules.allowed(cmdUDP, nil, h.Addr.IP, h.Addr.Port) {
			return k.unresolved(true)
		}
		ip := sendTo(h.Addr.IP)
		k.noteForm(ip, h.Addr.Type == handshake.AddrIPv6 && h.Addr.IP.Is4In6())
		return netip.AddrPortFrom(ip, h.Addr.Port), b[n:], relay.Relayed
	}
	if !k.rules.mayAllowTo(cmdUDP, h.Addr.Name, h.Addr.Port) {
		// Denied whatever it resolves to (a rule on the name alone): no
		// lookup, which would carry the name to its domain's servers.
		return k.unresolved(true)
	}
	e, ok := k.names[string(h.Addr.Name)]
	if !ok || (!e.ip.IsValid() && !k.clock().Before(e.retry)) {
		e.ip = k.resolve(ctx, string(h.Addr.Name))
	}
	ip := e.ip
	if !ip.IsValid() {
		return k.unresolved(false)
	}
	if !k.rules.allowed(cmdUDP, h.Addr.Name, ip, h.Addr.Port) {
		return k.unresolved(true)
	}
	return netip.AddrPortFrom(sendTo(ip), h.Addr.Port), b[n:], relay.Relayed
}

// unresolved is Decode's answer for a datagram dropped as DropUnresolved:
// denied when the destination rules refused it, else its name did not
// resolve. The relay counts DropUnresolved without telling the two apart;
// the metrics count each here, as it is dropped.
func (k *socksCodec) unresolved(denied bool) (netip.AddrPort, []byte, relay.Drop) {
	if denied {
		k.denied++
	}
	k.metrics.udpUnresolved(denied)
	return netip.AddrPort{}, nil, relay.DropUnresolved
}

// sendTo is the address a datagram for ip goes to: ip, unmapped, but for
// 0.0.0.0 and ::, which Linux delivers to this host, the loopback address
// that answers, so that the answer is the reply the filter expects, not a
// stranger's datagram (the rules match them as that address already).
func sendTo(ip netip.Addr) netip.Addr {
	if ip = ip.Unmap(); ip.IsUnspecified() {
		return unspecifiedReaches(ip)
	}
	return ip
}

// resolve looks name up, preferring IPv4 (only the upstream socket's family
// when it has one, as dialName with a source address), and caches the
// answer, a failure too until its retry time; a full cache makes room by
// dropping any one name, so that no name is looked up per datagram.
func (k *socksCodec) resolve(ctx context.Context, name string) netip.Addr {
	timeout := k.timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r := k.resolver
	if r == nil {
		r = net.DefaultResolver
	}
	var ip netip.Addr
	start := k.clock()
	if ips, err := lookupZoned(ctx, r, name); err == nil {
		for _, a := range ips {
			if !reachableFrom(k.src, a) {
				continue // the upstream socket cannot send there
			}
			if !ip.IsValid() || a.Is4() && !ip.Is4() {
				ip = a
			}
		}
	}
	e := nameEntry{ip: ip}
	if !ip.IsValid() {
		now := k.clock()
		e.retry = now.Add(max(unresolvedRetry, 3*now.Sub(start)))
	}
	if k.names == nil {
		k.names = make(map[string]nameEntry)
	}
	if _, held := k.names[name]; !held && len(k.names) >= maxCachedNames {
		for n := range k.names { // any one: map order is random
			delete(k.names, n)
			break
		}
	}
	k.names[name] = e
	return ip
}

// noteForm records whether the client named ip, a destination it sends
// to, IPv4-mapped, for Encode. Until it first does, nothing is locked.
func (k *socksCodec) noteForm(ip netip.Addr, mapped bool) {
	if !ip.Is4() || !mapped && !k.anyMapped.Load() {
		return
	}
	k.mappedMu.Lock()
	defer k.mappedMu.Unlock()
	if !mapped {
		delete(k.mapped, ip)
		return
	}
	if _, ok := k.mapped[ip]; !ok {
		if k.mapped == nil || len(k.mapped) >= maxMapped {
			k.mapped = make(map[netip.Addr]struct{})
		}
		k.mapped[ip] = struct{}{}
		k.anyMapped.Store(true)
	}
}

// namedMapped reports whether the client last named ip IPv4-mapped.
func (k *socksCodec) namedMapped(ip netip.Addr) bool {
	if !k.anyMapped.Load() || !ip.Is4() {
		return false
	}
	k.mappedMu.Lock()
	defer k.mappedMu.Unlock()
	_, ok := k.mapped[ip]
	return ok
}

// Headroom is the longest header Encode writes (IPv6).
func (k *socksCodec) Headroom() int { return 3 + 1 + 16 + 2 }

// Encode puts the header naming src right before b[off]: IPv4-mapped
// (ATYP 4) when the client named src's address so, else as src is.
func (k *socksCodec) Encode(b []byte, off int, src netip.AddrPort) int {
	if k.namedMapped(src.Addr()) {
		start := off - (3 + 1 + 16 + 2)
		handshake.AppendUDPHeader(b[start:start], handshake.UDPHeader{Addr: handshake.Addr{
			Type: handshake.AddrIPv6, IP: netip.AddrFrom16(src.Addr().As16()), Port: src.Port()}})
		return start
	}
	start := off - handshake.UDPHeaderLen(src)
	handshake.PutUDPHeader(b[start:], src)
	return start
}

// udpFilters maps --udp-filter's values to the relay's filters.
var udpFilters = map[string]relay.Filter{
	"addr-port": relay.FilterAddrPort,
	"addr":      relay.FilterAddr,
	"none":      relay.FilterNone,
}

func validUDPFilter(v string) bool {
	_, ok := udpFilters[v]
	return ok
}
