package bench

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/tune"
)

// TestAllPorts: with Proxy.AllPorts connects take odd ports too, which the
// kernel's own search leaves to bind until the even ones run out, from the
// default source and from a --source address alike.
func TestAllPorts(t *testing.T) {
	t.Parallel()
	if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
		t.Fatal(err)
	} else {
		err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_LOCAL_PORT_RANGE, tune.AllPorts.Value())
		unix.Close(fd)
		if errors.Is(err, unix.ENOPROTOOPT) {
			t.Skip("kernel without IP_LOCAL_PORT_RANGE (Linux 6.3 and later have it)")
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0") // connects complete in the backlog
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	d, err := NewDialer(Proxy{AllPorts: true}, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]*Dialer{"default": d, "source": d.From(netip.MustParseAddr("127.0.0.1"))} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var ports []int
		for range 32 {
			c, err := d.Dial(ctx)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			ports = append(ports, c.LocalAddr().(*net.TCPAddr).Port)
			defer c.Close()
		}
		cancel()
		if !slices.ContainsFunc(ports, func(p int) bool { return p%2 == 1 }) {
			t.Errorf("%s: 32 connects took only even ports %v: IP_LOCAL_PORT_RANGE was not set, or this kernel (before 6.3) lacks it", name, ports)
		}
	}
}

// TestNoKeepAlive: the load's connections carry no keepalive, whose four
// setsockopt calls per connection would be a fifth of an rr client's system
// calls, direct and from a --source address alike, with TCP_NODELAY kept.
func TestNoKeepAlive(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	d, err := NewDialer(Proxy{}, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]*Dialer{"default": d, "source": d.From(netip.MustParseAddr("127.0.0.1"))} {
		c, err := d.Dial(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var keep, nodelay int
		var gerr error
		rc, _ := c.SyscallConn()
		if err := rc.Control(func(fd uintptr) {
			keep, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
			if gerr == nil {
				nodelay, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY)
			}
		}); err != nil || gerr != nil {
			t.Fatal(err, gerr)
		}
		c.Close()
		if keep != 0 || nodelay == 0 {
			t.Errorf("%s: SO_KEEPALIVE %d, TCP_NODELAY %d; want 0 and set", name, keep, nodelay)
		}
	}
}
