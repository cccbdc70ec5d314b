package handshake

import (
	"errors"
	"io"
)

// Config configures the server side of a handshake. The zero value accepts
// clients without authentication only (method 0x00).
type Config struct {
	// Credentials, when non-nil, makes RFC 1929 username/password
	// authentication mandatory: a client offering only method 0x00 is
	// answered with 0xFF.
	Credentials Credentials

	// Coalesce lets Negotiate hold back a successful method or auth answer
	// when the client has already sent its next frame (it pipelined), so
	// that the answers go out together with the request's reply in one
	// write: one write and one client wake-up instead of two or three.
	// A client that waits for each answer still gets it at once. The caller
	// must then answer the request with Request.WriteReply or
	// Request.WriteError, which send the held answers first.
	Coalesce bool
}

// Negotiate runs the server side of a SOCKS5 handshake on rw, using b as
// scratch: the greeting, the RFC 1929 sub-negotiation when credentials are
// configured (cfg may be nil for the zero Config), and the request. It
// answers the method selection and the authentication status itself; when it
// answers 0xFF or status 0x01 it returns ErrNoAcceptableMethod or
// ErrAuthFailed and the caller closes. It never writes a request reply: the
// caller does, with WriteReply or WriteError.
//
// Negotiate parses whatever the client has sent and reads more only while a
// frame is incomplete, so a client that pipelines everything costs one Read.
// Bytes read past the request are returned in Request.Rest. The returned
// Request aliases b. An unknown command is returned with its Request filled
// in and ErrCommandNotSupported. End of stream before the client's first
// byte is reported as io.EOF, anywhere later as io.ErrUnexpectedEOF. With
// ErrAuthFailed, Request.User is the name the client tried (empty if it sent
// none), for the caller's log. On success Negotiate does not allocate.
func Negotiate(rw io.ReadWriter, b *Buffer, cfg *Config) (Request, error) {
	var zero Config
	if cfg == nil {
		cfg = &zero
	}
	m, err := negotiateMethod(rw, b, cfg)
	if err != nil {
		return Request{}, err
	}
	var user []byte
	if m == MethodUserPass {
		if user, err = authenticate(rw, b, cfg); err != nil {
			return Request{User: user}, err
		}
	}
	req, err := readRequest(rw, b)
	req.User = user
	req.held, req.nheld = b.held, uint8(b.nheld)
	return req, err
}

// nextFrameReady reports whether the frame parse reads is already complete
// in b and will be answered: the client sent it without waiting for the
// answer in hand. A broken frame is not: the connection will close, and the
// client gets the answers it is owed first.
func nextFrameReady[T any](b *Buffer, parse func([]byte) (T, int, error)) bool {
	_, _, err := parse(b.pending())
	return err == nil || errors.Is(err, ErrCommandNotSupported) || errors.Is(err, ErrAddrTypeNotSupported)
}

// negotiateMethod reads the greeting and answers it with the chosen method.
func negotiateMethod(rw io.ReadWriter, b *Buffer, cfg *Config) (Method, error) {
	methods, err := readFrame(rw, b, "greeting", ParseGreeting)
	if err != nil {
		return 0, err
	}
	m := selectMethod(methods, cfg.Credentials)
	hold := false
	if cfg.Coalesce {
		switch m {
		case MethodNoAuth:
			hold = nextFrameReady(b, ParseRequest)
		case MethodUserPass:
			hold = nextFrameReady(b, parseUserPass)
		}
	}
	if err := b.answer(rw, "greeting", Version, byte(m), hold); err != nil {
		return 0, err
	}
	if m == MethodNoAcceptable {
		return 0, wrap("greeting", ErrNoAcceptableMethod)
	}
	return m, nil
}

// userPass is a parsed RFC 1929 request.
type userPass struct{ user, pass []byte }

func parseUserPass(b []byte) (userPass, int, error) {
	user, pass, n, err := ParseUserPass(b)
	return userPass{user, pass}, n, err
}

// authenticate reads the RFC 1929 request, checks it and answers with the
// status. The password is wiped from the buffer once checked.
func authenticate(rw io.ReadWriter, b *Buffer, cfg *Config) ([]byte, error) {
	up, err := readFrame(rw, b, "auth", parseUserPass)
	if err != nil {
		return nil, err
	}
	ok := len(up.user) > 0 && len(up.pass) > 0 && cfg.Credentials.Valid(up.user, up.pass)
	clear(up.pass)
	status := byte(authSucceeded)
	if !ok {
		status = authFailed
	}
	hold := ok && cfg.Coalesce && nextFrameReady(b, ParseRequest)
	if err := b.answer(rw, "auth", userPassVersion, status, hold); err != nil {
		return nil, err
	}
	if !ok {
		return up.user, wrap("auth", ErrAuthFailed)
	}
	return up.user, nil
}

// readRequest reads and parses the request; the bytes after it become Rest.
func readRequest(r io.Reader, b *Buffer) (Request, error) {
	req, err := readFrame(r, b, "request", ParseRequest)
	if err != nil && !errors.Is(err, ErrCommandNotSupported) {
		return req, err
	}
	if rest := b.pending(); len(rest) > 0 {
		req.Rest = rest
	}
	return req, err
}

// readFrame parses one frame from b, reading more from r while parse reports
// ErrShort, and consumes the n bytes that parse reports. Parse errors come
// back as parse returned them, read errors wrapped with stage.
func readFrame[T any](r io.Reader, b *Buffer, stage string, parse func([]byte) (T, int, error)) (T, error) {
	// Invariant: b.pending() starts at a frame boundary; each fill appends.
	for {
		v, n, err := parse(b.pending())
		if err != ErrShort {
			b.consume(n)
			return v, err
		}
		if err := b.fill(r); err != nil {
			var zero T
			return zero, readError(stage, err)
		}
	}
}

// answer sends the two-byte method or status reply, after any answers held
// before it, in one Write; with hold it holds it back too.
func (b *Buffer) answer(w io.Writer, stage string, v0, v1 byte, hold bool) error {
	if hold || b.nheld > 0 {
		b.held[b.nheld], b.held[b.nheld+1] = v0, v1
		b.nheld += 2
		if hold {
			return nil
		}
		_, err := w.Write(b.held[:b.nheld])
		b.nheld = 0
		if err != nil {
			return transportError(stage, err)
		}
		return nil
	}
	b.out = [2]byte{v0, v1}
	if _, err := w.Write(b.out[:]); err != nil {
		return transportError(stage, err)
	}
	return nil
}

// readError wraps a failure of Buffer.fill with its stage.
func readError(stage string, err error) error {
	if err == ErrMalformed {
		return wrap(stage, err)
	}
	return transportError(stage, err)
}
