package tune

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// SockOpts are per-socket TCP options. The zero value keeps the kernel's and
// Go's defaults: 0 means the default and, where it makes sense, a negative
// value turns the option off. Each field names the command-line flag that sets
// it on both sides; the flags for Options.Client and Options.Upstream alone
// carry the prefix "client-" or "upstream-" (--rcvbuf, --client-rcvbuf,
// --upstream-rcvbuf). An OptionError names the first where both sides hold
// the same value, else the side's.
type SockOpts struct {
	// RecvBufferBytes sets SO_RCVBUF; the kernel doubles it and clamps it to
	// net.core.rmem_max. 0 keeps receive-buffer autotuning, which a fixed size
	// turns off. Flag: --rcvbuf.
	RecvBufferBytes int

	// SendBufferBytes sets SO_SNDBUF, doubled by the kernel and clamped to
	// net.core.wmem_max. 0 keeps autotuning. Flag: --sndbuf.
	SendBufferBytes int

	// Nagle clears TCP_NODELAY. False, the default, keeps TCP_NODELAY set, as
	// Go does on every TCP socket. Flag: --nodelay=false.
	Nagle bool

	// KeepAliveIdle sets SO_KEEPALIVE and TCP_KEEPIDLE, rounded up to whole
	// seconds, at most MaxKeepAliveIdle. 0 means Go's default, 15 s;
	// negative turns keepalive off. Flag: --keepalive-idle.
	KeepAliveIdle time.Duration

	// KeepAliveInterval sets TCP_KEEPINTVL, rounded up to whole seconds, at
	// most MaxKeepAliveInterval. 0 means Go's default, 15 s; negative leaves
	// the kernel's value (net.ipv4.tcp_keepalive_intvl).
	// Flag: --keepalive-interval.
	KeepAliveInterval time.Duration

	// KeepAliveCount sets TCP_KEEPCNT, at most MaxKeepAliveCount. 0 means
	// Go's default, 9; negative leaves the kernel's value
	// (net.ipv4.tcp_keepalive_probes). Flag: --keepalive-count.
	KeepAliveCount int

	// UserTimeout sets TCP_USER_TIMEOUT, rounded up to whole milliseconds:
	// how long sent data may stay unacknowledged before the kernel drops
	// the connection. 0 or negative leaves it off. Flag: --user-timeout.
	UserTimeout time.Duration

	// Congestion sets TCP_CONGESTION, e.g. "bbr" or "cubic"; it must be
	// listed in net.ipv4.tcp_available_congestion_control, and without
	// CAP_NET_ADMIN in net.ipv4.tcp_allowed_congestion_control.
	// "" keeps the system default. Flag: --congestion.
	Congestion string

	// NotSentLowatBytes sets TCP_NOTSENT_LOWAT: the socket reports writable
	// only while fewer unsent bytes than this are queued. 0 or negative keeps
	// the system default (net.ipv4.tcp_notsent_lowat). Flag: --notsent-lowat.
	NotSentLowatBytes int

	// QuickAck sets TCP_QUICKACK once per connection, after accept or dial.
	// The kernel leaves quickack mode on its own later, so this shapes only
	// the first exchanges (the SOCKS handshake). Flag: --quickack.
	QuickAck bool

	// Mark sets SO_MARK for policy routing and firewall rules; it needs
	// CAP_NET_ADMIN. 0 sets no mark. Flag: --mark.
	Mark uint32
}

