package relay

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// addrCodec is a test codec: a 6-byte header of IPv4 address and port,
// followed by the payload. A header starting with 0xff is a "fragment".
type addrCodec struct{}

func (addrCodec) Decode(_ context.Context, b []byte) (netip.AddrPort, []byte, Drop) {
	switch {
	case len(b) < 6:
		return netip.AddrPort{}, nil, DropMalformed
	case b[0] == 0xff:
		return netip.AddrPort{}, nil, DropFragment
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[:4])), uint16(b[4])<<8|uint16(b[5])), b[6:], Relayed
}

func (addrCodec) Headroom() int { return 6 }

func (addrCodec) Encode(b []byte, off int, src netip.AddrPort) int {
	a := src.Addr().As4()
	copy(b[off-6:], a[:])
	b[off-2], b[off-1] = byte(src.Port()>>8), byte(src.Port())
	return off - 6
}

func header(ap netip.AddrPort) []byte {
	a := ap.Addr().As4()
	return append(a[:], byte(ap.Port()>>8), byte(ap.Port()))
}

func udpSocket(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	u, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	u.SetDeadline(time.Now().Add(20 * time.Second)) // safety net only
	return u
}

func localAP(u *net.UDPConn) netip.AddrPort { return u.LocalAddr().(*net.UDPAddr).AddrPort() }

// udpRig is an association between a client socket and a target socket.
type udpRig struct {
	client, target, relayClient, relayUp *net.UDPConn
	done                                 chan struct{}
	stats                                DatagramStats
	err                                  error
	cancel                               context.CancelFunc
	r                                    *Relay
}

func startAssociation(t testing.TB, idle time.Duration) *udpRig {
	return startAssociationFilter(t, idle, FilterAddrPort)
}

func startAssociationFilter(t testing.TB, idle time.Duration, filter Filter) *udpRig {
	g := &udpRig{
		client:      udpSocket(t, "127.0.0.1:0"),
		target:      udpSocket(t, "127.0.0.1:0"),
		relayClient: udpSocket(t, "127.0.0.1:0"),
		relayUp:     udpSocket(t, "127.0.0.1:0"),
		done:        make(chan struct{}),
	}
	g.relayClient.SetDeadline(time.Time{})
	g.relayUp.SetDeadline(time.Time{})
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	r := New(Options{})
	g.r = r
	a := &Association{Client: g.relayClient, Upstream: g.relayUp, From: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 0), Codec: addrCodec{}, IdleTimeout: idle, Filter: filter}
	go func() {
		defer close(g.done)
		g.stats, g.err = r.Datagrams(ctx, a)
	}()
	t.Cleanup(func() { cancel(); <-g.done })
	return g
}

// send sends payload from the client to the target through the relay and
// checks it arrives intact; then the target answers and the client checks
// the reply's header names the target.
func (g *udpRig) exchange(t testing.TB, payload []byte, buf []byte) {
	msg := append(header(localAP(g.target)), payload...)
	if _, err := g.client.WriteToUDPAddrPort(msg, localAP(g.relayClient)); err != nil {
		t.Fatal(err)
	}
	n, from, err := g.target.ReadFromUDPAddrPort(buf)
	if err != nil || !bytes.Equal(buf[:n], payload) || from != localAP(g.relayUp) {
		t.Fatalf("target got %q from %v (%v), want %q from the relay's upstream socket", buf[:n], from, err, payload)
	}
	if _, err := g.target.WriteToUDPAddrPort(buf[:n], from); err != nil {
		t.Fatal(err)
	}
	n, _, err = g.client.ReadFromUDPAddrPort(buf)
	if err != nil || !bytes.Equal(buf[:n], append(header(localAP(g.target)), payload...)) {
		t.Fatalf("client got %x (%v), want header+payload", buf[:n], err)
	}
}

// counted checks that the relay's RelayedDatagrams reach want (polled,
// bounded: a batch is counted just after the kernel took it, which may be
// just after the far end read it).
func (g *udpRig) counted(t testing.TB, want [4]int64) {
	t.Helper()
	var got [4]int64
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); runtime.Gosched() {
		if got[0], got[1], got[2], got[3] = g.r.RelayedDatagrams(); got == want {
			return
		}
	}
	t.Errorf("RelayedDatagrams() = %v, want %v", got, want)
}

