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
	ns := fmt.Sprintf("sluice-v4only%d", os.Getpid()%100000)
	netnstest.IP(t, "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	netnstest.IP(t, "-n", ns, "link", "set", "lo", "up")
	off := "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 > /proc/sys/net/ipv6/conf/lo/disable_ipv6"
	if out, err := exec.Command("ip", "netns", "exec", ns, "sh", "-c", off).CombinedOutput(); err != nil {
		t.Fatalf("turning IPv6 off in %s: %v\n%s", ns, err, out)
	}

	cfg, err := parseFlags([]string{"--listeners", "1", "--listen", "relay.test:0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// The lookups run on goroutines of their own, in this process's
	// namespace, where the test's DNS server is.
	cfg.resolver = dualResolver(t, netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback())
	var log syncBuffer
	var inst *instance
	netnstest.In(t, ns, func() (err error) {
		inst, err = start(context.Background(), cfg, slog.New(slog.NewTextHandler(&log, nil)))
		return err
	})
	t.Cleanup(func() { inst.shutdown(5 * time.Second) })
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
