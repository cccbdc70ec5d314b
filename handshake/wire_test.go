package handshake

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

var greetingTests = []struct {
	name    string
	in      []byte
	methods []byte
	n       int
	err     error
}{
	{"noauth", greetNoAuth, []byte{0x00}, 3, nil},
	{"two-methods-then-more", cat(greetBoth, reqIPv4), []byte{0x00, 0x02}, 4, nil},
	{"255-methods", append([]byte{0x05, 0xff}, make([]byte, 255)...), make([]byte, 255), 257, nil},
	{"empty", nil, nil, 0, ErrShort},
	{"version-only", []byte{0x05}, nil, 0, ErrShort},
	{"methods-cut", []byte{0x05, 0x03, 0x00, 0x02}, nil, 0, ErrShort},
	{"socks4", []byte{0x04, 0x01, 0x00, 0x50, 127, 0, 0, 1, 0x00}, nil, 0, ErrVersion},
	{"bad-version-short", []byte{0x04}, nil, 0, ErrVersion},
	{"nmethods-zero", []byte{0x05, 0x00}, nil, 0, ErrMalformed},
}

func TestParseGreeting(t *testing.T) {
	for _, tt := range greetingTests {
		t.Run(tt.name, func(t *testing.T) {
			methods, n, err := ParseGreeting(tt.in)
			if !errorIs(err, tt.err) || n != tt.n || !bytes.Equal(methods, tt.methods) {
				t.Fatalf("ParseGreeting(% x) = % x, %d, %v; want % x, %d, %v",
					tt.in, methods, n, err, tt.methods, tt.n, tt.err)
			}
		})
	}
}

var userPassTests = []struct {
	name       string
	in         []byte
	user, pass string
	n          int
	err        error
}{
	{"alice", authAlice, "alice", "secret", 14, nil},
	{"then-request", cat(authAlice, reqIPv4), "alice", "secret", 14, nil},
	{"zero-lengths", []byte{0x01, 0x00, 0x00}, "", "", 3, nil},
	{"longest", cat([]byte{0x01, 0xff}, bytes.Repeat([]byte{'u'}, 255), []byte{0xff}, bytes.Repeat([]byte{'p'}, 255)),
		strings.Repeat("u", 255), strings.Repeat("p", 255), 513, nil},
	{"empty", nil, "", "", 0, ErrShort},
	{"version-only", []byte{0x01}, "", "", 0, ErrShort},
	{"user-cut", []byte{0x01, 0x05, 'a', 'l'}, "", "", 0, ErrShort},
	{"no-plen", authAlice[:7], "", "", 0, ErrShort},
	{"pass-cut", authAlice[:10], "", "", 0, ErrShort},
	{"socks-version", []byte{0x05, 0x05, 'a', 'l', 'i', 'c', 'e'}, "", "", 0, ErrMalformed},
}

func TestParseUserPass(t *testing.T) {
	for _, tt := range userPassTests {
		t.Run(tt.name, func(t *testing.T) {
			user, pass, n, err := ParseUserPass(tt.in)
			if !errorIs(err, tt.err) || n != tt.n || string(user) != tt.user || string(pass) != tt.pass {
				t.Fatalf("ParseUserPass(% x) = %q, %q, %d, %v; want %q, %q, %d, %v",
					tt.in, user, pass, n, err, tt.user, tt.pass, tt.n, tt.err)
			}
		})
	}
}

