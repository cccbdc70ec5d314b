package handshake

import (
	"bytes"
	"io"
	"net/netip"
	"testing"
)

// negotiateCases are the success paths that must not allocate.
var negotiateCases = []struct {
	name string
	cfg  *Config
	in   []byte
}{
	{"noauth-ipv4", &Config{}, cat(greetNoAuth, reqIPv4)},
	{"noauth-ipv6", &Config{}, cat(greetNoAuth, reqIPv6)},
	{"noauth-domain", &Config{}, cat(greetNoAuth, reqDomain)},
	{"userpass-ipv4", &Config{Credentials: alice}, cat(greetBoth, authAlice, reqIPv4)},
}

func TestNegotiateAllocs(t *testing.T) {
	for _, tc := range negotiateCases {
		for _, oneByte := range []bool{false, true} {
			var r bytes.Reader
			var conn io.ReadWriter = &rw{Reader: &r, Writer: io.Discard}
			name := tc.name
			if oneByte {
				conn, name = &rw{Reader: &oneByteReader{&r}, Writer: io.Discard}, name+"/one-byte"
			}
			var err error
			allocs := testing.AllocsPerRun(200, func() {
				r.Reset(tc.in)
				b := GetBuffer()
				_, err = Negotiate(conn, b, tc.cfg)
				b.Release()
			})
			if err != nil || allocs != 0 {
				t.Errorf("%s: Negotiate: err=%v, %v allocs/op; want nil, 0", name, err, allocs)
			}
		}
	}
}

// oneByteReader is iotest.OneByteReader without its allocation per Read.
type oneByteReader struct{ r io.Reader }

func (o *oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

// TestNegotiateAllocsTCP checks the success path over a real loopback socket.
func TestNegotiateAllocsTCP(t *testing.T) {
	client, server := tcpPair(t)
	in := cat(greetBoth, authAlice, reqIPv6)
	cfg := &Config{Credentials: alice}
	answer := make([]byte, 4)
	var err error
	allocs := testing.AllocsPerRun(100, func() {
		if _, err = client.Write(in); err != nil {
			return
		}
		b := GetBuffer()
		_, err = Negotiate(server, b, cfg)
		b.Release()
		if err == nil {
			_, err = io.ReadFull(client, answer)
		}
	})
	if err != nil || allocs != 0 {
		t.Fatalf("Negotiate over TCP: err=%v, %v allocs/op; want nil, 0", err, allocs)
	}
}

func TestWriteReplyAllocs(t *testing.T) {
	bnd := netip.MustParseAddrPort("[2001:db8::1]:443")
	var err error
	allocs := testing.AllocsPerRun(200, func() {
		err = WriteReply(io.Discard, Succeeded, bnd)
	})
	if err != nil || allocs != 0 {
		t.Fatalf("WriteReply: err=%v, %v allocs/op; want nil, 0", err, allocs)
	}
}

func BenchmarkNegotiate(b *testing.B) {
	for _, tc := range negotiateCases {
		b.Run(tc.name, func(b *testing.B) {
			var r bytes.Reader
			conn := &rw{Reader: &r, Writer: io.Discard}
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.in)))
			for b.Loop() {
				r.Reset(tc.in)
				buf := GetBuffer()
				if _, err := Negotiate(conn, buf, tc.cfg); err != nil {
					b.Fatal(err)
				}
				buf.Release()
			}
		})
	}
}

func BenchmarkWriteReply(b *testing.B) {
	bnd := netip.MustParseAddrPort("192.0.2.9:4321")
	b.ReportAllocs()
	for b.Loop() {
		if err := WriteReply(io.Discard, Succeeded, bnd); err != nil {
			b.Fatal(err)
		}
	}
}
