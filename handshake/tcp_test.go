package handshake

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"testing/iotest"
)

// TestNegotiateTCP runs the exchange over loopback TCP with a client that
// writes one byte per segment (TCP_NODELAY) and waits for each answer, with
// the server reading the socket directly or one byte per Read; and with a
// client that pipelines everything in one write.
func TestNegotiateTCP(t *testing.T) {
	payload := []byte("pipelined payload")
	frames := [][]byte{greetBoth, authAlice, reqDomain}
	answers := [][]byte{{5, 2}, {1, 0}, replyOK}
	for _, tt := range []struct {
		name      string
		bytewise  bool
		oneByteRd bool
	}{
		{"bytewise", true, false},
		{"bytewise-one-byte-reads", true, true},
		{"pipelined", false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client, server := tcpPair(t)
			done := make(chan error, 1)
			go tcpClient(client, frames, answers, payload, tt.bytewise, done)
			var r io.Reader = server
			if tt.oneByteRd {
				r = iotest.OneByteReader(server)
			}
			b := GetBuffer()
			defer b.Release()
			req, err := Negotiate(rw{r, server}, b, &Config{Credentials: alice})
			if err != nil || req.Addr.String() != "example.com:80" || string(req.User) != "alice" {
				t.Fatalf("Negotiate = %v user %q, %v; want example.com:80 user alice", req.Addr, req.User, err)
			}
			if err := WriteReply(server, Succeeded, netip.MustParseAddrPort("192.0.2.9:4321")); err != nil {
				t.Fatal(err)
			}
			left, err := io.ReadAll(server)
			if got := cat(req.Rest, left); err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("Rest %q + read %q, %v; want %q", req.Rest, left, err, payload)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// tcpClient speaks the client side for TestNegotiateTCP: frames, each
// followed by its answer, then the payload and a half-close. Byte-wise, it
// writes every byte on its own and waits for each answer before going on;
// otherwise it writes everything at once and reads all answers after.
func tcpClient(c *net.TCPConn, frames, answers [][]byte, payload []byte, bytewise bool, done chan<- error) {
	done <- func() error {
		if err := c.SetNoDelay(true); err != nil {
			return err
		}
		if !bytewise {
			if _, err := c.Write(cat(cat(frames...), payload)); err != nil {
				return err
			}
			return readAnswers(c, cat(answers...), c.CloseWrite())
		}
		for i, f := range frames {
			if err := writeBytewise(c, f); err != nil {
				return err
			}
			if err := readAnswers(c, answers[i], nil); err != nil {
				return err
			}
		}
		if err := writeBytewise(c, payload); err != nil {
			return err
		}
		return c.CloseWrite()
	}()
}

func writeBytewise(c *net.TCPConn, b []byte) error {
	for i := range b {
		if _, err := c.Write(b[i : i+1]); err != nil {
			return err
		}
	}
	return nil
}

func readAnswers(c *net.TCPConn, want []byte, err error) error {
	if err != nil {
		return err
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return errors.New("client got " + string(got) + "; want " + string(want))
	}
	return nil
}
