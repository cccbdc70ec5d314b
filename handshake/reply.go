package handshake

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
)

// Reply is the REP byte of a server reply (RFC 1928 §6).
type Reply byte

// Reply codes.
const (
	Succeeded            Reply = 0x00
	GeneralFailure       Reply = 0x01
	NotAllowed           Reply = 0x02
	NetworkUnreachable   Reply = 0x03
	HostUnreachable      Reply = 0x04
	ConnectionRefused    Reply = 0x05
	TTLExpired           Reply = 0x06
	CommandNotSupported  Reply = 0x07
	AddrTypeNotSupported Reply = 0x08
)

var replyNames = [...]string{
	Succeeded:            "succeeded",
	GeneralFailure:       "general SOCKS server failure",
	NotAllowed:           "connection not allowed by ruleset",
	NetworkUnreachable:   "network unreachable",
	HostUnreachable:      "host unreachable",
	ConnectionRefused:    "connection refused",
	TTLExpired:           "TTL expired",
	CommandNotSupported:  "command not supported",
	AddrTypeNotSupported: "address type not supported",
}

// String returns the reply's RFC 1928 wording, or its value when unknown.
func (r Reply) String() string {
	if int(r) < len(replyNames) {
		return replyNames[r]
	}
	return "reply(" + hexByte(byte(r)) + ")"
}

// maxReplyLen is the longest reply, VER, REP, RSV, ATYP, 16 bytes and port,
// after up to two held answers.
const maxReplyLen = 4 + 4 + 16 + 2

// AppendReply appends a reply (VER, REP, RSV, ATYP, BND.ADDR, BND.PORT) to b.
// An IPv4-mapped IPv6 address is written as IPv4, and an invalid AddrPort as
// 0.0.0.0:0.
func AppendReply(b []byte, r Reply, a netip.AddrPort) []byte {
	b = append(b, Version, byte(r), 0)
	if !a.IsValid() {
		return append(b, byte(AddrIPv4), 0, 0, 0, 0, 0, 0)
	}
	return AppendAddr(b, AddrFromAddrPort(a))
}

// WriteReply writes one reply in a single Write, without allocating. An
// IPv4-mapped IPv6 address is written as IPv4, and an invalid AddrPort as
// 0.0.0.0:0.
func WriteReply(w io.Writer, r Reply, bnd netip.AddrPort) error {
	p := getReplyScratch()
	_, err := w.Write(AppendReply(p[:0], r, bnd))
	putReplyScratch(p)
	if err != nil {
		return &stageError{stage: "reply", err: err, transport: true}
	}
	return nil
}

// WriteReply writes the reply to req like the package function WriteReply,
// preceded in the same Write by the method and auth answers that Negotiate
// held back under Config.Coalesce (only the first call sends them). It may
// be called after the Buffer was released.
func (req *Request) WriteReply(w io.Writer, r Reply, bnd netip.AddrPort) error {
	if req.nheld == 0 {
		return WriteReply(w, r, bnd)
	}
	p := getReplyScratch()
	_, err := w.Write(AppendReply(append(p[:0], req.held[:req.nheld]...), r, bnd))
	putReplyScratch(p)
	req.nheld = 0
	if err != nil {
		return &stageError{stage: "reply", err: err, transport: true}
	}
	return nil
}

// WriteError answers req's failure like the package function WriteError,
// preceded by the answers Negotiate held back; where the RFC says close it
// writes nothing at all.
func (req *Request) WriteError(w io.Writer, err error) error {
	if closeOnly(err) {
		return nil
	}
	return req.WriteReply(w, ReplyFor(err), netip.AddrPort{})
}

// WriteError answers a failed handshake or dial: it sends ReplyFor(err) with
// BND 0.0.0.0:0, never Succeeded. Where RFC 1928 says to close instead, it
// writes nothing and returns nil: for a bad version, a malformed or
// incomplete frame, no acceptable method and failed authentication (both
// already answered inside Negotiate), and for read and write failures on the
// client connection reported by Negotiate.
func WriteError(w io.Writer, err error) error {
	if closeOnly(err) {
		return nil
	}
	return WriteReply(w, ReplyFor(err), netip.AddrPort{})
}

// closeOnly reports whether err calls for closing the client connection
// without a reply.
func closeOnly(err error) bool {
	for _, target := range [...]error{ErrVersion, ErrMalformed, ErrShort,
		ErrNoAcceptableMethod, ErrAuthFailed, io.EOF, io.ErrUnexpectedEOF} {
		if errors.Is(err, target) {
			return true
		}
	}
	return isTransport(err)
}

// ReplyFor maps an error to the reply code that reports it; nil and errors it
// does not know map to GeneralFailure, and so does an error that wraps
// context.Canceled (a lookup or dial its caller cut short, a DNS error's
// included). Other DNS errors, timeouts included, map to HostUnreachable; other timeouts (os.ErrDeadlineExceeded,
// context.DeadlineExceeded, errors whose Timeout method reports true, and
// ErrTTLExpired) map to TTLExpired. EACCES and EPERM, with which connect(2)
// reports a local firewall rule (a netfilter drop, a cgroup BPF program, a
// prohibit route, a security module), map to NotAllowed, as ErrNotAllowed.
func ReplyFor(err error) Reply {
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		return GeneralFailure
	case errors.Is(err, ErrNotAllowed), errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return NotAllowed
	case errors.Is(err, ErrCommandNotSupported):
		return CommandNotSupported
	case errors.Is(err, ErrAddrTypeNotSupported):
		return AddrTypeNotSupported
	case errors.Is(err, context.Canceled):
		return GeneralFailure // cut short by its caller (a drain): no verdict on the host
	case errors.As(err, &dnsErr):
		return HostUnreachable
	case errors.Is(err, syscall.ENETUNREACH):
		return NetworkUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return HostUnreachable
	case errors.Is(err, syscall.ECONNREFUSED):
		return ConnectionRefused
	case isTimeout(err):
		return TTLExpired
	}
	return GeneralFailure
}

// isTimeout reports whether err is, or wraps, a timeout.
func isTimeout(err error) bool {
	if errors.Is(err, ErrTTLExpired) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
