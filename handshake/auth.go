package handshake

import (
	"crypto/sha256"
	"crypto/subtle"
	"unsafe"
)

// userPassVersion is the RFC 1929 sub-negotiation version.
const userPassVersion = 0x01

// RFC 1929 status bytes.
const (
	authSucceeded = 0x00
	authFailed    = 0x01
)

// Credentials checks RFC 1929 user names and passwords. Implementations must
// compare in constant time, must not keep user or pass (they alias a Buffer),
// and may be called from many goroutines at once.
type Credentials interface {
	Valid(user, pass []byte) bool
}

// Users is a static user table mapping user names to passwords. It must not be
// modified while in use.
type Users map[string]string

// dummyPassword is compared against when the user is unknown, so that the
// check costs the same whether or not the user exists.
const dummyPassword = "handshake: no such user, compared for constant time"

// maxField is RFC 1929's limit on a user name or password: 255 bytes.
const maxField = 255

// Valid reports whether pass is the password of user. It compares SHA-256
// digests of fixed-size blocks with crypto/subtle, so its time depends
// neither on where the passwords differ nor on their lengths, the stored
// one's included, and it does the same work for unknown users. Empty names
// and passwords, and passwords over 255 bytes, which RFC 1929 cannot carry,
// are never valid. It does not allocate.
func (u Users) Valid(user, pass []byte) bool {
	want, ok := u[string(user)]
	if !ok {
		want = dummyPassword
	}
	// A read-only view of the string: converting it would allocate for
	// passwords over 32 bytes.
	wantSum := blockSum(unsafe.Slice(unsafe.StringData(want), len(want)))
	gotSum := blockSum(pass)
	eq := subtle.ConstantTimeCompare(wantSum[:], gotSum[:])
	return eq == 1 && ok && len(user) > 0 && len(pass) > 0 && len(pass) <= maxField
}

// blockSum returns the SHA-256 digest of a 256-byte block holding the length
// of p and then p, zero-padded: the same five SHA-256 blocks whatever the
// length of p, so that hashing a stored password tells nothing of its length
// (a digest of the password itself would take one to five). A p over 255
// bytes has the length 0 there, which no valid password has.
func blockSum(p []byte) [sha256.Size]byte {
	var block [1 + maxField]byte
	if len(p) <= maxField {
		block[0] = byte(len(p))
	}
	copy(block[1:], p)
	return sha256.Sum256(block[:])
}

// ParseUserPass parses an RFC 1929 username/password request (VER 0x01,
// ULEN, UNAME, PLEN, PASSWD) from the start of b and returns user and pass
// aliasing b, and the bytes consumed. A version other than 0x01 is
// ErrMalformed. Zero lengths, which RFC 1929 forbids, are parsed anyway so
// that the server can answer them as a failed authentication. It returns
// ErrShort while the frame is incomplete.
func ParseUserPass(b []byte) (user, pass []byte, n int, err error) {
	if len(b) < 1 {
		return nil, nil, 0, ErrShort
	}
	if b[0] != userPassVersion {
		return nil, nil, 0, wrapByte("auth", ErrMalformed, b[0])
	}
	if len(b) < 2 {
		return nil, nil, 0, ErrShort
	}
	ulen := int(b[1])
	if len(b) < 2+ulen+1 {
		return nil, nil, 0, ErrShort
	}
	plen := int(b[2+ulen])
	n = 2 + ulen + 1 + plen
	if len(b) < n {
		return nil, nil, 0, ErrShort
	}
	return b[2 : 2+ulen : 2+ulen], b[3+ulen : n : n], n, nil
}

// AppendUserPass appends an RFC 1929 username/password request to b. Names
// and passwords longer than 255 bytes are truncated.
func AppendUserPass(b []byte, user, pass []byte) []byte {
	user, pass = user[:min(len(user), 255)], pass[:min(len(pass), 255)]
	b = append(b, userPassVersion, byte(len(user)))
	b = append(b, user...)
	b = append(b, byte(len(pass)))
	return append(b, pass...)
}
