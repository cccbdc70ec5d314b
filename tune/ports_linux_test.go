package tune

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// systemPorts skips t on a kernel without IP_LOCAL_PORT_RANGE and returns
// net.ipv4.ip_local_port_range.
func systemPorts(t *testing.T) (lo, hi uint16) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := setOpt(fd, optSourcePorts, &Options{SourcePorts: AllPorts}, nil); errors.Is(err, unix.ENOPROTOOPT) {
		t.Skip("kernel without IP_LOCAL_PORT_RANGE (Linux 6.3 and later have it)")
	} else if err != nil {
		t.Fatal(err)
	}
	if lo, hi, err = systemPortRange(); err != nil {
		t.Fatal(err)
	}
	if hi-lo < 1000 {
		t.Skipf("net.ipv4.ip_local_port_range %d-%d: this test needs 1,000 ports", lo, hi)
	}
	return lo, hi
}

// portDialers dial with DialFd and with Dialer, each returning the socket
// (closed at cleanup) and its local port.
var portDialers = []struct {
	name string
	dial func(t *testing.T, o *Options, addr netip.AddrPort) (syscall.Conn, uint16)
}{
	{"DialFd", func(t *testing.T, o *Options, addr netip.AddrPort) (syscall.Conn, uint16) {
		fd, err := dialFd(o, addr)
		if err != nil {
			t.Fatalf("DialFd: %v", err)
		}
		file(t, fd)
		return fdSock(fd), sockAddr(t, fd, false).Port()
	}},
	{"Dialer", func(t *testing.T, o *Options, addr netip.AddrPort) (syscall.Conn, uint16) {
		ctx, cancel := context.WithTimeout(context.Background(), safety)
		defer cancel()
		c, err := o.Dialer().DialContext(ctx, "tcp", addr.String())
		if err != nil {
			t.Fatalf("Dialer: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.TCPConn), c.LocalAddr().(*net.TCPAddr).AddrPort().Port()
	}},
}

// TestSourcePorts: a range keeps connect's ports inside it, and AllPorts
// lets connect pick odd ports, which without a range it takes only once the
// even ones are used up.
func TestSourcePorts(t *testing.T) {
	t.Parallel()
	lo, hi := systemPorts(t)
	narrow := PortRange{lo + 100, lo + 163}
	for _, d := range portDialers {
		for _, host := range []string{"127.0.0.1", "::1"} {
			t.Run(d.name+"/"+host, func(t *testing.T) {
				t.Parallel()
				l, err := net.Listen("tcp", net.JoinHostPort(host, "0")) // connects complete in the backlog
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
				addr := l.Addr().(*net.TCPAddr).AddrPort()

				o := &Options{SourcePorts: narrow}
				for i := range 8 {
					c, port := d.dial(t, o, addr)
					if port < narrow.Low || port > narrow.High {
						t.Errorf("with %v: local port %d", narrow, port)
					}
					if i == 0 {
						want := int(int32(uint32(narrow.High)<<16 | uint32(narrow.Low)))
						if got := getInt(t, c, unix.IPPROTO_IP, unix.IP_LOCAL_PORT_RANGE); got != want {
							t.Errorf("IP_LOCAL_PORT_RANGE = %#x, want %#x", got, want)
						}
					}
				}

				o = &Options{SourcePorts: AllPorts}
				var ports []uint16
				for range 32 {
					_, port := d.dial(t, o, addr)
					if port < lo || port > hi {
						t.Errorf("with AllPorts: local port %d outside %d-%d", port, lo, hi)
					}
					ports = append(ports, port)
				}
				if !slices.ContainsFunc(ports, func(p uint16) bool { return p%2 == 1 }) {
					t.Errorf("with AllPorts 32 connects took only even ports %v: the kernel searched as without a range", ports)
				}
			})
		}
	}
}

// TestProbeSourcePorts: a range beyond net.ipv4.ip_local_port_range is
// kept and reported as clamped; one inside it and AllPorts are silent.
func TestProbeSourcePorts(t *testing.T) {
	t.Parallel()
	lo, hi := systemPorts(t)
	for _, r := range []PortRange{AllPorts, {lo, hi}, {lo + 10, lo + 20}} {
		in := Options{SourcePorts: r}
		if got, errs := in.Probe(); len(errs) != 0 || got != in {
			t.Errorf("Probe(%v) = %+v, %v; want it unchanged and silent", r, got, errs)
		}
	}
	outside := []PortRange{{1, lo}, {lo - 1, hi}}
	if hi < 65535 {
		outside = append(outside, PortRange{lo, hi + 1})
	}
	for _, r := range outside {
		in := Options{SourcePorts: r}
		got, errs := in.Probe()
		if len(errs) != 1 || !errors.Is(errs[0], ErrClamped) || got != in {
			t.Errorf("Probe(%v) = %+v, %v; want it kept, with one ErrClamped", r, got, errs)
			continue
		}
		if flags := errorFlags(t, errs); flags[0] != "--source-ports" {
			t.Errorf("Probe(%v) names %v", r, flags)
		}
	}
}
