package relay

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"sluice/tune/netnstest"
)

// TestDatagramsHaltBlockedSend: an association ends (ctx, idle timeout)
// while its client loop waits for the upstream socket to become writable,
// on a path that has stalled. Datagrams must return anyway: halt used to
// set only read deadlines, so it waited for the path, for minutes here.
func TestDatagramsHaltBlockedSend(t *testing.T) {
	netnstest.Need(t)
	needTC(t)
	t.Parallel()
	ns, src, dst := stalledPath(t)
	// One after the other: waitSendBlocked cannot tell whose send waits.
	t.Run("cancel", func(t *testing.T) { haltBlockedSend(t, ns, src, dst, 0) })
	t.Run("idle", func(t *testing.T) { haltBlockedSend(t, ns, src, dst, 500*time.Millisecond) })
}

// stalledPath makes a path on which UDP sends block: loopback never
// stalls a send (the receiver drops instead), so a veth pair between two
// namespaces, shaped by tbf to 1 byte/s. It returns the sending namespace,
// the address to bind there, and a destination across the link.
func stalledPath(t *testing.T) (ns string, src, dst netip.AddrPort) {
	nsU, nsT, vethU, vethT := netnstest.Veth(t, "uh", "ut")
	netnstest.IP(t, "-n", nsU, "addr", "add", "10.251.0.1/30", "dev", vethU)
	netnstest.IP(t, "-n", nsT, "addr", "add", "10.251.0.2/30", "dev", vethT)
	// No ARP: a request would wait in the stalled qdisc, and the kernel
	// would free the datagrams queued behind it when resolution timed out.
	netnstest.IP(t, "-n", nsU, "link", "set", vethU, "arp", "off")
	netnstest.IP(t, "-n", nsU, "link", "set", vethU, "up")
	netnstest.IP(t, "-n", nsT, "link", "set", vethT, "up")
	// 8 bit/s, a burst of 256 bytes (tbf's bucket spans at most ~270 s of
	// its rate), and a queue far longer than a send buffer, so that it
	// holds datagrams (and their charge to the sender) instead of dropping.
	runTC(t, "-n", nsU, "qdisc", "add", "dev", vethU, "root", "tbf", "rate", "8bit", "burst", "256", "limit", "100000")
	return nsU, netip.MustParseAddrPort("10.251.0.1:0"), netip.MustParseAddrPort("10.251.0.2:9")
}

// haltBlockedSend floods an association whose upstream socket, in ns with
// the smallest send buffer, sends on the stalled path: a few datagrams fill
// the buffer and the next send waits in the poller. Once one does, the
// association is ended by a cancel (idle 0) or its idle timeout, and
// Datagrams must return within 5s.
func haltBlockedSend(t *testing.T, ns string, src, dst netip.AddrPort, idle time.Duration) {
	var up *net.UDPConn
	netnstest.In(t, ns, func() (err error) { up, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(src)); return err })
	t.Cleanup(func() { up.Close() })
	if err := up.SetWriteBuffer(1); err != nil { // raised to the kernel's minimum
		t.Fatal(err)
	}
	client, relayClient := udpSocket(t, "127.0.0.1:0"), udpSocket(t, "127.0.0.1:0")
	relayClient.SetDeadline(time.Time{})
	r := New(Options{})
	defer r.Close()
	a := &Association{Client: relayClient, Upstream: up, From: netip.MustParseAddrPort("127.0.0.1:0"),
		Codec: addrCodec{}, IdleTimeout: idle}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		st  DatagramStats
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := r.Datagrams(ctx, a)
		done <- result{st, err}
	}()
	stop := make(chan struct{})
	defer close(stop)
	go flood(client, localAP(relayClient), append(header(dst), make([]byte, 64)...), stop)

	waitSendBlocked(t, done)
	if idle == 0 { // else the idle timeout ends it: nothing moves while the send waits
		cancel()
	}
	var res result
	select {
	case res = <-done:
	case <-time.After(5 * time.Second):
		up.Close() // wakes the send halt left waiting, so that Datagrams returns
		<-done
		t.Fatal("Datagrams still running 5s after its end, with a send waiting on the stalled upstream socket")
	}
	if idle == 0 && res.err != nil || idle != 0 && !IsIdle(res.err) {
		t.Fatalf("err = %v, want a normal end (idle timeout %v)", res.err, idle)
	}
	// What the halted send held is dropped, and taken out of the relayed
	// counts, the live ones too.
	if fc, _, fb, _ := r.RelayedDatagrams(); res.st.Dropped[DropSendFailed] == 0 || fc != res.st.FromClient || fb != res.st.FromClientBytes {
		t.Errorf("stats %+v, live counts %d datagrams, %d bytes: want send_failed > 0 and live counts equal to the final ones", res.st, fc, fb)
	}
}

// needTC skips, as netnstest.Need does (failing instead with
// SLUICE_REQUIRE_NETNS=1), a test that needs tc (iproute2) to shape a link.
func needTC(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("tc"); err == nil {
		return
	}
	const why = "needs tc (iproute2) to shape a link"
	if os.Getenv("SLUICE_REQUIRE_NETNS") == "1" {
		t.Fatal(why + " (SLUICE_REQUIRE_NETNS=1)")
	}
	t.Skip(why)
}

// runTC runs tc with args and fails the test on error.
func runTC(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("tc", args...).CombinedOutput(); err != nil {
		t.Fatalf("tc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// flood sends msg from c to dst until stop is closed or a send fails (the
// test has ended and closed c).
func flood(c *net.UDPConn, dst netip.AddrPort, msg []byte, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		if _, err := c.WriteToUDPAddrPort(msg, dst); err != nil {
			return
		}
	}
}

// waitSendBlocked waits until a client loop waits in the poller for a
// socket to become writable inside sender.flush (loopback sends never
// wait, so it is the stalled upstream's), and fails the test if the
// association ends first or no send blocks within 10s.
func waitSendBlocked[T any](t *testing.T, done <-chan T) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "[IO wait") && strings.Contains(g, "relay.(*sender).flush") && strings.Contains(g, "clientToUpstream") {
				return
			}
		}
		select {
		case <-done:
			t.Fatal("the association ended before a send blocked")
		case <-time.After(time.Millisecond):
		}
	}
	t.Fatal("no send blocked within 10s on the stalled upstream socket")
}