var requestTests = []struct {
	name string
	in   []byte
	cmd  Command
	addr string // Addr.String of the result
	n    int
	err  error
}{
	{"connect-ipv4", reqIPv4, CmdConnect, "192.0.2.1:80", 10, nil},
	{"connect-ipv6", reqIPv6, CmdConnect, "[2001:db8::1]:443", 22, nil},
	{"connect-domain", reqDomain, CmdConnect, "example.com:80", 18, nil},
	{"connect-ipv4-mapped", []byte{0x05, 0x01, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1, 0, 80},
		CmdConnect, "192.0.2.1:80", 22, nil},
	{"domain-any-bytes", []byte{0x05, 0x01, 0x00, 0x03, 3, 0x00, ':', 0xff, 0x01, 0x00},
		CmdConnect, "[\x00:\xff]:256", 10, nil},
	{"bind", []byte{0x05, 0x02, 0x00, 0x01, 0, 0, 0, 0, 0, 0}, CmdBind, "0.0.0.0:0", 10, nil},
	{"udp-associate", []byte{0x05, 0x03, 0x00, 0x01, 0, 0, 0, 0, 0, 0}, CmdUDPAssociate, "0.0.0.0:0", 10, nil},
	{"payload-after", cat(reqIPv4, []byte("GET / HTTP/1.1\r\n")), CmdConnect, "192.0.2.1:80", 10, nil},
	{"empty", nil, 0, ":0", 0, ErrShort},
	{"header-cut", reqIPv4[:2], 0, ":0", 0, ErrShort},
	{"ipv4-cut", reqIPv4[:8], 0, ":0", 0, ErrShort},
	{"ipv6-cut", reqIPv6[:21], 0, ":0", 0, ErrShort},
	{"fqdn-past-end", []byte{0x05, 0x01, 0x00, 0x03, 0x20, 'a', 'b', 'c', 0x00, 0x50}, 0, ":0", 0, ErrShort},
	{"bad-version", []byte{0x04, 0x01, 0x00, 0x01, 192, 0, 2, 1, 0, 80}, 0, ":0", 0, ErrVersion},
	{"bad-version-short", []byte{0x04}, 0, ":0", 0, ErrVersion},
	{"rsv-nonzero", []byte{0x05, 0x01, 0x01, 0x01, 192, 0, 2, 1, 0, 80}, 0, ":0", 0, ErrMalformed},
	{"fqdn-zero-length", []byte{0x05, 0x01, 0x00, 0x03, 0x00, 0x00, 0x50}, CmdConnect, ":0", 3, ErrMalformed},
	{"unknown-atyp", []byte{0x05, 0x01, 0x00, 0x07, 1, 2, 3, 4, 0, 80}, CmdConnect, ":0", 3, ErrAddrTypeNotSupported},
	{"unknown-cmd", []byte{0x05, 0x09, 0x00, 0x01, 192, 0, 2, 1, 0, 80}, 0x09, "192.0.2.1:80", 10, ErrCommandNotSupported},
	{"unknown-cmd-zero", []byte{0x05, 0x00, 0x00, 0x01, 192, 0, 2, 1, 0, 80}, 0x00, "192.0.2.1:80", 10, ErrCommandNotSupported},
	{"unknown-cmd-cut", []byte{0x05, 0x09, 0x00, 0x01, 192}, 0, ":0", 0, ErrShort},
	{"unknown-cmd-and-atyp", []byte{0x05, 0x09, 0x00, 0x07, 1}, 0x09, ":0", 3, ErrCommandNotSupported},
}

func TestParseRequest(t *testing.T) {
	for _, tt := range requestTests {
		t.Run(tt.name, func(t *testing.T) {
			req, n, err := ParseRequest(tt.in)
			if !errorIs(err, tt.err) || n != tt.n || req.Cmd != tt.cmd || req.Addr.String() != tt.addr {
				t.Fatalf("ParseRequest(% x) = %v %q, %d, %v; want %v %q, %d, %v",
					tt.in, req.Cmd, req.Addr, n, err, tt.cmd, tt.addr, tt.n, tt.err)
			}
		})
	}
}

// TestParseShortPrefixes checks that every proper prefix of a valid frame is
// ErrShort, so that a reader always knows to read more.
func TestParseShortPrefixes(t *testing.T) {
	parsers := map[string]func([]byte) error{
		"greeting": func(b []byte) error { _, _, err := ParseGreeting(b); return err },
		"userpass": func(b []byte) error { _, _, _, err := ParseUserPass(b); return err },
		"request":  func(b []byte) error { _, _, err := ParseRequest(b); return err },
		"address":  func(b []byte) error { _, _, err := ParseAddr(b); return err },
	}
	frames := map[string][][]byte{
		"greeting": {greetNoAuth, greetBoth},
		"userpass": {authAlice, authWrongPass},
		"request":  {reqIPv4, reqIPv6, reqDomain},
		"address":  {reqIPv4[3:], reqIPv6[3:], reqDomain[3:]},
	}
	for name, parse := range parsers {
		for _, f := range frames[name] {
			if err := parse(f); err != nil {
				t.Errorf("%s(% x) = %v; want nil", name, f, err)
			}
			for i := range len(f) {
				if err := parse(f[:i]); err != ErrShort {
					t.Errorf("%s(% x) = %v; want bare ErrShort", name, f[:i], err)
				}
			}
		}
	}
}