func TestDatagrams(t *testing.T) {
	t.Parallel()
	g := startAssociation(t, 0)
	buf := make([]byte, 70000)
	g.exchange(t, []byte("hello"), buf)
	g.counted(t, [4]int64{1, 1, 5, 5}) // counted while the association runs
	g.exchange(t, bytes.Repeat([]byte{7}, 1400), buf)

	// Dropped: a fragment, a short header, a stranger, and another port of
	// the client's IP once its first port is known.
	g.client.WriteToUDPAddrPort([]byte{0xff, 0, 0, 0, 0, 0, 'x'}, localAP(g.relayClient))
	g.client.WriteToUDPAddrPort([]byte{1, 2}, localAP(g.relayClient))
	stranger := udpSocket(t, "127.0.0.2:0")
	stranger.WriteToUDPAddrPort(append(header(localAP(g.target)), "stranger"...), localAP(g.relayClient))
	otherPort := udpSocket(t, "127.0.0.1:0")
	otherPort.WriteToUDPAddrPort(append(header(localAP(g.target)), "other"...), localAP(g.relayClient))
	// Refused by the kernel: port 0 (EINVAL), counted as a drop, not as
	// relayed.
	g.client.WriteToUDPAddrPort(append(header(netip.MustParseAddrPort("127.0.0.1:0")), "port 0"...), localAP(g.relayClient))
	g.exchange(t, []byte("still relayed"), buf)

	g.cancel()
	<-g.done
	if g.err != nil {
		t.Fatalf("Datagrams after cancel: %v, want nil", g.err)
	}
	st := g.stats
	if st.FromClient != 3 || st.ToClient != 3 || st.FromClientBytes != int64(5+1400+13) || st.ToClientBytes != st.FromClientBytes {
		t.Errorf("stats %+v: want 3 datagrams and %d bytes each way", st, 5+1400+13)
	}
	want := [NumDrops]int64{DropStranger: 2, DropFragment: 1, DropMalformed: 1, DropSendFailed: 1}
	if st.Dropped != want {
		t.Errorf("dropped %v, want %v", st.Dropped, want)
	}
	g.counted(t, [4]int64{3, 3, 5 + 1400 + 13, 5 + 1400 + 13}) // the refused one left out
}

// TestDatagramsIdle: an association ends by its idle timeout, and not
// before the timeout has passed since its last datagram, with datagrams
// every tenth of the timeout keeping it alive for several timeouts first.
// Every time taken is a lower bound: last is read before the datagram goes
// out (the relay sees it after), so a busy machine can only make took
// longer; and should this loop stall past the timeout, the association ends
// during it, rightly, and that end is held to the same bound. An
// association that did not count its datagrams ends within a tenth of the
// timeout of one.
func TestDatagramsIdle(t *testing.T) {
	t.Parallel()
	const idle = 200 * time.Millisecond
	g := startAssociation(t, idle)
	buf := make([]byte, 2048)
	var last time.Time
trickle:
	for end := time.Now().Add(3 * idle); time.Now().Before(end); {
		select {
		case <-g.done: // this loop stalled past the timeout
			break trickle
		default:
		}
		last = time.Now()
		g.exchange(t, []byte("one"), buf)
		select {
		case <-g.done:
			break trickle
		case <-time.After(idle / 10):
		}
	}
	select {
	case <-g.done:
	case <-time.After(10 * time.Second):
		t.Fatal("idle association still running after 10s")
	}
	took := time.Since(last)
	if !IsIdle(g.err) {
		t.Fatalf("err = %v, want the idle timeout", g.err)
	}
	if took < idle {
		t.Errorf("ended %v after the last datagram was sent, want at least %v", took, idle)
	}
	t.Logf("ended %v after the last datagram (idle timeout %v)", took, idle)
}

// TestDatagramsTinyIdle: an idle timeout so short that its timer fires
// before Datagrams has stored it still ends the association as idle (the
// timer's first run used to find no timer to re-arm, and panicked).
func TestDatagramsTinyIdle(t *testing.T) {
	t.Parallel()
	r := New(Options{})
	defer r.Close()
	from := netip.MustParseAddrPort("127.0.0.1:0")
	for i := range 300 {
		a := &Association{Client: udpSocket(t, "127.0.0.1:0"), Upstream: udpSocket(t, "127.0.0.1:0"), From: from,
			Codec: addrCodec{}, IdleTimeout: time.Duration(i%3 + 1)}
		if _, err := r.Datagrams(context.Background(), a); !IsIdle(err) {
			t.Fatalf("round %d, idle timeout %v: err = %v, want the idle timeout", i, a.IdleTimeout, err)
		}
		a.Client.Close()
		a.Upstream.Close()
	}
}

// TestDatagramsSocketFails: a socket that fails ends the association with
// its error, where a ctx that ends gives nil (TestDatagrams).
func TestDatagramsSocketFails(t *testing.T) {
	t.Parallel()
	g := startAssociation(t, 0)
	g.exchange(t, []byte("one"), make([]byte, 2048))
	g.relayClient.Close()
	select {
	case <-g.done:
	case <-time.After(10 * time.Second):
		t.Fatal("association still running 10s after its client socket closed")
	}
	if g.err == nil || !strings.Contains(g.err.Error(), "udp client->upstream") || !errors.Is(g.err, net.ErrClosed) {
		t.Fatalf("err = %v, want the client socket's read error", g.err)
	}
}

