package handshake

import (
	"errors"
	"strings"
)

// Sentinel errors. Parsers and Negotiate wrap them with the stage that failed
// ("handshake: request: unsupported address type 0x07"); match them with
// errors.Is. ErrShort is the one exception: the parsers return it bare, since
// it is an expected, frequent outcome when reading a frame piece by piece.
var (
	// ErrShort reports a frame that is valid so far but incomplete: read more.
	ErrShort = errors.New("handshake: short frame")
	// ErrVersion reports a greeting or request whose version byte is not 5.
	ErrVersion = errors.New("handshake: unsupported version")
	// ErrMalformed reports a frame that breaks RFC 1928 or RFC 1929, such as a
	// non-zero RSV, NMETHODS of zero or a zero-length domain name.
	ErrMalformed = errors.New("handshake: malformed frame")
	// ErrNoAcceptableMethod reports a greeting offering no method the server
	// accepts; Negotiate has already answered it with method 0xFF.
	ErrNoAcceptableMethod = errors.New("handshake: no acceptable authentication method")
	// ErrAuthFailed reports rejected RFC 1929 credentials; Negotiate has
	// already answered them with status 0x01.
	ErrAuthFailed = errors.New("handshake: authentication failed")
	// ErrCommandNotSupported reports a request command the server does not
	// carry out; the caller answers it with CommandNotSupported.
	ErrCommandNotSupported = errors.New("handshake: command not supported")
	// ErrAddrTypeNotSupported reports an unknown address type; the caller
	// answers it with AddrTypeNotSupported.
	ErrAddrTypeNotSupported = errors.New("handshake: unsupported address type")
	// ErrNotAllowed reports a target that the caller's policy refuses; it
	// maps to the NotAllowed reply.
	ErrNotAllowed = errors.New("handshake: not allowed by ruleset")
	// ErrTTLExpired reports a deadline such as a BIND that waited too long; it
	// maps to the TTLExpired reply.
	ErrTTLExpired = errors.New("handshake: ttl expired")
)

// stageError is a sentinel or transport error together with the handshake
// stage that produced it.
type stageError struct {
	stage  string // "greeting", "auth", "request", "address"
	err    error  // a sentinel of this package, or a read/write error
	detail string // optional, e.g. the offending byte "0x07"
	// transport marks a read or write failure on the client connection: the
	// client gets no reply at all.
	transport bool
}

func (e *stageError) Error() string {
	s := "handshake: " + e.stage + ": " + strings.TrimPrefix(e.err.Error(), "handshake: ")
	if e.detail != "" {
		s += " " + e.detail
	}
	return s
}

func (e *stageError) Unwrap() error { return e.err }

// wrap returns err (a sentinel) wrapped with its stage, or nil for nil and
// ErrShort unchanged.
func wrap(stage string, err error) error {
	if err == nil || err == ErrShort {
		return err
	}
	return &stageError{stage: stage, err: err}
}

// wrapByte is wrap with the offending wire byte appended to the message.
func wrapByte(stage string, err error, v byte) error {
	return &stageError{stage: stage, err: err, detail: hexByte(v)}
}

// transportError wraps a read or write failure on the client connection.
func transportError(stage string, err error) error {
	return &stageError{stage: stage, err: err, transport: true}
}

// isTransport reports whether err is a client read/write failure seen by
// Negotiate.
func isTransport(err error) bool {
	var se *stageError
	return errors.As(err, &se) && se.transport
}
