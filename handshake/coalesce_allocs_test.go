package handshake

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"
)

// FuzzCoalesceSameBytes: with Config.Coalesce a client hears, byte for byte,
// what it hears without it (only the number of writes differs), whatever it
// sends and however the bytes are split into reads, and Negotiate returns
// the same error.
func FuzzCoalesceSameBytes(f *testing.F) {
	for _, tc := range negotiateCases {
		f.Add(cat(tc.in, []byte("payload")), tc.cfg.Credentials != nil, uint8(0))
		f.Add(tc.in, tc.cfg.Credentials != nil, uint8(1))
	}
	for _, in := range [][]byte{
		cat(greetUserPass, authWrongPass), cat(greetNoAuth, []byte{5, 9, 0, 1, 192, 0, 2, 1, 0, 80}),
		cat(greetNoAuth, []byte{5, 1, 0, 7}), cat(greetNoAuth, []byte{5, 1, 0, 3, 0, 0, 80}),
		cat(greetBoth, authAlice, []byte{5, 1, 1, 1, 192, 0, 2, 1, 0, 80}),
	} {
		f.Add(in, true, uint8(0))
		f.Add(in, false, uint8(2))
	}
	bnd := netip.MustParseAddrPort("[2001:db8::1]:443")
	run := func(in []byte, creds, coalesce bool, chunk int) ([]byte, error) {
		cfg := &Config{Coalesce: coalesce}
		if creds {
			cfg.Credentials = alice
		}
		var out bytes.Buffer
		b := GetBuffer()
		req, err := Negotiate(rw{&chunkReader{in, chunk}, &out}, b, cfg)
		b.Release()
		if err == nil {
			req.WriteReply(&out, Succeeded, bnd)
		} else {
			req.WriteError(&out, err)
		}
		return out.Bytes(), err
	}
	f.Fuzz(func(t *testing.T, in []byte, creds bool, chunk uint8) {
		plain, perr := run(in, creds, false, int(chunk))
		held, herr := run(in, creds, true, int(chunk))
		if !bytes.Equal(plain, held) {
			t.Fatalf("client hears % x with Coalesce, % x without", held, plain)
		}
		if (perr == nil) != (herr == nil) || perr != nil && perr.Error() != herr.Error() {
			t.Fatalf("Negotiate: %v with Coalesce, %v without", herr, perr)
		}
		if errors.Is(perr, ErrShort) {
			t.Fatalf("Negotiate returned ErrShort: %v", perr)
		}
	})
}

// TestCoalesceNoAllocUserPass: the coalesced success path allocates nothing
// with RFC 1929 too, the longest reply (two held answers and an IPv6
// BND.ADDR) included, for every address type of the request.
func TestCoalesceNoAllocUserPass(t *testing.T) {
	bnd := netip.MustParseAddrPort("[2001:db8::1]:443")
	for _, req := range [][]byte{reqIPv4, reqIPv6, reqDomain} {
		in := cat(greetBoth, authAlice, req)
		var r bytes.Reader
		conn := &rw{Reader: &r, Writer: io.Discard}
		cfg := &Config{Credentials: alice, Coalesce: true}
		var err error
		allocs := testing.AllocsPerRun(200, func() {
			r.Reset(in)
			b := GetBuffer()
			var req Request
			if req, err = Negotiate(conn, b, cfg); err == nil {
				err = req.WriteReply(conn, Succeeded, bnd)
			}
			b.Release()
		})
		if err != nil || allocs != 0 {
			t.Errorf("coalesced userpass % x: err=%v, %v allocs/op; want nil, 0", req, err, allocs)
		}
	}
}

// TestReleaseTwice: a Buffer released twice goes into the pool once, so
// that no two handshakes are ever handed the same one.
func TestReleaseTwice(t *testing.T) {
	// Not parallel: another test's Get between these calls could take
	// what this one put. (A GC emptying the pool, or the race detector
	// dropping a Put, would let the old code pass, never fail the new.)
	b := GetBuffer()
	b.Release()
	b.Release()
	first, second := GetBuffer(), GetBuffer()
	if first == second {
		t.Fatal("two GetBuffer calls after a double Release returned the same Buffer")
	}
	first.Release()
	second.Release()
}
