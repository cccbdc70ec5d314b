package relay

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// TestDatagramsClientPortFromAccepted: with the client's port unknown
// (From's port 0), a datagram from the client's IP that the codec drops
// (a short header, a fragment) does not fix the client's port: the first
// one it accepts does, from another port here, and the port of the
// dropped ones is a stranger's from then on. Their port used to be fixed
// by the first datagram whatever it was, and the client's own datagrams
// were dropped as a stranger's.
func TestDatagramsClientPortFromAccepted(t *testing.T) {
	t.Parallel()
	g := startAssociation(t, 0) // g.client sends first, garbage
	mine := udpSocket(t, "127.0.0.1:0")
	relayAddr := localAP(g.relayClient)
	for _, b := range [][]byte{{1, 2}, {0xff, 0, 0, 0, 0, 0, 'f'}} {
		if _, err := g.client.WriteToUDPAddrPort(b, relayAddr); err != nil {
			t.Fatal(err)
		}
	}
	// In order on loopback, and read by one loop: the garbage is handled
	// first, then mine's datagram, then g.client's well-formed one.
	if _, err := mine.WriteToUDPAddrPort(append(header(localAP(g.target)), "mine"...), relayAddr); err != nil {
		t.Fatal(err)
	}
	if _, err := g.client.WriteToUDPAddrPort(append(header(localAP(g.target)), "garbage's port"...), relayAddr); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n, from, err := g.target.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "mine" {
		t.Fatalf("the target's first datagram: %q (%v), want %q: the port of the dropped garbage was taken for the client's", buf[:n], err, "mine")
	}
	if _, err := g.target.WriteToUDPAddrPort([]byte("reply"), from); err != nil {
		t.Fatal(err)
	}
	n, err = mine.Read(buf)
	if want := append(header(localAP(g.target)), "reply"...); err != nil || string(buf[:n]) != string(want) {
		t.Fatalf("the accepted port got %x (%v), want the reply %x", buf[:n], err, want)
	}
	g.cancel()
	<-g.done
	want := [NumDrops]int64{DropMalformed: 1, DropFragment: 1, DropStranger: 1}
	if g.stats.Dropped != want || g.stats.FromClient != 1 || g.stats.ToClient != 1 {
		t.Errorf("stats %+v: want one datagram each way, dropped %v", g.stats, want)
	}
}

// TestDatagramsNoAbortAfterReturn: an abort by the idle watchdog or by the
// end of ctx that is under way when the association ends on its own (here
// a socket that fails) must do nothing once Datagrams has returned: the
// sockets are the caller's again, and a past deadline set on them then
// would fail whatever the caller does with them next (abort used to halt
// regardless, and the watchdog to re-arm after its timer was stopped). The
// hook holds the abort at its start until Datagrams has returned.
// Not parallel: it sets a package hook.
func TestDatagramsNoAbortAfterReturn(t *testing.T) {
	for _, tc := range []struct {
		name string
		idle bool
	}{{"idle", true}, {"context", false}} {
		t.Run(tc.name, func(t *testing.T) {
			entered, release, after := make(chan struct{}), make(chan struct{}), make(chan struct{})
			testHookDatagramAbort = func(idle bool) func() {
				if idle != tc.idle {
					return func() {}
				}
				close(entered) // once: each cause aborts once at most
				<-release
				return func() { close(after) }
			}
			defer func() { testHookDatagramAbort = nil }()

			r := New(Options{})
			defer r.Close()
			a := &Association{Client: udpSocket(t, "127.0.0.1:0"), Upstream: udpSocket(t, "127.0.0.1:0"),
				From: netip.MustParseAddrPort("127.0.0.1:0"), Codec: addrCodec{}}
			if tc.idle {
				a.IdleTimeout = time.Nanosecond // the fifth look finds nothing moved
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := r.Datagrams(ctx, a)
				done <- err
			}()
			if !tc.idle {
				cancel()
			}
			<-entered
			a.Client.Close() // ends the association on its own
			if err := <-done; err == nil || IsIdle(err) {
				t.Fatalf("Datagrams: %v; want the closed socket's error, which ended it first", err)
			}
			// The caller takes the upstream socket back, then the late
			// abort runs.
			a.Upstream.SetDeadline(time.Time{})
			close(release)
			<-after
			sender := udpSocket(t, "127.0.0.1:0")
			if _, err := sender.WriteToUDPAddrPort([]byte("x"), localAP(a.Upstream)); err != nil {
				t.Fatal(err)
			}
			got := make(chan error, 1)
			go func() {
				_, _, err := a.Upstream.ReadFromUDPAddrPort(make([]byte, 16))
				got <- err
			}()
			select {
			case err := <-got:
				if err != nil {
					t.Errorf("read of the upstream socket after Datagrams returned and the late abort ran: %v; want the datagram (no deadline set)", err)
				}
			case <-time.After(10 * time.Second): // safety net only
				t.Fatal("no datagram on the upstream socket after 10s")
			}
		})
	}
}
