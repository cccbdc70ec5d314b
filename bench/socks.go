package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// Wire values of the SOCKS5 exchange the client speaks (RFC 1928, RFC 1929).
const (
	socksVersion  = 0x05
	authVersion   = 0x01
	methodNone    = 0x00
	methodUser    = 0x02
	methodNoMatch = 0xff
	cmdConnect    = 0x01
	atypIPv4      = 0x01
	atypDomain    = 0x03
	atypIPv6      = 0x04
)

// Errors the SOCKS client reports; replies other than success come as a
// *ReplyError.
var (
	ErrBadVersion     = errors.New("bench: socks: server answered with a version other than 5")
	ErrMethodRejected = errors.New("bench: socks: server accepted none of the offered methods")
	ErrAuthFailed     = errors.New("bench: socks: username/password rejected")
	ErrBadReply       = errors.New("bench: socks: malformed reply")
	ErrShortReply     = errors.New("bench: socks: reply shorter than 10 bytes (a domain name of 1 or 2 bytes as BND.ADDR)")
)

// replyMin is how much of a reply the client reads at once: the length of a
// reply whose BND.ADDR is an IPv4 address, the shortest any server sends in
// practice (curl reads as much first). Only a domain name of 1 or 2 bytes
// makes a shorter reply; the client then reports ErrShortReply, at once when
// payload or the server's close completed the 10 bytes, else when the
// handshake's timeout ends the wait for them.
const replyMin = 4 + net.IPv4len + 2

// ReplyError is a SOCKS5 reply other than success.
type ReplyError struct {
	// Code is the REP field of the reply.
	Code byte
}

var replyNames = [...]string{
	"succeeded", "general failure", "not allowed by ruleset", "network unreachable",
	"host unreachable", "connection refused", "TTL expired", "command not supported",
	"address type not supported",
}

// Error names the reply code.
func (e *ReplyError) Error() string {
	name := "unassigned"
	if int(e.Code) < len(replyNames) {
		name = replyNames[e.Code]
	}
	return fmt.Sprintf("bench: socks: reply 0x%02x (%s)", e.Code, name)
}

// Dialer opens TCP connections to one target, through a SOCKS5 proxy or
// directly. The handshake bytes are built once by NewDialer, so a Dialer is
// cheap to use in a loop and safe for concurrent use.
type Dialer struct {
	addr      string // where the TCP connect goes: the proxy, or the target when direct
	proxied   bool
	lockstep  bool
	greeting  []byte // method selection
	auth      []byte // RFC 1929 request; nil without credentials
	request   []byte // CONNECT request
	pipelined []byte // greeting [+ auth] + request, sent in one write
	timeout   time.Duration
	allPorts  bool
	dialer    net.Dialer
}

// Proxy says how to reach the proxy under test. The zero value means
// "connect directly".
type Proxy struct {
	// Addr is the proxy's host:port; empty means connect to the target directly.
	Addr string
	// User and Pass, when User is not empty, are sent with RFC 1929
	// username/password authentication; otherwise only "no auth" is offered.
	User, Pass string
	// Lockstep waits for each answer before sending the next message. By
	// default the greeting, any authentication and the request go out in one
	// write, which servers that read each frame exactly handle; servers that
	// read a whole segment per stage and drop the rest need Lockstep.
	Lockstep bool
	// Timeout bounds the TCP connect plus the handshake; 0 means 5 s.
	Timeout time.Duration
	// AllPorts sets IP_LOCAL_PORT_RANGE on each connection to the whole of
	// net.ipv4.ip_local_port_range (Linux 6.3 and later), so that connect
	// searches odd and even ports alike instead of the even ones first. A
	// load generator that opens and closes connections to one address as
	// fast as it can holds each closed connection's port in TIME_WAIT; the
	// even ports alone cap it near half the range per second, and their
	// longer search takes CPU from a relay sharing the machine. The price:
	// for 60 s after such a run every port of the source address may hold
	// a TIME_WAIT, and bind with port 0 there fails meanwhile.
	AllPorts bool
}

func (p Proxy) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return 5 * time.Second
}

