package handshake

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

var udpHeaderTable = []struct {
	name string
	in   []byte
	want UDPHeader
	n    int
	err  error
}{
	{"ipv4", []byte{0, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90, 'h', 'i'}, UDPHeader{Addr: Addr{Type: AddrIPv4, IP: netip.MustParseAddr("127.0.0.1"), Port: 8080}}, 10, nil},
	{"ipv6", append(append([]byte{0, 0, 0, 4}, netip.IPv6Loopback().AsSlice()...), 0, 53), UDPHeader{Addr: Addr{Type: AddrIPv6, IP: netip.IPv6Loopback(), Port: 53}}, 22, nil},
	{"domain", []byte{0, 0, 0, 3, 9, 'l', 'o', 'c', 'a', 'l', 'h', 'o', 's', 't', 0, 7, 'x'}, UDPHeader{Addr: Addr{Type: AddrDomain, Name: []byte("localhost"), Port: 7}}, 16, nil},
	{"frag", []byte{0, 0, 1, 1, 10, 0, 0, 1, 0, 1}, UDPHeader{Frag: 1, Addr: Addr{Type: AddrIPv4, IP: netip.MustParseAddr("10.0.0.1"), Port: 1}}, 10, nil},
	{"short", []byte{0, 0, 0}, UDPHeader{}, 0, ErrShort},
	{"short-addr", []byte{0, 0, 0, 1, 127, 0}, UDPHeader{}, 0, ErrShort},
	{"domain-past-end", []byte{0, 0, 0, 3, 200, 'a', 'b'}, UDPHeader{}, 0, ErrShort},
	{"rsv", []byte{0, 1, 0, 1, 127, 0, 0, 1, 0, 1}, UDPHeader{}, 0, ErrMalformed},
	{"atyp", []byte{0, 0, 0, 9, 127, 0, 0, 1, 0, 1}, UDPHeader{}, 0, ErrAddrTypeNotSupported},
	{"empty-domain", []byte{0, 0, 0, 3, 0, 0, 1}, UDPHeader{}, 0, ErrMalformed},
}

func TestParseUDPHeader(t *testing.T) {
	for _, tc := range udpHeaderTable {
		t.Run(tc.name, func(t *testing.T) {
			h, n, err := ParseUDPHeader(tc.in)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if n != tc.n || h.Frag != tc.want.Frag || h.Addr.Type != tc.want.Addr.Type ||
				h.Addr.IP != tc.want.Addr.IP || h.Addr.Port != tc.want.Addr.Port || !bytes.Equal(h.Addr.Name, tc.want.Addr.Name) {
				t.Fatalf("got %+v n=%d, want %+v n=%d", h, n, tc.want, tc.n)
			}
			if got := AppendUDPHeader(nil, h); !bytes.Equal(got, tc.in[:n]) {
				t.Fatalf("re-encoded %x, want %x", got, tc.in[:n])
			}
		})
	}
}

func TestPutUDPHeader(t *testing.T) {
	for _, src := range []netip.AddrPort{
		netip.MustParseAddrPort("127.0.0.1:5353"),
		netip.MustParseAddrPort("[::ffff:127.0.0.1]:5353"),
		netip.MustParseAddrPort("[::1]:9"),
	} {
		b := make([]byte, 32)
		n := PutUDPHeader(b, src)
		if n != UDPHeaderLen(src) {
			t.Fatalf("%v: wrote %d bytes, UDPHeaderLen says %d", src, n, UDPHeaderLen(src))
		}
		want := AppendUDPHeader(nil, UDPHeader{Addr: AddrFromAddrPort(src)})
		if !bytes.Equal(b[:n], want) {
			t.Fatalf("%v: %x, want %x", src, b[:n], want)
		}
		h, _, err := ParseUDPHeader(b[:n])
		if err != nil || h.Addr.AddrPort() != netip.AddrPortFrom(src.Addr().Unmap(), src.Port()) {
			t.Fatalf("%v: parsed back %+v, %v", src, h, err)
		}
	}
	if allocs := testing.AllocsPerRun(100, func() {
		var b [32]byte
		PutUDPHeader(b[:], netip.MustParseAddrPort("[::1]:9"))
		ParseUDPHeader(udpHeaderTable[0].in)
	}); allocs != 0 {
		t.Fatalf("PutUDPHeader + ParseUDPHeader: %v allocs, want 0", allocs)
	}
}

func FuzzParseUDPHeader(f *testing.F) {
	for _, tc := range udpHeaderTable {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := ParseUDPHeader(b)
		if n > len(b) {
			t.Fatalf("n = %d > len %d", n, len(b))
		}
		if err != nil {
			return
		}
		if got := AppendUDPHeader(nil, h); !bytes.Equal(got, b[:n]) {
			t.Fatalf("re-encoded %x, want %x", got, b[:n])
		}
	})
}