// Options configure the listeners and the upstream dialer. The zero value
// gives one SO_REUSEPORT listener and a dialer with Go's defaults and a 10 s
// timeout, both without MPTCP. Methods never modify the Options they are
// called on, and the listeners and dialers they return keep a copy.
type Options struct {
	// Client holds the options for accepted client sockets. Those Linux
	// copies from a listening socket to the sockets it accepts are set once
	// per listener; ApplyClient sets the rest (Nagle, QuickAck).
	Client SockOpts

	// Upstream holds the options for dialled upstream sockets. Dialer sets
	// them before connect; ApplyUpstream sets Nagle and QuickAck after it.
	Upstream SockOpts

	// Listeners is the number of SO_REUSEPORT sockets Listen opens per
	// address, for one accept loop each; 0 or negative means 1.
	// Flag: --listeners.
	Listeners int

	// Backlog is the listen backlog; the kernel clamps it to
	// net.core.somaxconn. 0 or negative means net.core.somaxconn.
	// Flag: --backlog.
	Backlog int

	// FastOpenQueue sets TCP_FASTOPEN on listeners: the number of pending
	// fast-open connections, whose SYN carried data; the kernel lowers it to
	// net.core.somaxconn. 0 or negative leaves fast open off.
	// Flag: --fastopen.
	FastOpenQueue int

	// DeferAccept sets TCP_DEFER_ACCEPT on listeners: accept returns a
	// connection only once its first data arrived, or the timeout, rounded
	// up by the kernel to its SYN-ACK retransmit schedule, ran out.
	// 0 or negative leaves it off. Flag: --defer-accept.
	DeferAccept time.Duration

	// SmartAccept sets TCP_QUICKACK to 0 on listeners, after listen, which
	// clears it: the sockets they accept inherit delayed acknowledgement
	// from their first byte, so the ACK of a client's first data (a SOCKS
	// greeting and request) rides on the server's answer instead of going
	// out in a segment of its own, as HAProxy's tcp-smart-accept does for
	// HTTP. Linux would delay later ACKs in a request-reply exchange anyway
	// (pingpong mode); it acknowledges a new connection's first data at
	// once. Client.QuickAck, which leaves that mode on each accepted socket,
	// turns it off. Flag: --smart-accept.
	SmartAccept bool

	// SmartConnect sets TCP_QUICKACK to 0 on upstream sockets before
	// connect: the ACK that ends the three-way handshake is then held
	// (Linux schedules it as a delayed ACK, sent at the latest after
	// TCP_DELACK_MAX, 200 ms) and rides on the first bytes sent to the
	// target, as HAProxy's tcp-smart-connect does for HTTP. The target's
	// accept returns only once that segment arrives, so it suits targets
	// whose clients speak first (HTTP, TLS); one that speaks first itself
	// (SSH, SMTP, FTP, most databases) waits up to 200 ms for its
	// connection. Linux leaves the mode once it held that ACK, so nothing
	// else changes. Upstream.QuickAck turns it off. Flag: --smart-connect.
	SmartConnect bool

	// FastOpenConnect sets TCP_FASTOPEN_CONNECT on dials. A dial then returns
	// before the three-way handshake ends, and its SYN leaves with the first
	// write; so refusal or unreachability shows up on that write or the next
	// read, not as a dial error. Flag: --fastopen-connect.
	FastOpenConnect bool

	// SourceAddr is the local address dials bind to; it also restricts dials
	// to targets of its family. The zero Addr lets the kernel choose.
	// Flag: --source-addr.
	SourceAddr netip.Addr

	// SourcePorts sets IP_LOCAL_PORT_RANGE (Linux 6.3 and later) on dialled
	// TCP sockets: the ephemeral ports connect may pick. A bound outside
	// net.ipv4.ip_local_port_range is ignored by the kernel in favour of
	// that range's own, so AllPorts is the whole system range. A range set
	// this way also changes the search: Linux then tries its ports in turn,
	// odd and even alike, where without one connect tries the even ports
	// first and the odd ones only once the even ones are used up, leaving
	// the odd ones to bind with port 0. At a high connection rate to one
	// target, where each connection the relay closes first holds its port
	// in TIME_WAIT for 60 s, a range gives connect twice the ports and a
	// shorter search; the cost is that those TIME_WAITs then cover the odd
	// ports too, and bind with port 0 on the same address fails while every
	// port has one. The zero value sets nothing. Flag: --source-ports.
	SourcePorts PortRange

	// Interface binds dialled sockets to this network device with
	// SO_BINDTODEVICE, which needs CAP_NET_RAW. "" binds none.
	// Flag: --interface.
	Interface string

	// DialTimeout bounds each upstream dial, name resolution included.
	// 0 means 10 s; negative means no timeout beyond the context's.
	// Flag: --dial-timeout.
	DialTimeout time.Duration
}

