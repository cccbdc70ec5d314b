package handshake

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// Frames shared by the tables, the transcripts, the allocation tests, the
// benchmarks and the fuzz seeds.
var (
	greetNoAuth   = []byte{0x05, 0x01, 0x00}
	greetUserPass = []byte{0x05, 0x01, 0x02}
	greetBoth     = []byte{0x05, 0x02, 0x00, 0x02}
	authAlice     = []byte{0x01, 0x05, 'a', 'l', 'i', 'c', 'e', 0x06, 's', 'e', 'c', 'r', 'e', 't'}
	authWrongPass = []byte{0x01, 0x05, 'a', 'l', 'i', 'c', 'e', 0x05, 'g', 'u', 'e', 's', 's'}
	reqIPv4       = []byte{0x05, 0x01, 0x00, 0x01, 192, 0, 2, 1, 0x00, 0x50}
	reqIPv6       = []byte{0x05, 0x01, 0x00, 0x04,
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x01, 0xbb}
	reqDomain = []byte{0x05, 0x01, 0x00, 0x03, 11,
		'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'c', 'o', 'm', 0x00, 0x50}
	// replyOK is the success reply the transcripts' server sends.
	replyOK = []byte{0x05, 0x00, 0x00, 0x01, 192, 0, 2, 9, 0x10, 0xe1}
)

// alice is the user table the authenticated tests use.
var alice = Users{"alice": "secret"}

// cat concatenates frames into a new slice.
func cat(frames ...[]byte) []byte { return bytes.Join(frames, nil) }

// rw joins a reader and a writer into an io.ReadWriter.
type rw struct {
	io.Reader
	io.Writer
}

// tcpPair returns a connected pair of loopback TCP sockets, closed at the end
// of the test.
func tcpPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	// Safety net only: a broken test fails instead of hanging.
	deadline := time.Now().Add(10 * time.Second)
	client.SetDeadline(deadline)
	server.SetDeadline(deadline)
	return client, server
}

// errorIs reports whether err matches want, where a nil want means no error.
func errorIs(err, want error) bool {
	if want == nil {
		return err == nil
	}
	return errors.Is(err, want)
}
