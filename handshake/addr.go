package handshake

import (
	"bytes"
	"net/netip"
	"strconv"
)

// AddrType is the ATYP byte of a SOCKS address (RFC 1928 §5).
type AddrType byte

// Address types.
const (
	AddrIPv4   AddrType = 0x01
	AddrDomain AddrType = 0x03
	AddrIPv6   AddrType = 0x04
)

// String returns the address type's short name, or its value when unknown.
func (t AddrType) String() string {
	switch t {
	case AddrIPv4:
		return "ipv4"
	case AddrDomain:
		return "domain"
	case AddrIPv6:
		return "ipv6"
	}
	return "addrtype(" + hexByte(byte(t)) + ")"
}

// Addr is a SOCKS address: an IP address or a domain name, and a port.
// For AddrDomain, Name aliases the Buffer it was parsed from and is valid
// until that Buffer is released; IP is then the zero Addr.
type Addr struct {
	Type AddrType
	IP   netip.Addr
	Name []byte
	Port uint16
}

// AddrFromAddrPort returns the SOCKS address of ap: AddrIPv4 for IPv4 and
// IPv4-mapped IPv6 addresses (unmapped) and for an invalid ap (with the
// zero IP, encoded as 0.0.0.0), AddrIPv6 otherwise.
func AddrFromAddrPort(ap netip.AddrPort) Addr {
	ip := ap.Addr().Unmap()
	if ip.Is4() || !ip.IsValid() {
		return Addr{Type: AddrIPv4, IP: ip, Port: ap.Port()}
	}
	return Addr{Type: AddrIPv6, IP: ip.WithZone(""), Port: ap.Port()}
}

// AddrPort returns a's IP address and port; it is invalid for domain names.
func (a Addr) AddrPort() netip.AddrPort {
	if a.kind() == AddrDomain {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a.IP, a.Port)
}

// String returns a in host:port form, such as "1.2.3.4:80", "[::1]:80" or
// "example.com:80", suitable for net.Dial. It allocates; see AppendTo.
func (a Addr) String() string {
	var buf [64]byte
	return string(a.AppendTo(buf[:0]))
}

// AppendTo appends the String form of a to b. A domain name containing a
// colon is bracketed, as net.JoinHostPort does; its other bytes are copied
// unchecked. An IPv4-mapped IPv6 address is written as IPv4.
func (a Addr) AppendTo(b []byte) []byte {
	ip := a.IP.Unmap()
	switch {
	case a.kind() == AddrDomain:
		if bytes.IndexByte(a.Name, ':') >= 0 {
			b = append(append(append(b, '['), a.Name...), ']')
		} else {
			b = append(b, a.Name...)
		}
	case ip.Is4():
		b = ip.AppendTo(b)
	case ip.Is6():
		b = append(a.IP.AppendTo(append(b, '[')), ']')
	}
	return strconv.AppendUint(append(b, ':'), uint64(a.Port), 10)
}

// ParseAddr parses ATYP, the address and the port from the start of b and
// returns the address (Name aliases b) and the bytes consumed. It returns
// ErrAddrTypeNotSupported for an unknown ATYP, ErrMalformed for a
// zero-length domain name, and ErrShort while the frame is incomplete.
func ParseAddr(b []byte) (Addr, int, error) {
	a, n, err := parseAddr(b)
	if err == ErrAddrTypeNotSupported {
		return a, n, wrapByte("address", err, b[0])
	}
	return a, n, wrap("address", err)
}

// parseAddr is ParseAddr returning bare sentinels.
func parseAddr(b []byte) (Addr, int, error) {
	if len(b) < 1 {
		return Addr{}, 0, ErrShort
	}
	var a Addr
	var n int
	switch a.Type = AddrType(b[0]); a.Type {
	case AddrIPv4:
		if n = 1 + 4 + 2; len(b) < n {
			return Addr{}, 0, ErrShort
		}
		a.IP = netip.AddrFrom4([4]byte(b[1:5]))
	case AddrIPv6:
		if n = 1 + 16 + 2; len(b) < n {
			return Addr{}, 0, ErrShort
		}
		a.IP = netip.AddrFrom16([16]byte(b[1:17]))
	case AddrDomain:
		if len(b) < 2 {
			return Addr{}, 0, ErrShort
		}
		if b[1] == 0 {
			return Addr{}, 0, ErrMalformed
		}
		if n = 2 + int(b[1]) + 2; len(b) < n {
			return Addr{}, 0, ErrShort
		}
		a.Name = b[2 : n-2 : n-2]
	default:
		return Addr{}, 0, ErrAddrTypeNotSupported
	}
	a.Port = uint16(b[n-2])<<8 | uint16(b[n-1])
	return a, n, nil
}

// AppendAddr appends the wire form of a (ATYP, address, port) to b. The Type
// decides the encoding: AddrIPv4 writes a.IP unmapped (0.0.0.0 when it is not
// an IPv4 address), AddrIPv6 writes its 16 bytes, and AddrDomain writes Name,
// truncated to 255 bytes. A zero or unknown Type is inferred from the fields:
// Name when set, else the family of IP.
func AppendAddr(b []byte, a Addr) []byte {
	a.Type = a.kind()
	b = append(b, byte(a.Type))
	switch a.Type {
	case AddrIPv4:
		var ip4 [4]byte
		if ip := a.IP.Unmap(); ip.Is4() {
			ip4 = ip.As4()
		}
		b = append(b, ip4[:]...)
	case AddrIPv6:
		ip16 := a.IP.As16()
		b = append(b, ip16[:]...)
	case AddrDomain:
		name := a.Name[:min(len(a.Name), 255)]
		b = append(append(b, byte(len(name))), name...)
	}
	return append(b, byte(a.Port>>8), byte(a.Port))
}

// kind returns a's Type or, when that is not a known type, the type its
// fields suggest: AddrDomain when Name is set, else the family of IP.
func (a Addr) kind() AddrType {
	switch {
	case a.Type == AddrIPv4 || a.Type == AddrIPv6 || a.Type == AddrDomain:
		return a.Type
	case len(a.Name) > 0:
		return AddrDomain
	case a.IP.Is6() && !a.IP.Is4In6():
		return AddrIPv6
	}
	return AddrIPv4
}