// PortRange is a range of TCP ports, Low to High inclusive. The zero value
// is no range.
type PortRange struct{ Low, High uint16 }

// AllPorts is the PortRange that stands for the whole of
// net.ipv4.ip_local_port_range, whatever it is set to.
var AllPorts = PortRange{1, 65535}

// Value is r as IP_LOCAL_PORT_RANGE takes it: Low in the lower 16 bits,
// High in the upper, as a C int's bits.
func (r PortRange) Value() int { return int(int32(uint32(r.High)<<16 | uint32(r.Low))) }

// The largest keepalive values Linux takes (MAX_TCP_KEEPIDLE,
// MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT), the times after rounding up to whole
// seconds. setsockopt refuses a larger one with EINVAL, and Probe then turns
// the option back to its default: check them where the values are read.
const (
	MaxKeepAliveIdle     = 32767 * time.Second
	MaxKeepAliveInterval = 32767 * time.Second
	MaxKeepAliveCount    = 127
)

// Defaults resolved at the point of use.
const (
	defaultDialTimeout       = 10 * time.Second
	defaultKeepAliveIdle     = 15 * time.Second // as net.Dialer and net.ListenConfig
	defaultKeepAliveInterval = 15 * time.Second
	defaultKeepAliveCount    = 9
)

func (o *Options) listeners() int { return max(o.Listeners, 1) }

func (o *Options) dialTimeout() time.Duration {
	if o.DialTimeout == 0 {
		return defaultDialTimeout
	}
	return max(o.DialTimeout, 0)
}

func (s *SockOpts) keepAliveIdle() time.Duration {
	if s.KeepAliveIdle == 0 {
		return defaultKeepAliveIdle
	}
	return s.KeepAliveIdle
}

func (s *SockOpts) keepAliveInterval() time.Duration {
	if s.KeepAliveInterval == 0 {
		return defaultKeepAliveInterval
	}
	return s.KeepAliveInterval
}

func (s *SockOpts) keepAliveCount() int {
	if s.KeepAliveCount == 0 {
		return defaultKeepAliveCount
	}
	return s.KeepAliveCount
}

// ErrClamped is wrapped by the OptionError that Probe returns for a value the
// kernel accepted but lowered, such as a socket buffer above
// net.core.rmem_max. The option stays set: the kernel applies its maximum.
var ErrClamped = errors.New("clamped by the kernel")

// OptionError reports an option that the kernel, the process's privileges or
// the operating system refused. Flag is the command-line flag that sets it,
// Option the socket option or call, and Err the cause, usually a
// syscall.Errno or errors.ErrUnsupported.
type OptionError struct {
	Flag   string
	Option string
	Err    error
}

// Error returns e.g. "tune: --mark (SO_MARK): operation not permitted".
func (e *OptionError) Error() string {
	return "tune: " + e.Flag + " (" + e.Option + "): " + e.Err.Error()
}

// Unwrap returns the cause, so errors.Is(err, syscall.EPERM) works.
func (e *OptionError) Unwrap() error { return e.Err }

// opt names one option that tune can set. Options from optRecvBuf to
// optQuickAck live in SockOpts and exist once per side; the rest belong to
// Options.
type opt uint8

const (
	optRecvBuf opt = iota
	optSendBuf
	optKeepAliveIdle
	optKeepAliveInterval
	optKeepAliveCount
	optUserTimeout
	optCongestion
	optNotSentLowat
	optMark
	optNagle
	optQuickAck
	optReusePort
	optFastOpen
	optDeferAccept
	optBacklog
	optSmartAccept
	optSmartConnect
	optFastOpenConnect
	optInterface
	optSourceAddr
	optSourcePorts
	optCount
)

