package handshake

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"testing/iotest"
	"time"
)

// step is one leg of a transcript: "->" the client sends b, "<-" the client
// expects to receive exactly b.
type step struct {
	dir string
	b   []byte
}

// result is what the transcript's server saw, copied out of its Buffer.
type result struct {
	cmd              Command
	addr, user, rest string
	err              error
}

// serveTranscript runs Negotiate on c, answers like a server that dials
// nothing (WriteReply with 192.0.2.9:4321 on success, WriteError otherwise)
// and closes c.
func serveTranscript(c net.Conn, cfg *Config, done chan<- result) {
	defer c.Close()
	b := GetBuffer()
	defer b.Release()
	req, err := Negotiate(c, b, cfg)
	res := result{req.Cmd, req.Addr.String(), string(req.User), string(req.Rest), err}
	if err == nil {
		err = WriteReply(c, Succeeded, netip.MustParseAddrPort("192.0.2.9:4321"))
	} else {
		err = WriteError(c, err)
	}
	if err != nil && res.err == nil {
		res.err = err
	}
	done <- res
}

// converse plays steps as the client over net.Pipe, then expects the server
// to close the connection without sending anything more.
func converse(t *testing.T, cfg *Config, steps []step) result {
	t.Helper()
	client, server := net.Pipe()
	defer client.Close()
	client.SetDeadline(time.Now().Add(5 * time.Second)) // safety net
	server.SetDeadline(time.Now().Add(5 * time.Second))
	done := make(chan result, 1)
	go serveTranscript(server, cfg, done)
	for i, s := range steps {
		switch s.dir {
		case "->":
			if _, err := client.Write(s.b); err != nil {
				t.Fatalf("step %d: write % x: %v", i, s.b, err)
			}
		case "<-":
			got := make([]byte, len(s.b))
			if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, s.b) {
				t.Fatalf("step %d: read % x, %v; want % x", i, got, err, s.b)
			}
		}
	}
	if n, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after transcript: read %d bytes, %v; want EOF", n, err)
	}
	return <-done
}

// authCfg requires username/password authentication.
var authCfg = &Config{Credentials: alice}

