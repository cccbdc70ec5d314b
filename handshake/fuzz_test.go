package handshake

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// Fuzz properties for every parser: no panic, n <= len(b), ErrShort only
// with n == 0, and on success re-encoding the value gives back b[:n].

func FuzzParseGreeting(f *testing.F) {
	for _, tt := range greetingTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		methods, n, err := ParseGreeting(b)
		checkN(t, b, n, err)
		if err != nil {
			return
		}
		ms := make([]Method, len(methods))
		for i, m := range methods {
			ms[i] = Method(m)
		}
		if re := AppendGreeting(nil, ms...); !bytes.Equal(re, b[:n]) {
			t.Fatalf("re-encoded % x; want % x", re, b[:n])
		}
	})
}

func FuzzParseUserPass(f *testing.F) {
	for _, tt := range userPassTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		user, pass, n, err := ParseUserPass(b)
		checkN(t, b, n, err)
		if err != nil {
			return
		}
		if re := AppendUserPass(nil, user, pass); !bytes.Equal(re, b[:n]) {
			t.Fatalf("re-encoded % x; want % x", re, b[:n])
		}
	})
}

func FuzzParseRequest(f *testing.F) {
	for _, tt := range requestTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, n, err := ParseRequest(b)
		checkN(t, b, n, err)
		// A request with an unknown command is parsed in full when its
		// address is known, and re-encodes too.
		if err != nil && (!errors.Is(err, ErrCommandNotSupported) || n == requestHeaderLen) {
			return
		}
		if re := AppendRequest(nil, req.Cmd, req.Addr); !bytes.Equal(re, b[:n]) {
			t.Fatalf("re-encoded % x; want % x", re, b[:n])
		}
	})
}

func FuzzParseAddr(f *testing.F) {
	for _, tt := range addrTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, n, err := ParseAddr(b)
		checkN(t, b, n, err)
		if err != nil {
			return
		}
		if re := AppendAddr(nil, a); !bytes.Equal(re, b[:n]) {
			t.Fatalf("re-encoded % x; want % x", re, b[:n])
		}
		if s := a.String(); len(s) == 0 {
			t.Fatal("empty String()")
		}
	})
}

func checkN(t *testing.T, b []byte, n int, err error) {
	t.Helper()
	if n < 0 || n > len(b) {
		t.Fatalf("n = %d for %d bytes", n, len(b))
	}
	if err == ErrShort && n != 0 {
		t.Fatalf("ErrShort with n = %d", n)
	}
}

// chunkReader returns at most n bytes per Read (all of them when n is 0).
type chunkReader struct {
	b []byte
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	if r.n > 0 && len(p) > r.n {
		p = p[:r.n]
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// FuzzNegotiate runs whole exchanges from arbitrary client bytes, delivered
// in chunks of the given size, with or without credentials.
func FuzzNegotiate(f *testing.F) {
	for _, tc := range negotiateCases {
		f.Add(cat(tc.in, []byte("payload")), tc.cfg.Credentials != nil, uint8(0))
		f.Add(tc.in, tc.cfg.Credentials != nil, uint8(1))
	}
	for _, in := range [][]byte{
		cat(greetUserPass, authWrongPass), cat(greetNoAuth, []byte{5, 9, 0, 1, 192, 0, 2, 1, 0, 80}),
		cat(greetNoAuth, []byte{5, 1, 0, 7}), []byte{4, 1, 0}, []byte{5, 0}, cat(greetBoth, []byte{1, 0, 0}),
	} {
		f.Add(in, true, uint8(3))
		f.Add(in, false, uint8(0))
	}
	f.Fuzz(func(t *testing.T, in []byte, creds bool, chunk uint8) {
		cfg := &Config{}
		if creds {
			cfg.Credentials = alice
		}
		var out bytes.Buffer
		b := GetBuffer()
		defer b.Release()
		src := &chunkReader{in, int(chunk)}
		req, err := Negotiate(rw{src, &out}, b, cfg)
		checkAnswers(t, out.Bytes(), creds, err)
		if err == nil || errors.Is(err, ErrCommandNotSupported) {
			checkRequest(t, in, src.b, req, creds)
		}
		var reply bytes.Buffer
		if werr := WriteError(&reply, err); werr != nil || (reply.Len() > 0 && reply.Bytes()[1] == byte(Succeeded)) {
			t.Fatalf("WriteError(%v) wrote % x, %v", err, reply.Bytes(), werr)
		}
	})
}

// checkAnswers checks what Negotiate wrote against what it returned.
func checkAnswers(t *testing.T, out []byte, creds bool, err error) {
	t.Helper()
	ok := []byte{5, 0}
	if creds {
		ok = []byte{5, 2, 1, 0}
	}
	switch {
	case errors.Is(err, ErrNoAcceptableMethod):
		ok = []byte{5, 0xff}
	case errors.Is(err, ErrAuthFailed):
		ok = []byte{5, 2, 1, 1}
	case err != nil && !errors.Is(err, ErrCommandNotSupported) && !errors.Is(err, ErrAddrTypeNotSupported):
		// Failed before all answers were sent: a prefix of the success path.
		if !bytes.HasPrefix(ok, out) || len(out)%2 != 0 {
			t.Fatalf("err %v after writing % x", err, out)
		}
		return
	}
	if !bytes.Equal(out, ok) {
		t.Fatalf("err %v: wrote % x; want % x", err, out, ok)
	}
}

// checkRequest checks that the request, Rest and the bytes left unread
// re-encode to the end of in.
func checkRequest(t *testing.T, in, unread []byte, req Request, creds bool) {
	t.Helper()
	if creds != (string(req.User) == "alice") {
		t.Fatalf("User = %q with credentials %v", req.User, creds)
	}
	if !bytes.HasSuffix(in, cat(req.Rest, unread)) {
		t.Fatalf("Rest % x + unread % x is not the end of the input", req.Rest, unread)
	}
	if req.Addr.Type == 0 {
		return // unknown command with an unparsable address
	}
	tail := cat(AppendRequest(nil, req.Cmd, req.Addr), req.Rest, unread)
	if !bytes.HasSuffix(in, tail) {
		t.Fatalf("request+Rest % x is not the end of the input % x", tail, in)
	}
}
