package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"sluice/handshake"
)

// TestUDPIdleDuringLookup: the idle timeout ends an association whose
// client loop waits on a name lookup that does not answer (it used to wait
// out --dial-timeout). Nothing else can end that lookup here: its DNS
// server never answers, the resolver's own timeout per query is disarmed
// (its connection ignores deadlines), and --dial-timeout is an hour. So the
// association, once its lookup is seen under way, ends only if the idle
// timeout cancels the lookup; the control connection's safety net (20 s)
// fails the test otherwise.
func TestUDPIdleDuringLookup(t *testing.T) {
	t.Parallel()
	asked := make(chan string, 16) // the names queried
	r := silentResolver(t, asked)
	var log syncBuffer
	addr, _ := startSluiceResolver(t, r, &log, "--udp-idle-timeout", "200ms", "--dial-timeout", "1h")
	// An association may idle out before its client loop reads the
	// datagram (a loaded machine): nothing was tested, and a new one, with
	// a name of its own, tries again.
	for try := 1; ; try++ {
		name := fmt.Sprintf("silent%d.example", try)
		c, relayAddr := associateUDP(t, addr)
		closed := make(chan error, 1)
		go func() { _, err := c.Read(make([]byte, 1)); closed <- err }()
		u := udpClient(t, "127.0.0.1", relayAddr)
		if _, err := u.Write(append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{
			Addr: handshake.Addr{Type: handshake.AddrDomain, Name: []byte(name), Port: 9}}), "payload"...)); err != nil {
			t.Fatal(err)
		}
		if !waitQuery(asked, name, closed) {
			if try == 5 {
				t.Fatal("5 associations in a row idled out before their datagram's lookup began")
			}
			continue
		}
		// The lookup is under way, and only the association's end stops it.
		if err := <-closed; err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("control connection during a lookup that nothing answers: %v; want it closed by the idle timeout", err)
		}
		return
	}
}

// waitQuery waits for a query of name on asked, and reports whether it
// came before the control connection closed (on closed, which it then
// refills).
func waitQuery(asked <-chan string, name string, closed chan error) bool {
	for {
		select {
		case q := <-asked:
			if strings.HasPrefix(q, name+".") {
				return true
			}
		case err := <-closed:
			closed <- err
			return false
		}
	}
}

// queryName returns the name of a DNS query's first question, as
// "a.b.", or "" when m is too short for one.
func queryName(m []byte) string {
	var b strings.Builder
	for i := 12; i < len(m) && m[i] != 0; i += 1 + int(m[i]) {
		if i+1+int(m[i]) > len(m) {
			return ""
		}
		b.Write(m[i+1 : i+1+int(m[i])])
		b.WriteByte('.')
	}
	return b.String()
}

// noDeadlines is a resolver's connection that ignores the deadlines the
// resolver sets, so that its timeout per query never fires: a read ends
// when the connection is closed, and the lookup when its context ends.
type noDeadlines struct{ *net.UDPConn }

func (noDeadlines) SetDeadline(time.Time) error      { return nil }
func (noDeadlines) SetReadDeadline(time.Time) error  { return nil }
func (noDeadlines) SetWriteDeadline(time.Time) error { return nil }

// silentResolver returns a pure-Go resolver whose DNS server reads each
// query, sends its name to asked (unless asked is full) and never answers;
// the resolver's own timeout per query is disarmed (its connections ignore
// deadlines), so a lookup ends only when its context does. The exchanges
// still blocked end when the test does.
func silentResolver(t *testing.T, asked chan<- string) *net.Resolver {
	t.Helper()
	dns := dnsServer(t, func(pc net.PacketConn) {
		b := make([]byte, 1500)
		for {
			n, _, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			select {
			case asked <- queryName(b[:n]):
			default:
			}
		}
	})
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "udp", dns)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, c)
		return noDeadlines{c.(*net.UDPConn)}, nil
	}}
}
