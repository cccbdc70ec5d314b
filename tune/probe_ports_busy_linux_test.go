package tune

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"

	"sluice/tune/netnstest"
)

// TestProbeSourceAddrPortsBusy: while every port of
// net.ipv4.ip_local_port_range on --source-addr is in use (TIME_WAITs after
// a burst, as README's --source-ports describes, or connections), Probe
// must keep the address, since a dial from it, which binds with
// IP_BIND_ADDRESS_NO_PORT and leaves the port to connect, still works. The
// probe bound it with port 0, which reserves a port: EADDRINUSE, one
// warning, and the address dropped for the life of the process, whose
// dials then left from the kernel's choice of address (a sluice started
// during a zero-downtime restart under load). In a network namespace whose
// port range is two ports, both held by connections from 127.0.0.1.
func TestProbeSourceAddrPortsBusy(t *testing.T) {
	ns := portsBusyNetns(t, "pp")
	netnstest.In(t, ns, func() error {
		l1, err := net.Listen("tcp4", "127.0.0.1:5000")
		if err != nil {
			return err
		}
		defer l1.Close()
		l2, err := net.Listen("tcp4", "127.0.0.1:5001")
		if err != nil {
			return err
		}
		defer l2.Close()
		// Both ephemeral ports of 127.0.0.1 in use by connections.
		for range 2 {
			c, err := net.Dial("tcp4", "127.0.0.1:5000")
			if err != nil {
				return err
			}
			defer c.Close()
		}
		src := netip.MustParseAddr("127.0.0.1")
		o := Options{SourceAddr: src}
		// The dial from --source-addr works: connect picks a port by the
		// whole 4-tuple.
		fd, err := o.DialFd(context.Background(), netip.MustParseAddrPort("127.0.0.1:5001"))
		if err != nil {
			t.Fatalf("DialFd from %v with every port busy toward another target: %v", src, err)
		}
		unix.Close(fd)
		probed, warnings := o.Probe()
		if probed.SourceAddr != src || len(warnings) != 0 {
			t.Errorf("Probe with --source-addr %v: kept %v, warnings %v; want it kept, no warning (the dial from it works)", src, probed.SourceAddr, warnings)
		}
		return nil
	})
}

// TestProbeSmartAcceptPortsBusy: the same for --smart-accept (on by
// default) and --backlog, which Probe tries on a socket bound to 127.0.0.1
// port 0 and listening: with every ephemeral port of loopback in use, that
// bind fails, which says nothing of the options (the listeners sluice opens
// on their own ports take them), and Probe turned them off.
func TestProbeSmartAcceptPortsBusy(t *testing.T) {
	ns := portsBusyNetns(t, "pq")
	netnstest.In(t, ns, func() error {
		l1, err := net.Listen("tcp4", "127.0.0.1:5000")
		if err != nil {
			return err
		}
		defer l1.Close()
		for range 2 {
			c, err := net.Dial("tcp4", "127.0.0.1:5000")
			if err != nil {
				return err
			}
			defer c.Close()
		}
		o := Options{SmartAccept: true, Backlog: 16}
		ls, err := o.Listen(context.Background(), "127.0.0.1:1080")
		if err != nil {
			t.Fatalf("Listen with --smart-accept --backlog 16 and every ephemeral port busy: %v", err)
		}
		for _, l := range ls {
			l.Close()
		}
		probed, warnings := o.Probe()
		if !probed.SmartAccept || probed.Backlog != 16 || len(warnings) != 0 {
			t.Errorf("Probe: smart accept %v, backlog %d, warnings %v; want both kept, no warning (Listen applies them)", probed.SmartAccept, probed.Backlog, warnings)
		}
		return nil
	})
}

// portsBusyNetns makes a network namespace with loopback up and an
// ephemeral port range of two ports, removed when the test ends.
func portsBusyNetns(t *testing.T, name string) string {
	t.Helper()
	netnstest.Need(t)
	ns := fmt.Sprintf("sluice-%s%d", name, os.Getpid()%100000)
	netnstest.IP(t, "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	netnstest.IP(t, "-n", ns, "link", "set", "lo", "up")
	if out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-w", "net.ipv4.ip_local_port_range=40000 40001").CombinedOutput(); err != nil {
		t.Fatalf("sysctl: %v\n%s", err, out)
	}
	return ns
}