// NewDialer checks the addresses and prepares the handshake for target,
// a host:port where host is an IP address or a name the proxy resolves.
func NewDialer(p Proxy, target string) (*Dialer, error) {
	host, portStr, err := net.SplitHostPort(target)
	if err != nil {
		return nil, fmt.Errorf("bench: target: %w", err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("bench: target port %q: %w", portStr, err)
	}
	d := &Dialer{addr: target, timeout: p.timeout(), lockstep: p.Lockstep, allPorts: p.AllPorts}
	d.dialer.Control = dialControl(false, p.AllPorts)
	// No keepalive probes: the load's connections live for seconds at most
	// on loopback, and enabling them costs four setsockopt calls per
	// connection, a fifth of the client's system calls in an rr run.
	d.dialer.KeepAlive = -1
	if p.Addr == "" {
		return d, nil
	}
	if _, _, err := net.SplitHostPort(p.Addr); err != nil {
		return nil, fmt.Errorf("bench: proxy: %w", err)
	}
	d.addr, d.proxied = p.Addr, true
	if p.User != "" {
		if len(p.User) > 255 || len(p.Pass) > 255 {
			return nil, errors.New("bench: socks: username and password must be at most 255 bytes")
		}
		d.greeting = []byte{socksVersion, 1, methodUser}
		d.auth = append([]byte{authVersion, byte(len(p.User))}, p.User...)
		d.auth = append(append(d.auth, byte(len(p.Pass))), p.Pass...)
	} else {
		d.greeting = []byte{socksVersion, 1, methodNone}
	}
	d.request, err = appendConnect(nil, host, uint16(port))
	if err != nil {
		return nil, err
	}
	d.pipelined = append(append(append([]byte(nil), d.greeting...), d.auth...), d.request...)
	return d, nil
}

// appendConnect appends a CONNECT request for host:port to b.
func appendConnect(b []byte, host string, port uint16) ([]byte, error) {
	b = append(b, socksVersion, cmdConnect, 0)
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		if ip.Is4() {
			b = append(b, atypIPv4)
		} else {
			b = append(b, atypIPv6)
		}
		b = append(b, ip.AsSlice()...)
	} else {
		if len(host) == 0 || len(host) > 255 {
			return nil, fmt.Errorf("bench: socks: host name %q must be 1 to 255 bytes", host)
		}
		b = append(append(b, atypDomain, byte(len(host))), host...)
	}
	return binary.BigEndian.AppendUint16(b, port), nil
}

// Proxied reports whether connections go through a SOCKS5 proxy.
func (d *Dialer) Proxied() bool { return d.proxied }

// Dial connects to the target, through the proxy when there is one, and
// returns the connection ready for data. The caller owns and closes it.
func (d *Dialer) Dial(ctx context.Context) (*net.TCPConn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	c, err := d.dialer.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	if !d.proxied {
		return tc, nil
	}
	deadline, _ := ctx.Deadline()
	_ = tc.SetDeadline(deadline)
	if err := d.handshake(tc); err != nil {
		tc.Close()
		return nil, &HandshakeError{Proxy: d.addr, Err: err}
	}
	if err := tc.SetDeadline(time.Time{}); err != nil {
		tc.Close()
		return nil, err
	}
	return tc, nil
}

// From returns a copy of d whose connections leave from source (port 0: the
// kernel's choice at connect). Several loopback sources give a load
// generator several sets of ephemeral ports towards one proxy or target.
func (d *Dialer) From(source netip.Addr) *Dialer {
	c := *d
	c.dialer.LocalAddr = &net.TCPAddr{IP: source.AsSlice(), Zone: source.Zone()}
	c.dialer.Control = dialControl(true, d.allPorts)
	return &c
}

// handshake runs the SOCKS5 exchange on c, reading exactly the reply frames
// so that no payload byte is consumed.
func (d *Dialer) handshake(c *net.TCPConn) error {
	_, err := d.negotiate(c, d.request, d.pipelined)
	return err
}

