package handshake

import "net/netip"

// UDPHeader is the header RFC 1928 section 7 puts in front of every UDP
// ASSOCIATE datagram: RSV (two zero bytes), FRAG and the destination (from
// the client) or source (to the client) address.
type UDPHeader struct {
	Frag byte // fragment number; 0 for a whole datagram
	Addr Addr // for AddrDomain, Name aliases the parsed datagram
}

// ParseUDPHeader parses the header at the start of datagram b and returns it
// and its length; the payload is b[n:]. A non-zero RSV is ErrMalformed, an
// unknown ATYP ErrAddrTypeNotSupported and a datagram too short for its
// header ErrShort. Fragments (Frag != 0) parse fine: dropping them is the
// caller's choice. It does not allocate.
func ParseUDPHeader(b []byte) (UDPHeader, int, error) {
	if len(b) < 4 {
		return UDPHeader{}, 0, ErrShort
	}
	if b[0] != 0 || b[1] != 0 {
		return UDPHeader{}, 0, wrap("udp", ErrMalformed)
	}
	a, n, err := parseAddr(b[3:])
	if err == ErrShort {
		return UDPHeader{}, 0, ErrShort
	}
	if err != nil {
		return UDPHeader{}, 0, wrap("udp", err)
	}
	return UDPHeader{Frag: b[2], Addr: a}, 3 + n, nil
}

// AppendUDPHeader appends the wire form of h to b.
func AppendUDPHeader(b []byte, h UDPHeader) []byte {
	return AppendAddr(append(b, 0, 0, h.Frag), h.Addr)
}

// UDPHeaderLen is the length of the header PutUDPHeader writes for src:
// 10 bytes for IPv4 (and IPv4-mapped IPv6), 22 for IPv6.
func UDPHeaderLen(src netip.AddrPort) int {
	if src.Addr().Unmap().Is4() {
		return 3 + 1 + 4 + 2
	}
	return 3 + 1 + 16 + 2
}

// PutUDPHeader writes an unfragmented header with address src at the start
// of b, which must hold UDPHeaderLen(src) bytes, and returns that length. A
// relay reads a datagram behind enough headroom and puts the header right in
// front of it, so nothing is copied or allocated.
func PutUDPHeader(b []byte, src netip.AddrPort) int {
	ip := src.Addr().Unmap()
	b[0], b[1], b[2] = 0, 0, 0
	n := 4
	if ip.Is4() {
		b[3] = byte(AddrIPv4)
		a := ip.As4()
		n += copy(b[4:], a[:])
	} else {
		b[3] = byte(AddrIPv6)
		a := ip.As16()
		n += copy(b[4:], a[:])
	}
	b[n], b[n+1] = byte(src.Port()>>8), byte(src.Port())
	return n + 2
}