// transcripts are byte-exact conversations; "->" is what the client sends,
// "<-" what it receives. After the last step the server closes.
var transcripts = []struct {
	name  string
	cfg   *Config
	steps []step
	want  result
}{
	{"noauth-connect", nil, []step{
		{"->", greetNoAuth},  // VER 5, 1 method: no auth
		{"<-", []byte{5, 0}}, // method: no auth
		{"->", reqIPv4},      // CONNECT 192.0.2.1:80
		{"<-", replyOK},      // succeeded, BND 192.0.2.9:4321
	}, result{cmd: CmdConnect, addr: "192.0.2.1:80"}},
	{"noauth-offered-with-userpass", &Config{}, []step{
		{"->", greetBoth},    // methods: no auth, username/password
		{"<-", []byte{5, 0}}, // no auth preferred without credentials
		{"->", reqIPv6},      // CONNECT [2001:db8::1]:443
		{"<-", replyOK},
	}, result{cmd: CmdConnect, addr: "[2001:db8::1]:443"}},
	{"no-acceptable-method", nil, []step{
		{"->", greetUserPass},   // only username/password offered
		{"<-", []byte{5, 0xff}}, // no acceptable methods, then close
	}, result{err: ErrNoAcceptableMethod}},
	{"auth-required-noauth-offered", authCfg, []step{
		{"->", greetNoAuth},     // only no auth offered
		{"<-", []byte{5, 0xff}}, // credentials are mandatory: 0xFF, close
	}, result{err: ErrNoAcceptableMethod}},
	{"userpass-connect", authCfg, []step{
		{"->", greetBoth},    // no auth, username/password
		{"<-", []byte{5, 2}}, // username/password chosen
		{"->", authAlice},    // alice / secret
		{"<-", []byte{1, 0}}, // status: success
		{"->", reqDomain},    // CONNECT example.com:80
		{"<-", replyOK},
	}, result{cmd: CmdConnect, addr: "example.com:80", user: "alice"}},
	{"userpass-wrong-password", authCfg, []step{
		{"->", greetUserPass},
		{"<-", []byte{5, 2}},
		{"->", authWrongPass}, // alice / guess
		{"<-", []byte{1, 1}},  // status: failure, then close
	}, result{user: "alice", err: ErrAuthFailed}}, // the name tried, for the log
	{"userpass-unknown-user", authCfg, []step{
		{"->", greetUserPass},
		{"<-", []byte{5, 2}},
		{"->", AppendUserPass(nil, []byte("mallory"), []byte("secret"))},
		{"<-", []byte{1, 1}},
	}, result{user: "mallory", err: ErrAuthFailed}},
	{"userpass-empty", authCfg, []step{
		{"->", greetUserPass},
		{"<-", []byte{5, 2}},
		{"->", []byte{1, 0, 0}}, // ULEN 0, PLEN 0: forbidden by RFC 1929
		{"<-", []byte{1, 1}},
	}, result{err: ErrAuthFailed}},
	{"userpass-bad-subversion", authCfg, []step{
		{"->", greetUserPass},
		{"<-", []byte{5, 2}},
		{"->", cat([]byte{5}, authAlice[1:])}, // sub-negotiation VER 5: close silently
	}, result{err: ErrMalformed}},
	{"bad-version", nil, []step{
		{"->", []byte{4, 1, 0, 80, 127, 0, 0, 1, 0}}, // SOCKS4: close silently
	}, result{err: ErrVersion}},
	{"nmethods-zero", nil, []step{
		{"->", []byte{5, 0}}, // close silently
	}, result{err: ErrMalformed}},
	{"request-rsv-nonzero", nil, []step{
		{"->", greetNoAuth},
		{"<-", []byte{5, 0}},
		{"->", []byte{5, 1, 1, 1, 192, 0, 2, 1, 0, 80}}, // RSV 1: close silently
	}, result{err: ErrMalformed}},
	{"request-unknown-command", nil, []step{
		{"->", greetNoAuth},
		{"<-", []byte{5, 0}},
		{"->", []byte{5, 9, 0, 1, 192, 0, 2, 1, 0, 80}}, // CMD 9
		{"<-", []byte{5, 7, 0, 1, 0, 0, 0, 0, 0, 0}},    // command not supported
	}, result{cmd: 9, addr: "192.0.2.1:80", err: ErrCommandNotSupported}},
	{"request-unknown-atyp", nil, []step{
		{"->", greetNoAuth},
		{"<-", []byte{5, 0}},
		{"->", []byte{5, 1, 0, 2, 192, 0, 2, 1, 0, 80}}, // ATYP 2
		{"<-", []byte{5, 8, 0, 1, 0, 0, 0, 0, 0, 0}},    // address type not supported
	}, result{cmd: CmdConnect, addr: ":0", err: ErrAddrTypeNotSupported}},
	{"pipelined", nil, []step{
		{"->", cat(greetNoAuth, reqIPv4, []byte("hello"))}, // all in one write
		{"<-", []byte{5, 0}},
		{"<-", replyOK},
	}, result{cmd: CmdConnect, addr: "192.0.2.1:80", rest: "hello"}},
	{"pipelined-userpass", authCfg, []step{
		{"->", cat(greetUserPass, authAlice, reqIPv4, []byte("hello"))},
		{"<-", []byte{5, 2}},
		{"<-", []byte{1, 0}},
		{"<-", replyOK},
	}, result{cmd: CmdConnect, addr: "192.0.2.1:80", user: "alice", rest: "hello"}},
}