// negotiate runs greeting, any authentication and request on c, pipelined
// (greeting, auth and request in one write) unless in lockstep, and returns
// the reply's BND address as connect does.
func (d *Dialer) negotiate(c *net.TCPConn, request, pipelined []byte) (netip.AddrPort, error) {
	var b [2 + 2 + 5 + 255 + 2]byte
	if d.lockstep {
		if err := d.exchange(c, d.greeting, b[:2]); err != nil {
			return netip.AddrPort{}, err
		}
		if d.auth != nil {
			if err := d.exchange(c, d.auth, b[:4]); err != nil {
				return netip.AddrPort{}, err
			}
		}
		return d.connect(c, b[:], request, 0)
	}
	pre := 2
	if d.auth != nil {
		pre = 4
	}
	return d.connect(c, b[:], pipelined, pre)
}

// exchange writes msg and reads the method answer (len(b) == 2) or the
// auth status (len(b) == 4, the first two bytes already checked).
func (d *Dialer) exchange(c *net.TCPConn, msg, b []byte) error {
	if _, err := c.Write(msg); err != nil {
		return err
	}
	n, err := io.ReadFull(c, b[len(b)-2:])
	if cerr := d.checkAnswers(b[:len(b)-2+n]); cerr != nil {
		return cerr
	}
	return err
}

// checkAnswers checks the method answer and, when b is long enough, the
// RFC 1929 status; b may be cut short by an early close.
func (d *Dialer) checkAnswers(b []byte) error {
	if len(b) >= 2 {
		want := byte(methodNone)
		if d.auth != nil {
			want = methodUser
		}
		switch {
		case b[0] != socksVersion:
			return ErrBadVersion
		case b[1] == methodNoMatch:
			return ErrMethodRejected
		case b[1] != want:
			return ErrBadReply
		}
	}
	if len(b) >= 4 && (b[2] != authVersion || b[3] != 0) {
		return ErrAuthFailed
	}
	return nil
}

// connect writes msg, then reads the answers still owed before the request's
// reply (pre bytes: none in lockstep, all of them after the pipelined
// write) and the reply's first replyMin bytes in one read, then the rest of a
// longer address (IPv6, or a domain name past 2 bytes) in a second. It
// returns the reply's BND.ADDR and BND.PORT; for a domain name the address
// is the zero Addr, and BND.PORT is still there (a UDP ASSOCIATE relay
// socket's port, whatever names its host).
func (d *Dialer) connect(c *net.TCPConn, b, msg []byte, pre int) (netip.AddrPort, error) {
	if _, err := c.Write(msg); err != nil {
		return netip.AddrPort{}, err
	}
	n, err := io.ReadFull(c, b[:pre+replyMin])
	if cerr := d.checkAnswers(b[:min(n, pre)]); cerr != nil {
		return netip.AddrPort{}, cerr
	}
	r := b[pre:max(n, pre):len(b)] // the reply so far: a server may close after its code
	size, rerr := replySize(r)
	if rerr == nil {
		rerr = err
	}
	if rerr != nil {
		return netip.AddrPort{}, rerr
	}
	r = r[:size]
	if _, err = io.ReadFull(c, r[replyMin:]); err != nil {
		return netip.AddrPort{}, err
	}
	var ip netip.Addr
	if r[3] != atypDomain {
		ip, _ = netip.AddrFromSlice(r[4 : size-2])
	}
	return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(r[size-2:])), nil
}

// replySize checks as much of reply r as has come (the whole of it but for
// any longer address) and returns the size of the whole reply.
func replySize(r []byte) (int, error) {
	switch {
	case len(r) >= 1 && r[0] != socksVersion:
		return 0, ErrBadVersion
	case len(r) >= 2 && r[1] != 0:
		return 0, &ReplyError{Code: r[1]}
	case len(r) < 4:
		return 0, nil
	}
	switch r[3] {
	case atypIPv4:
		return replyMin, nil
	case atypIPv6:
		return 4 + net.IPv6len + 2, nil
	case atypDomain:
		if len(r) < 5 {
			return 0, nil
		}
		if size := 4 + 1 + int(r[4]) + 2; size >= replyMin {
			return size, nil
		}
		return 0, ErrShortReply
	}
	return 0, ErrBadReply
}
