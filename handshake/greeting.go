package handshake

import "bytes"

// Version is the SOCKS protocol version, the first byte of every greeting,
// request and reply.
const Version = 0x05

// Method is an authentication method offered in the greeting (RFC 1928 §3).
type Method byte

// Authentication methods.
const (
	MethodNoAuth       Method = 0x00 // no authentication required
	MethodGSSAPI       Method = 0x01 // GSSAPI (RFC 1961); never chosen here
	MethodUserPass     Method = 0x02 // username/password (RFC 1929)
	MethodNoAcceptable Method = 0xFF // the server's "none of these" answer
)

// String returns the method's short name, or its value for unknown methods.
func (m Method) String() string {
	switch m {
	case MethodNoAuth:
		return "no-auth"
	case MethodGSSAPI:
		return "gssapi"
	case MethodUserPass:
		return "username/password"
	case MethodNoAcceptable:
		return "no-acceptable-methods"
	}
	return "method(" + hexByte(byte(m)) + ")"
}

// ParseGreeting parses VER, NMETHODS and METHODS from the start of b and
// returns the offered methods (aliasing b) and the bytes consumed. It returns
// ErrVersion as soon as the first byte is not 5, ErrMalformed for NMETHODS of
// zero, and ErrShort while the frame is incomplete.
func ParseGreeting(b []byte) (methods []byte, n int, err error) {
	if len(b) < 1 {
		return nil, 0, ErrShort
	}
	if b[0] != Version {
		return nil, 0, wrapByte("greeting", ErrVersion, b[0])
	}
	if len(b) < 2 {
		return nil, 0, ErrShort
	}
	nm := int(b[1])
	if nm == 0 {
		return nil, 0, wrap("greeting", ErrMalformed)
	}
	if len(b) < 2+nm {
		return nil, 0, ErrShort
	}
	return b[2 : 2+nm : 2+nm], 2 + nm, nil
}

// AppendGreeting appends a client greeting offering methods to b. At most 255
// methods are encoded; the rest are dropped.
func AppendGreeting(b []byte, methods ...Method) []byte {
	methods = methods[:min(len(methods), 255)]
	b = append(b, Version, byte(len(methods)))
	for _, m := range methods {
		b = append(b, byte(m))
	}
	return b
}

// selectMethod picks the method the server uses among those offered:
// username/password when credentials are configured, else no authentication.
// It returns MethodNoAcceptable when the one it wants is not offered.
func selectMethod(offered []byte, creds Credentials) Method {
	want := MethodNoAuth
	if creds != nil {
		want = MethodUserPass
	}
	if bytes.IndexByte(offered, byte(want)) < 0 {
		return MethodNoAcceptable
	}
	return want
}

// hexByte formats v as "0x07".
func hexByte(v byte) string {
	const hex = "0123456789abcdef"
	return "0x" + string([]byte{hex[v>>4], hex[v&0xf]})
}