// optNames gives each option's flag and the socket option it sets.
var optNames = [optCount]struct{ flag, option string }{
	optRecvBuf:           {"--rcvbuf", "SO_RCVBUF"},
	optSendBuf:           {"--sndbuf", "SO_SNDBUF"},
	optKeepAliveIdle:     {"--keepalive-idle", "TCP_KEEPIDLE"},
	optKeepAliveInterval: {"--keepalive-interval", "TCP_KEEPINTVL"},
	optKeepAliveCount:    {"--keepalive-count", "TCP_KEEPCNT"},
	optUserTimeout:       {"--user-timeout", "TCP_USER_TIMEOUT"},
	optCongestion:        {"--congestion", "TCP_CONGESTION"},
	optNotSentLowat:      {"--notsent-lowat", "TCP_NOTSENT_LOWAT"},
	optMark:              {"--mark", "SO_MARK"},
	optNagle:             {"--nodelay", "TCP_NODELAY"},
	optQuickAck:          {"--quickack", "TCP_QUICKACK"},
	optReusePort:         {"--listeners", "SO_REUSEPORT"},
	optFastOpen:          {"--fastopen", "TCP_FASTOPEN"},
	optDeferAccept:       {"--defer-accept", "TCP_DEFER_ACCEPT"},
	optBacklog:           {"--backlog", "listen"},
	optSmartAccept:       {"--smart-accept", "TCP_QUICKACK"},
	optSmartConnect:      {"--smart-connect", "TCP_QUICKACK"},
	optFastOpenConnect:   {"--fastopen-connect", "TCP_FASTOPEN_CONNECT"},
	optInterface:         {"--interface", "SO_BINDTODEVICE"},
	optSourceAddr:        {"--source-addr", "bind"},
	optSourcePorts:       {"--source-ports", "IP_LOCAL_PORT_RANGE"},
}

// Which options go where. Linux copies every option in listenerSockOpts from
// a listening socket to the sockets it accepts; the tests read each back on
// an accepted socket to keep that true.
var (
	listenerSockOpts = []opt{optRecvBuf, optSendBuf, optKeepAliveIdle, optKeepAliveInterval,
		optKeepAliveCount, optUserTimeout, optCongestion, optNotSentLowat, optMark}
	listenerOpts  = []opt{optFastOpen, optDeferAccept} // before listen
	afterListen   = []opt{optBacklog, optSmartAccept}  // listen clears optSmartAccept's setting
	dialSockOpts  = listenerSockOpts
	keepAliveOpts = []opt{optKeepAliveIdle, optKeepAliveInterval, optKeepAliveCount}
	// dialSockOptsLate is dialSockOpts without keepAliveOpts (DialFdLate).
	dialSockOptsLate = slices.DeleteFunc(slices.Clone(dialSockOpts), func(id opt) bool { return slices.Contains(keepAliveOpts, id) })
	dialOpts         = []opt{optFastOpenConnect, optSmartConnect, optInterface, optSourcePorts} // optSourceAddr goes through net.Dialer.LocalAddr
	connOpts         = []opt{optNagle, optQuickAck}                                             // after accept or connect
)

// UpstreamKeepAlive reports whether tune sets TCP keepalive on upstream
// sockets itself (Linux, unless --keepalive=false): the options
// ArmKeepAlive sets on a DialFdLate descriptor.
func (o *Options) UpstreamKeepAlive() bool {
	return o.set(optKeepAliveIdle, &o.Upstream)
}

func (id opt) perSide() bool { return id <= optQuickAck }

// tcpLevel reports whether id applies to TCP sockets only: the IPPROTO_TCP
// options, and the source port range, which sluice keeps to TCP.
func (id opt) tcpLevel() bool {
	switch id {
	case optRecvBuf, optSendBuf, optMark, optInterface, optSourceAddr:
		return false
	}
	return true
}

