package handshake

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"
)

// writes records each Write as its own chunk.
type writes struct{ chunks [][]byte }

func (w *writes) Write(p []byte) (int, error) {
	w.chunks = append(w.chunks, append([]byte(nil), p...))
	return len(p), nil
}

// chunkedReader returns one chunk per Read: what the client sent in one go.
type chunkedReader struct{ chunks [][]byte }

func (r *chunkedReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	if len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

// TestCoalesce checks which answers Negotiate holds back under
// Config.Coalesce and that Request.WriteReply / WriteError send them first,
// all in one Write.
func TestCoalesce(t *testing.T) {
	greetNoAuth := []byte{5, 1, 0}
	greetUserPass := []byte{5, 1, 2}
	auth := []byte{1, 1, 'u', 1, 'p'}
	badAuth := []byte{1, 1, 'u', 1, 'x'}
	req := []byte{5, 1, 0, 1, 127, 0, 0, 1, 0, 80}
	unknownCmd := []byte{5, 9, 0, 1, 127, 0, 0, 1, 0, 80}
	bnd := netip.MustParseAddrPort("127.0.0.1:4242")
	reply := AppendReply(nil, Succeeded, bnd)
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	cases := []struct {
		name   string
		creds  Credentials
		in     [][]byte // what the client sends, one chunk per read
		during [][]byte // written inside Negotiate
		after  [][]byte // written by req.WriteReply / WriteError
		err    error
	}{
		// -> greeting+request in one segment; <- method answer and reply together
		{"noauth-pipelined", nil, [][]byte{cat(greetNoAuth, req)}, nil, [][]byte{cat([]byte{5, 0}, reply)}, nil},
		// -> greeting; <- method answer at once; -> request; <- reply
		{"noauth-lockstep", nil, [][]byte{greetNoAuth, req}, [][]byte{{5, 0}}, [][]byte{reply}, nil},
		{"userpass-pipelined", Users{"u": "p"}, [][]byte{cat(greetUserPass, auth, req)}, nil, [][]byte{cat([]byte{5, 2, 1, 0}, reply)}, nil},
		// -> greeting+auth; <- method and status together; -> request; <- reply
		{"userpass-then-request", Users{"u": "p"}, [][]byte{cat(greetUserPass, auth), req}, [][]byte{{5, 2, 1, 0}}, [][]byte{reply}, nil},
		{"userpass-lockstep", Users{"u": "p"}, [][]byte{greetUserPass, auth, req}, [][]byte{{5, 2}, {1, 0}}, [][]byte{reply}, nil},
		// a failure is never held: method and failure status go out at once
		{"userpass-wrong", Users{"u": "p"}, [][]byte{cat(greetUserPass, badAuth, req)}, [][]byte{{5, 2, 1, 1}}, nil, ErrAuthFailed},
		// a broken request is not answered: the answers owed go out, then close
		{"broken-request", Users{"u": "p"}, [][]byte{cat(greetUserPass, auth, []byte{4, 1, 0, 1, 127, 0, 0, 1, 0, 80})}, [][]byte{{5, 2, 1, 0}}, nil, ErrVersion},
		// an unknown command is answered 0x07 after the held method answer
		{"unknown-command", nil, [][]byte{cat(greetNoAuth, unknownCmd)}, nil, [][]byte{cat([]byte{5, 0}, AppendReply(nil, CommandNotSupported, netip.AddrPort{}))}, ErrCommandNotSupported},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := &writes{}
			rw := struct {
				io.Reader
				io.Writer
			}{&chunkedReader{chunks: tc.in}, w}
			b := GetBuffer()
			defer b.Release()
			r, err := Negotiate(rw, b, &Config{Credentials: tc.creds, Coalesce: true})
			if !errors.Is(err, tc.err) {
				t.Fatalf("Negotiate: %v, want %v", err, tc.err)
			}
			if !equalChunks(w.chunks, tc.during) {
				t.Fatalf("written during Negotiate %x, want %x", w.chunks, tc.during)
			}
			if errors.Is(err, ErrAuthFailed) || errors.Is(err, ErrVersion) {
				return
			}
			w.chunks = nil
			if err != nil {
				err = r.WriteError(rw, err)
			} else {
				err = r.WriteReply(rw, Succeeded, bnd)
			}
			if err != nil || !equalChunks(w.chunks, tc.after) {
				t.Fatalf("reply writes %x (%v), want %x", w.chunks, err, tc.after)
			}
		})
	}
}

func equalChunks(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// TestCoalesceNoAlloc checks the coalesced success path allocates nothing.
func TestCoalesceNoAlloc(t *testing.T) {
	in := []byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80}
	var r bytes.Reader
	// A pointer, as a *net.TCPConn is: converting it to an interface does
	// not allocate.
	rw := &struct {
		io.Reader
		io.Writer
	}{&r, io.Discard}
	cfg := &Config{Coalesce: true}
	bnd := netip.MustParseAddrPort("127.0.0.1:4242")
	var err error
	allocs := testing.AllocsPerRun(200, func() {
		r.Reset(in)
		b := GetBuffer()
		var req Request
		if req, err = Negotiate(rw, b, cfg); err == nil {
			err = req.WriteReply(rw, Succeeded, bnd)
		}
		b.Release()
	})
	if err != nil || allocs != 0 {
		t.Fatalf("coalesced Negotiate+WriteReply: err=%v, %v allocs/op; want nil, 0", err, allocs)
	}
}
