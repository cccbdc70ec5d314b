package handshake

// Command is the CMD byte of a request (RFC 1928 §4).
type Command byte

// Request commands.
const (
	CmdConnect      Command = 0x01
	CmdBind         Command = 0x02
	CmdUDPAssociate Command = 0x03
)

// String returns the command's short name, or its value when unknown.
func (c Command) String() string {
	switch c {
	case CmdConnect:
		return "connect"
	case CmdBind:
		return "bind"
	case CmdUDPAssociate:
		return "udp-associate"
	}
	return "command(" + hexByte(byte(c)) + ")"
}

// Request is a parsed SOCKS5 request. Its byte slices alias the Buffer it was
// read into and are valid until that Buffer is released.
type Request struct {
	Cmd  Command
	Addr Addr
	// User is the RFC 1929 user name when that method was used, else nil.
	User []byte
	// Rest holds the bytes the client sent after the request in the same
	// reads (pipelined payload), or nil. The caller must forward them to the
	// upstream, in order, before relaying anything else.
	Rest []byte

	// held[:nheld] are answers held back by Config.Coalesce; a copy, so they
	// outlive the Buffer.
	held  [4]byte
	nheld uint8
}

// requestHeaderLen is VER, CMD, RSV: the bytes before the address.
const requestHeaderLen = 3

// ParseRequest parses VER, CMD, RSV and the address from the start of b and
// returns the request (Cmd and Addr; Name aliases b) and the bytes consumed.
// It returns ErrVersion for a version other than 5, ErrMalformed for a
// non-zero RSV, ErrAddrTypeNotSupported for an unknown ATYP and ErrShort
// while the frame is incomplete. An unknown command yields
// ErrCommandNotSupported only once the whole frame has been parsed, with Cmd,
// Addr and n filled in, so that the caller can answer it; when the address
// cannot be parsed either, the command error wins and n stops before ATYP.
func ParseRequest(b []byte) (Request, int, error) {
	if len(b) < 1 {
		return Request{}, 0, ErrShort
	}
	if b[0] != Version {
		return Request{}, 0, wrapByte("request", ErrVersion, b[0])
	}
	if len(b) < requestHeaderLen {
		return Request{}, 0, ErrShort
	}
	if b[2] != 0 {
		return Request{}, 0, wrapByte("request", ErrMalformed, b[2])
	}
	req := Request{Cmd: Command(b[1])}
	known := req.Cmd == CmdConnect || req.Cmd == CmdBind || req.Cmd == CmdUDPAssociate
	a, n, err := parseAddr(b[requestHeaderLen:])
	switch {
	case err == ErrShort:
		return Request{}, 0, ErrShort
	case !known:
		if err != nil {
			n = 0 // the address cannot be skipped
		}
		req.Addr = a
		return req, requestHeaderLen + n, wrapByte("request", ErrCommandNotSupported, b[1])
	case err == ErrAddrTypeNotSupported:
		return req, requestHeaderLen, wrapByte("request", err, b[requestHeaderLen])
	case err != nil:
		return req, requestHeaderLen, wrap("request", err)
	}
	req.Addr = a
	return req, requestHeaderLen + n, nil
}

// AppendRequest appends a request for cmd to a (VER, CMD, RSV, then the
// address as AppendAddr writes it) to b.
func AppendRequest(b []byte, cmd Command, a Addr) []byte {
	return AppendAddr(append(b, Version, byte(cmd), 0), a)
}