// set reports whether id is configured, in s for a per-side option or in o.
// Keepalive counts as configured unless turned off, since its defaults are
// set like explicit values.
func (o *Options) set(id opt, s *SockOpts) bool {
	switch id {
	case optRecvBuf:
		return s.RecvBufferBytes > 0
	case optSendBuf:
		return s.SendBufferBytes > 0
	case optKeepAliveIdle:
		return keepAliveBySockopt && s.KeepAliveIdle >= 0
	case optKeepAliveInterval:
		return keepAliveBySockopt && s.KeepAliveIdle >= 0 && s.KeepAliveInterval >= 0
	case optKeepAliveCount:
		return keepAliveBySockopt && s.KeepAliveIdle >= 0 && s.KeepAliveCount >= 0
	case optUserTimeout:
		return s.UserTimeout > 0
	case optCongestion:
		return s.Congestion != ""
	case optNotSentLowat:
		return s.NotSentLowatBytes > 0
	case optMark:
		return s.Mark != 0
	case optNagle:
		return s.Nagle
	case optQuickAck:
		return s.QuickAck
	case optReusePort:
		return o.Listeners > 1
	case optFastOpen:
		return o.FastOpenQueue > 0
	case optDeferAccept:
		return o.DeferAccept > 0
	case optBacklog:
		return o.Backlog > 0
	case optSmartAccept:
		return o.SmartAccept && !o.Client.QuickAck
	case optSmartConnect:
		return o.SmartConnect && !o.Upstream.QuickAck
	case optFastOpenConnect:
		return o.FastOpenConnect
	case optInterface:
		return o.Interface != ""
	case optSourceAddr:
		return o.SourceAddr.IsValid()
	case optSourcePorts:
		return o.SourcePorts != PortRange{}
	}
	return false
}

// clear turns id off, or back to its default, in s or o.
func (o *Options) clear(id opt, s *SockOpts) {
	switch id {
	case optRecvBuf:
		s.RecvBufferBytes = 0
	case optSendBuf:
		s.SendBufferBytes = 0
	case optKeepAliveIdle:
		s.KeepAliveIdle = 0
	case optKeepAliveInterval:
		s.KeepAliveInterval = 0
	case optKeepAliveCount:
		s.KeepAliveCount = 0
	case optUserTimeout:
		s.UserTimeout = 0
	case optCongestion:
		s.Congestion = ""
	case optNotSentLowat:
		s.NotSentLowatBytes = 0
	case optMark:
		s.Mark = 0
	case optNagle:
		s.Nagle = false
	case optQuickAck:
		s.QuickAck = false
	case optReusePort:
		o.Listeners = 1
	case optFastOpen:
		o.FastOpenQueue = 0
	case optDeferAccept:
		o.DeferAccept = 0
	case optBacklog:
		o.Backlog = 0
	case optSmartAccept:
		o.SmartAccept = false
	case optSmartConnect:
		o.SmartConnect = false
	case optFastOpenConnect:
		o.FastOpenConnect = false
	case optInterface:
		o.Interface = ""
	case optSourceAddr:
		o.SourceAddr = netip.Addr{}
	case optSourcePorts:
		o.SourcePorts = PortRange{}
	}
}

// sameValue reports whether a and b configure the per-side option id alike.
func sameValue(id opt, a, b *SockOpts) bool {
	switch id {
	case optRecvBuf:
		return a.RecvBufferBytes == b.RecvBufferBytes
	case optSendBuf:
		return a.SendBufferBytes == b.SendBufferBytes
	case optKeepAliveIdle:
		return a.keepAliveIdle() == b.keepAliveIdle()
	case optKeepAliveInterval:
		return a.keepAliveInterval() == b.keepAliveInterval()
	case optKeepAliveCount:
		return a.keepAliveCount() == b.keepAliveCount()
	case optUserTimeout:
		return a.UserTimeout == b.UserTimeout
	case optCongestion:
		return a.Congestion == b.Congestion
	case optNotSentLowat:
		return a.NotSentLowatBytes == b.NotSentLowatBytes
	case optMark:
		return a.Mark == b.Mark
	}
	return true // Nagle, QuickAck: booleans, both set
}

// optError wraps err as the OptionError of id on the given side, named by
// the flag that sets the value there: --X for a per-side option that both
// sides configure alike, as --X does, --client-X or --upstream-X for one
// that they do not (only one side sets it, or each its own value).
func (o *Options) optError(id opt, upstream bool, err error) error {
	flag := optNames[id].flag
	if id.perSide() && !(o.set(id, &o.Client) && o.set(id, &o.Upstream) && sameValue(id, &o.Client, &o.Upstream)) {
		side := "--client-"
		if upstream {
			side = "--upstream-"
		}
		flag = side + strings.TrimPrefix(flag, "--")
	}
	return &OptionError{Flag: flag, Option: optNames[id].option, Err: err}
}