var addrTests = []struct {
	name string
	in   []byte
	want Addr
	n    int
	err  error
}{
	{"ipv4", []byte{0x01, 10, 0, 0, 1, 0x1f, 0x90}, Addr{Type: AddrIPv4, IP: netip.MustParseAddr("10.0.0.1"), Port: 8080}, 7, nil},
	{"ipv6", reqIPv6[3:], Addr{Type: AddrIPv6, IP: netip.MustParseAddr("2001:db8::1"), Port: 443}, 19, nil},
	{"domain", reqDomain[3:], Addr{Type: AddrDomain, Name: []byte("example.com"), Port: 80}, 15, nil},
	{"domain-255", cat([]byte{0x03, 0xff}, bytes.Repeat([]byte{'a'}, 255), []byte{0, 1}),
		Addr{Type: AddrDomain, Name: bytes.Repeat([]byte{'a'}, 255), Port: 1}, 259, nil},
	{"empty", nil, Addr{}, 0, ErrShort},
	{"port-cut", []byte{0x01, 10, 0, 0, 1, 0x1f}, Addr{}, 0, ErrShort},
	{"fqdn-past-end", []byte{0x03, 0x05, 'a', 'b'}, Addr{}, 0, ErrShort},
	{"fqdn-zero", []byte{0x03, 0x00, 0x00, 0x50}, Addr{}, 0, ErrMalformed},
	{"atyp-zero", []byte{0x00, 1, 2, 3, 4, 5, 6}, Addr{}, 0, ErrAddrTypeNotSupported},
	{"atyp-2", []byte{0x02, 1, 2, 3, 4, 5, 6}, Addr{}, 0, ErrAddrTypeNotSupported},
}

func TestParseAddr(t *testing.T) {
	for _, tt := range addrTests {
		t.Run(tt.name, func(t *testing.T) {
			a, n, err := ParseAddr(tt.in)
			if !errorIs(err, tt.err) || n != tt.n || a.Type != tt.want.Type || a.IP != tt.want.IP ||
				!bytes.Equal(a.Name, tt.want.Name) || a.Port != tt.want.Port {
				t.Fatalf("ParseAddr(% x) = %+v, %d, %v; want %+v, %d, %v", tt.in, a, n, err, tt.want, tt.n, tt.err)
			}
		})
	}
}

func TestErrorMessages(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{func() error { _, _, err := ParseGreeting([]byte{0x04}); return err }(), "handshake: greeting: unsupported version 0x04"},
		{func() error { _, _, err := ParseGreeting([]byte{5, 0}); return err }(), "handshake: greeting: malformed frame"},
		{func() error { _, _, _, err := ParseUserPass([]byte{5}); return err }(), "handshake: auth: malformed frame 0x05"},
		{func() error { _, _, err := ParseRequest([]byte{5, 1, 0, 7}); return err }(), "handshake: request: unsupported address type 0x07"},
		{func() error { _, _, err := ParseRequest(cat([]byte{5, 0xfe}, reqIPv4[2:])); return err }(), "handshake: request: command not supported 0xfe"},
		{func() error { _, _, err := ParseAddr([]byte{3, 0, 0, 0}); return err }(), "handshake: address: malformed frame"},
		{ErrShort, "handshake: short frame"},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("error = %q; want %q", got, tt.want)
		}
	}
}

