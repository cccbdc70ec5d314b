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
// in and ErrCommandNotSupported. End of stream inside a frame is reported as
// io.ErrUnexpectedEOF. On success Negotiate does not allocate.
func Negotiate(rw io.ReadWriter, b *Buffer, cfg *Config) (Request, error) {
	var creds Credentials
	if cfg != nil {
		creds = cfg.Credentials
	}
	m, err := negotiateMethod(rw, b, creds)
	if err != nil {
		return Request{}, err
	}
	var user []byte
	if m == MethodUserPass {
		if user, err = authenticate(rw, b, creds); err != nil {
			return Request{}, err
		}
	}
	req, err := readRequest(rw, b)
	req.User = user
	return req, err
}

// negotiateMethod reads the greeting and answers it with the chosen method.
func negotiateMethod(rw io.ReadWriter, b *Buffer, creds Credentials) (Method, error) {
	methods, err := readFrame(rw, b, "greeting", ParseGreeting)
	if err != nil {
		return 0, err
	}
	m := selectMethod(methods, creds)
	if err := b.answer(rw, "greeting", Version, byte(m)); err != nil {
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
func authenticate(rw io.ReadWriter, b *Buffer, creds Credentials) ([]byte, error) {
	up, err := readFrame(rw, b, "auth", parseUserPass)
	if err != nil {
		return nil, err
	}
	ok := len(up.user) > 0 && len(up.pass) > 0 && creds.Valid(up.user, up.pass)
	clear(up.pass)
	status := byte(authSucceeded)
	if !ok {
		status = authFailed
	}
	if err := b.answer(rw, "auth", userPassVersion, status); err != nil {
		return nil, err
	}
	if !ok {
		return nil, wrap("auth", ErrAuthFailed)
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

// answer writes the two-byte method or status reply in one Write.
func (b *Buffer) answer(w io.Writer, stage string, v0, v1 byte) error {
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