func TestNegotiateTranscripts(t *testing.T) {
	for _, tt := range transcripts {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := converse(t, tt.cfg, tt.steps)
			if !errorIs(got.err, tt.want.err) {
				t.Fatalf("err = %v; want %v", got.err, tt.want.err)
			}
			got.err = tt.want.err
			if tt.want.addr == "" {
				tt.want.addr = ":0" // the zero Addr
			}
			if got != tt.want {
				t.Fatalf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}

// TestNegotiateInMemory runs whole exchanges against readers that deliver
// everything at once, one byte per Read, or the last bytes with io.EOF.
func TestNegotiateInMemory(t *testing.T) {
	payload := []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
	readers := map[string]func(io.Reader) io.Reader{
		"all-at-once": func(r io.Reader) io.Reader { return r },
		"one-byte":    iotest.OneByteReader,
		"half":        iotest.HalfReader,
		"data-err":    iotest.DataErrReader,
	}
	for _, tt := range []struct {
		name      string
		cfg       *Config
		in        []byte
		addr      string
		user      string
		wantReply []byte
	}{
		{"noauth-ipv4", nil, cat(greetNoAuth, reqIPv4), "192.0.2.1:80", "", []byte{5, 0}},
		{"noauth-ipv6", nil, cat(greetBoth, reqIPv6), "[2001:db8::1]:443", "", []byte{5, 0}},
		{"noauth-domain", nil, cat(greetNoAuth, reqDomain), "example.com:80", "", []byte{5, 0}},
		{"userpass-ipv4", &Config{Credentials: alice}, cat(greetBoth, authAlice, reqIPv4), "192.0.2.1:80", "alice", []byte{5, 2, 1, 0}},
	} {
		for rname, wrapReader := range readers {
			t.Run(tt.name+"/"+rname, func(t *testing.T) {
				src := bytes.NewReader(cat(tt.in, payload))
				var out bytes.Buffer
				b := GetBuffer()
				defer b.Release()
				req, err := Negotiate(rw{wrapReader(src), &out}, b, tt.cfg)
				if err != nil || req.Cmd != CmdConnect || req.Addr.String() != tt.addr || string(req.User) != tt.user {
					t.Fatalf("Negotiate = %v %v user %q, %v; want connect %s user %q",
						req.Cmd, req.Addr, req.User, err, tt.addr, tt.user)
				}
				if !bytes.Equal(out.Bytes(), tt.wantReply) {
					t.Fatalf("server wrote % x; want % x", out.Bytes(), tt.wantReply)
				}
				left, _ := io.ReadAll(src)
				if got := cat(req.Rest, left); !bytes.Equal(got, payload) {
					t.Fatalf("Rest %q + unread %q; want %q", req.Rest, left, payload)
				}
				if rname == "all-at-once" && !bytes.Equal(req.Rest, payload) {
					t.Fatalf("Rest = %q; want the whole payload %q", req.Rest, payload)
				}
				if rname == "one-byte" && req.Rest != nil {
					t.Fatalf("Rest = %q; want nil: reading one byte at a time never passes the request", req.Rest)
				}
			})
		}
	}
}

// TestNegotiateBufferFull pipelines more payload than the Buffer holds: Rest
// is what fits, the rest stays unread.
func TestNegotiateBufferFull(t *testing.T) {
	head := cat(greetUserPass, authAlice, reqDomain)
	payload := bytes.Repeat([]byte("0123456789abcdef"), 256)
	src := bytes.NewReader(cat(head, payload))
	b := GetBuffer()
	defer b.Release()
	req, err := Negotiate(rw{src, io.Discard}, b, &Config{Credentials: alice})
	if err != nil {
		t.Fatal(err)
	}
	if want := payload[:BufferSize-len(head)]; !bytes.Equal(req.Rest, want) {
		t.Fatalf("len(Rest) = %d; want the %d payload bytes that fit", len(req.Rest), len(want))
	}
	if src.Len() != len(payload)-len(req.Rest) {
		t.Fatalf("%d bytes left unread; want %d", src.Len(), len(payload)-len(req.Rest))
	}
}

// TestNegotiateEOF cuts a pipelined exchange at every byte: a cut before
// the first byte must give io.EOF, every other io.ErrUnexpectedEOF, and
// WriteError must then stay silent.
func TestNegotiateEOF(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  *Config
		in   []byte
	}{
		{"noauth", nil, cat(greetNoAuth, reqDomain)},
		{"userpass", &Config{Credentials: alice}, cat(greetUserPass, authAlice, reqIPv6)},
	} {
		for i := range len(tt.in) {
			b := GetBuffer()
			_, err := Negotiate(rw{bytes.NewReader(tt.in[:i]), io.Discard}, b, tt.cfg)
			b.Release()
			want := io.ErrUnexpectedEOF
			if i == 0 {
				want = io.EOF
			}
			if !errors.Is(err, want) {
				t.Fatalf("%s cut at %d: err = %v; want %v", tt.name, i, err, want)
			}
			var out bytes.Buffer
			if werr := WriteError(&out, err); werr != nil || out.Len() != 0 {
				t.Fatalf("%s cut at %d: WriteError wrote % x, %v; want nothing", tt.name, i, out.Bytes(), werr)
			}
		}
	}
}

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

// emptyReader returns 0, nil forever.
type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

// TestNegotiateTransportErrors checks that read and write failures on the
// client connection come back wrapped, and get no reply from WriteError even
// when they are timeouts.
func TestNegotiateTransportErrors(t *testing.T) {
	boom := errors.New("boom")
	for _, tt := range []struct {
		name string
		conn io.ReadWriter
		want error
	}{
		{"read-error", rw{iotest.ErrReader(boom), io.Discard}, boom},
		{"read-timeout", rw{io.MultiReader(bytes.NewReader(greetNoAuth), iotest.ErrReader(os.ErrDeadlineExceeded)), io.Discard}, os.ErrDeadlineExceeded},
		{"no-progress", rw{emptyReader{}, io.Discard}, io.ErrNoProgress},
		{"write-error", rw{bytes.NewReader(cat(greetNoAuth, reqIPv4)), failWriter{boom}}, boom},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := GetBuffer()
			defer b.Release()
			_, err := Negotiate(tt.conn, b, nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v; want %v", err, tt.want)
			}
			var out bytes.Buffer
			if werr := WriteError(&out, err); werr != nil || out.Len() != 0 {
				t.Fatalf("WriteError wrote % x, %v; want nothing", out.Bytes(), werr)
			}
		})
	}
}