func TestAppendFrames(t *testing.T) {
	ip4 := netip.MustParseAddr("192.0.2.1")
	for _, tt := range []struct {
		name string
		got  []byte
		want []byte
	}{
		{"greeting", AppendGreeting(nil, MethodNoAuth, MethodUserPass), greetBoth},
		{"userpass", AppendUserPass(nil, []byte("alice"), []byte("secret")), authAlice},
		{"request-ipv4", AppendRequest(nil, CmdConnect, Addr{Type: AddrIPv4, IP: ip4, Port: 80}), reqIPv4},
		{"request-ipv6", AppendRequest(nil, CmdConnect, Addr{Type: AddrIPv6, IP: netip.MustParseAddr("2001:db8::1"), Port: 443}), reqIPv6},
		{"request-domain", AppendRequest(nil, CmdConnect, Addr{Type: AddrDomain, Name: []byte("example.com"), Port: 80}), reqDomain},
		{"addr-infer-ipv4", AppendAddr(nil, Addr{IP: netip.MustParseAddr("::ffff:192.0.2.1"), Port: 80}), reqIPv4[3:]},
		{"addr-infer-ipv6", AppendAddr(nil, Addr{IP: netip.MustParseAddr("2001:db8::1"), Port: 443}), reqIPv6[3:]},
		{"addr-infer-domain", AppendAddr(nil, Addr{Name: []byte("example.com"), Port: 80}), reqDomain[3:]},
		{"addr-ipv4-not-v4", AppendAddr(nil, Addr{Type: AddrIPv4, IP: netip.MustParseAddr("::1"), Port: 1}), []byte{1, 0, 0, 0, 0, 0, 1}},
		{"addr-from-addrport", AppendAddr(nil, AddrFromAddrPort(netip.MustParseAddrPort("[::ffff:192.0.2.1]:80"))), reqIPv4[3:]},
		{"append-keeps-prefix", AppendGreeting([]byte{0xaa}, MethodNoAuth), []byte{0xaa, 0x05, 0x01, 0x00}},
	} {
		if !bytes.Equal(tt.got, tt.want) {
			t.Errorf("%s: got % x; want % x", tt.name, tt.got, tt.want)
		}
	}
}

func TestAddrString(t *testing.T) {
	for _, tt := range []struct {
		a    Addr
		want string
	}{
		{Addr{Type: AddrIPv4, IP: netip.MustParseAddr("1.2.3.4"), Port: 80}, "1.2.3.4:80"},
		{Addr{Type: AddrIPv6, IP: netip.MustParseAddr("::1"), Port: 80}, "[::1]:80"},
		{Addr{Type: AddrIPv6, IP: netip.MustParseAddr("::ffff:1.2.3.4"), Port: 80}, "1.2.3.4:80"},
		{Addr{Type: AddrDomain, Name: []byte("example.com"), Port: 80}, "example.com:80"},
		{Addr{Type: AddrDomain, Name: []byte("::1"), Port: 65535}, "[::1]:65535"},
	} {
		if got := tt.a.String(); got != tt.want {
			t.Errorf("String() = %q; want %q", got, tt.want)
		}
		buf := make([]byte, 0, 64)
		if allocs := testing.AllocsPerRun(100, func() { buf = tt.a.AppendTo(buf[:0]) }); allocs != 0 || string(buf) != tt.want {
			t.Errorf("AppendTo = %q, %v allocs; want %q, 0", buf, allocs, tt.want)
		}
	}
	a := Addr{Type: AddrDomain, Name: []byte("example.com"), Port: 80}
	if ap := a.AddrPort(); ap.IsValid() {
		t.Errorf("domain AddrPort() = %v; want invalid", ap)
	}
	ap := netip.MustParseAddrPort("[2001:db8::1]:443")
	if got := AddrFromAddrPort(ap).AddrPort(); got != ap {
		t.Errorf("AddrPort round trip = %v; want %v", got, ap)
	}
}

func TestStrings(t *testing.T) {
	for _, tt := range []struct {
		got, want string
	}{
		{MethodNoAuth.String(), "no-auth"},
		{MethodGSSAPI.String(), "gssapi"},
		{MethodUserPass.String(), "username/password"},
		{MethodNoAcceptable.String(), "no-acceptable-methods"},
		{Method(0x80).String(), "method(0x80)"},
		{CmdConnect.String(), "connect"},
		{CmdBind.String(), "bind"},
		{CmdUDPAssociate.String(), "udp-associate"},
		{Command(0).String(), "command(0x00)"},
		{AddrIPv4.String(), "ipv4"},
		{AddrDomain.String(), "domain"},
		{AddrIPv6.String(), "ipv6"},
		{AddrType(2).String(), "addrtype(0x02)"},
		{Succeeded.String(), "succeeded"},
		{GeneralFailure.String(), "general SOCKS server failure"},
		{NotAllowed.String(), "connection not allowed by ruleset"},
		{NetworkUnreachable.String(), "network unreachable"},
		{HostUnreachable.String(), "host unreachable"},
		{ConnectionRefused.String(), "connection refused"},
		{TTLExpired.String(), "TTL expired"},
		{CommandNotSupported.String(), "command not supported"},
		{AddrTypeNotSupported.String(), "address type not supported"},
		{Reply(9).String(), "reply(0x09)"},
	} {
		if tt.got != tt.want {
			t.Errorf("String() = %q; want %q", tt.got, tt.want)
		}
	}
}
