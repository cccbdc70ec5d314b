package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"sluice/tune/netnstest"
)

// TestListenNameNoIPv6 is the case the skip of TestListenNameSkipsMissing
// is for, on a real kernel: a network namespace with IPv6 turned off
// (disable_ipv6, as on hosts that turn it off but keep "::1 localhost" in
// /etc/hosts), where a name that resolves to ::1 and 127.0.0.1 must listen
// on 127.0.0.1 with one warning for ::1 instead of failing to start.
func TestListenNameNoIPv6(t *testing.T) {
	netnstest.Need(t)
	t.Parallel()
	ns := loopbackNetns(t, "v4only", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 > /proc/sys/net/ipv6/conf/lo/disable_ipv6")
	inst, log := startNamedIn(t, ns)
	addrs := inst.addrs()
	if len(addrs) != 1 || !strings.HasPrefix(addrs[0], "127.0.0.1:") {
		t.Fatalf("listening on %q, want 127.0.0.1 only\n%s", addrs, log.String())
	}
	if n := strings.Count(log.String(), "level=WARN"); n != 1 || !strings.Contains(log.String(), "addr=[::1]:") {
		t.Errorf("want one warning naming [::1]:\n%s", log.String())
	}
	var c net.Conn
	netnstest.In(t, ns, func() (err error) { c, err = net.Dial("tcp", addrs[0]); return err })
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	mustWrite(t, c, []byte{5, 1, 0})
	expect(t, c, []byte{5, 0})
}

// TestListenNamePortClash: given port 0, a host name whose first address
// (::1) got a port that its second (127.0.0.1) has in use still starts, on
// one other port for both. In a namespace whose ephemeral range is 39999
// and 40000, the kernel offers bind 40000 first (bind prefers the parity
// connect does not), and the test holds 127.0.0.1:40000.
func TestListenNamePortClash(t *testing.T) {
	netnstest.Need(t)
	t.Parallel()
	ns := loopbackNetns(t, "clash", "echo 39999 40000 > /proc/sys/net/ipv4/ip_local_port_range")
	var taken net.Listener
	netnstest.In(t, ns, func() (err error) { taken, err = net.Listen("tcp4", "127.0.0.1:40000"); return err })
	defer taken.Close()

	inst, log := startNamedIn(t, ns)
	want := []string{"[::1]:39999", "127.0.0.1:39999"}
	if addrs := inst.addrs(); !slices.Equal(addrs, want) {
		t.Fatalf("listening on %q, want %q\n%s", addrs, want, log.String())
	}
	if n := strings.Count(log.String(), `msg="sluice listening"`); n != 2 {
		t.Errorf("%d listening lines, want 2:\n%s", n, log.String())
	}
	// The port given up on is let go, and the one kept serves (clients
	// need ports of their own: the range is widened).
	netnsSh(t, ns, "echo 39999 40999 > /proc/sys/net/ipv4/ip_local_port_range")
	netnstest.In(t, ns, func() error {
		l, err := net.Listen("tcp6", "[::1]:40000")
		if err != nil {
			return fmt.Errorf("[::1]:40000 still held: %w", err)
		}
		return l.Close()
	})
	for _, a := range want {
		var c net.Conn
		netnstest.In(t, ns, func() (err error) { c, err = net.Dial("tcp", a); return err })
		c.SetDeadline(time.Now().Add(5 * time.Second))
		mustWrite(t, c, []byte{5, 1, 0})
		expect(t, c, []byte{5, 0})
		c.Close()
	}
}

// loopbackNetns makes a network namespace named after name, with its
// loopback up and sh script run in it, and removes it when the test ends.
func loopbackNetns(t *testing.T, name, script string) string {
	t.Helper()
	ns := fmt.Sprintf("sluice-%s%d", name, os.Getpid()%100000)
	netnstest.IP(t, "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	netnstest.IP(t, "-n", ns, "link", "set", "lo", "up")
	netnsSh(t, ns, script)
	return ns
}

// netnsSh runs sh script in network namespace ns.
func netnsSh(t *testing.T, ns, script string) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "exec", ns, "sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("in %s, %s: %v\n%s", ns, script, err, out)
	}
}

// startNamedIn starts sluice in network namespace ns with --listen
// relay.test:0, a name that resolves to 127.0.0.1 and ::1, and returns it
// with its log.
func startNamedIn(t *testing.T, ns string) (*instance, *syncBuffer) {
	t.Helper()
	cfg, err := parseFlags([]string{"--listeners", "1", "--listen", "relay.test:0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// The lookups run on goroutines of their own, in this process's
	// namespace, where the test's DNS server is.
	cfg.resolver = dualResolver(t, netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback())
	log := new(syncBuffer)
	var inst *instance
	netnstest.In(t, ns, func() (err error) {
		inst, err = start(context.Background(), cfg, slog.New(slog.NewTextHandler(log, nil)))
		return err
	})
	t.Cleanup(func() { inst.shutdown(5 * time.Second) })
	return inst, log
}