// TestDatagramsNoAlloc checks the steady path allocates nothing per
// datagram: a round trip through the relay, measured over the whole process.
func TestDatagramsNoAlloc(t *testing.T) {
	// Not parallel: AllocsPerRun counts every goroutine's allocations.
	if testing.Short() || raceEnabled {
		t.Skip("allocation counts need a quiet process without the race detector")
	}
	g := startAssociation(t, time.Minute)
	buf := make([]byte, 2048)
	msg := append(header(localAP(g.target)), make([]byte, 512)...)
	relayAddr, up := localAP(g.relayClient), localAP(g.relayUp)
	round := func() {
		g.client.WriteToUDPAddrPort(msg, relayAddr)
		n, _, _ := g.target.ReadFromUDPAddrPort(buf)
		g.target.WriteToUDPAddrPort(buf[:n], up)
		g.client.ReadFromUDPAddrPort(buf)
	}
	round() // the first datagram stores the client's address
	runtime.GC()
	if allocs := testing.AllocsPerRun(500, round); allocs != 0 {
		t.Fatalf("%v allocs per round trip, want 0", allocs)
	}
}

// BenchmarkDatagrams measures round trips of 512-byte datagrams through an
// association.
func BenchmarkDatagrams(b *testing.B) {
	g := startAssociation(b, time.Minute)
	buf := make([]byte, 2048)
	msg := append(header(localAP(g.target)), make([]byte, 512)...)
	relayAddr, up := localAP(g.relayClient), localAP(g.relayUp)
	b.ReportAllocs()
	b.SetBytes(2 * 512)
	for b.Loop() {
		g.client.WriteToUDPAddrPort(msg, relayAddr)
		n, _, _ := g.target.ReadFromUDPAddrPort(buf)
		g.target.WriteToUDPAddrPort(buf[:n], up)
		g.client.ReadFromUDPAddrPort(buf)
	}
}

// TestDatagramFilter: what reaches the upstream socket from sources other
// than the destination the client sent to (another port of its address,
// another address) gets to the client as each Filter says, and the rest
// is dropped as unsolicited. The target's own datagram, sent last, marks
// the end: loopback keeps their order.
func TestDatagramFilter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		filter Filter
		want   []string
	}{
		{FilterAddrPort, []string{"target"}},
		{FilterAddr, []string{"sideport", "target"}},
		{FilterNone, []string{"sideport", "stranger", "target"}},
	} {
		g := startAssociationFilter(t, 0, tc.filter)
		buf := make([]byte, 70000)
		g.exchange(t, []byte("hello"), buf)
		sideport := udpSocket(t, "127.0.0.1:0")
		stranger := udpSocket(t, "127.0.0.2:0")
		for _, s := range []struct {
			c   *net.UDPConn
			msg string
		}{{sideport, "sideport"}, {stranger, "stranger"}, {g.target, "target"}} {
			if _, err := s.c.WriteToUDPAddrPort([]byte(s.msg), localAP(g.relayUp)); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		for len(got) == 0 || got[len(got)-1] != "target" {
			n, _, err := g.client.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("filter %d: client read after %q: %v", tc.filter, got, err)
			}
			got = append(got, string(buf[6:n]))
		}
		g.cancel()
		<-g.done
		if !slices.Equal(got, tc.want) {
			t.Errorf("filter %d: the client got %q, want %q", tc.filter, got, tc.want)
		}
		if d, want := g.stats.Dropped[DropUnsolicited], int64(3-len(tc.want)); d != want {
			t.Errorf("filter %d: %d dropped as unsolicited, want %d", tc.filter, d, want)
		}
	}
}

// waitCodec is addrCodec whose Decode waits for its ctx to end, as a name
// lookup that gets no answer does, and counts the waits that ended.
type waitCodec struct {
	addrCodec
	ended chan struct{}
}

func (c waitCodec) Decode(ctx context.Context, _ []byte) (netip.AddrPort, []byte, Drop) {
	<-ctx.Done()
	close(c.ended)
	return netip.AddrPort{}, nil, DropUnresolved
}

// TestDatagramsIdleEndsDecode: the idle timeout ends an association whose
// client loop waits in Decode, by ending Decode's ctx (the idle timeout
// used to set only the sockets' deadlines, which a Decode does not see).
func TestDatagramsIdleEndsDecode(t *testing.T) {
	t.Parallel()
	r := New(Options{})
	defer r.Close()
	client, relayClient := udpSocket(t, "127.0.0.1:0"), udpSocket(t, "127.0.0.1:0")
	codec := waitCodec{ended: make(chan struct{})}
	a := &Association{Client: relayClient, Upstream: udpSocket(t, "127.0.0.1:0"),
		From: netip.MustParseAddrPort("127.0.0.1:0"), Codec: codec, IdleTimeout: 50 * time.Millisecond}
	relayClient.SetDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := r.Datagrams(context.Background(), a)
		done <- err
	}()
	if _, err := client.WriteToUDPAddrPort(append(header(localAP(client)), "x"...), localAP(relayClient)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !IsIdle(err) {
			t.Fatalf("err = %v, want the idle timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("association waiting in Decode still running 10s after its 50ms idle timeout")
	}
	<-codec.ended
}
