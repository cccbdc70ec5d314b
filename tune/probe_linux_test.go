package tune

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/tune/netnstest"
)

func TestProbe(t *testing.T) {
	t.Parallel()
	cc := congestion(t)
	valid := Options{
		Client: SockOpts{RecvBufferBytes: 1 << 16, SendBufferBytes: 1 << 16, Nagle: true,
			KeepAliveIdle: time.Minute, KeepAliveInterval: 5 * time.Second, KeepAliveCount: 3,
			UserTimeout: time.Second, Congestion: cc, NotSentLowatBytes: 1 << 14, QuickAck: true},
		Upstream:    SockOpts{Congestion: cc, KeepAliveIdle: -1, UserTimeout: 2 * time.Second},
		Listeners:   4,
		Backlog:     64,
		DeferAccept: time.Second,
		Interface:   "lo",
		SourceAddr:  netip.MustParseAddr("127.0.0.1"),
	}
	if os.Geteuid() == 0 {
		valid.Client.Mark, valid.Upstream.Mark = 1, 2
	}
	with := func(f func(o *Options)) Options { o := valid; f(&o); return o }
	tests := []struct {
		name  string
		in    Options
		flags []string // the flags named by the errors, in order
		errno syscall.Errno
		want  Options // the Options Probe returns
	}{
		{name: "valid", in: valid, want: valid},
		{name: "zero", in: Options{}, want: Options{}},
		{name: "smart accept", in: Options{SmartAccept: true}, want: Options{SmartAccept: true}},
		{
			name:  "unknown congestion",
			in:    with(func(o *Options) { o.Client.Congestion = "nosuchcc" }),
			flags: []string{"--client-congestion"}, errno: unix.ENOENT, // upstream has its own
			want: with(func(o *Options) { o.Client.Congestion = "" }),
		},
		{
			name:  "unknown congestion on both sides",
			in:    with(func(o *Options) { o.Client.Congestion, o.Upstream.Congestion = "nosuchcc", "nosuchcc" }),
			flags: []string{"--congestion"}, errno: unix.ENOENT,
			want: with(func(o *Options) { o.Client.Congestion, o.Upstream.Congestion = "", "" }),
		},
		{
			name:  "unknown congestion upstream",
			in:    with(func(o *Options) { o.Upstream.Congestion = "nosuchcc" }),
			flags: []string{"--upstream-congestion"}, errno: unix.ENOENT,
			want: with(func(o *Options) { o.Upstream.Congestion = "" }),
		},
		{
			name:  "keepalive count too high",
			in:    with(func(o *Options) { o.Client.KeepAliveCount = 1000 }),
			flags: []string{"--client-keepalive-count"}, errno: unix.EINVAL, // upstream keepalive is off
			want: with(func(o *Options) { o.Client.KeepAliveCount = 0 }),
		},
		{
			name:  "unknown interface",
			in:    with(func(o *Options) { o.Interface = "nosuchif0" }),
			flags: []string{"--interface"}, errno: unix.ENODEV,
			want: with(func(o *Options) { o.Interface = "" }),
		},
		{
			name:  "foreign source address",
			in:    with(func(o *Options) { o.SourceAddr = netip.MustParseAddr("192.0.2.1") }),
			flags: []string{"--source-addr"}, errno: unix.EADDRNOTAVAIL,
			want: with(func(o *Options) { o.SourceAddr = netip.Addr{} }),
		},
		{
			name:  "two refusals",
			in:    with(func(o *Options) { o.Client.Congestion, o.Interface = "nosuchcc", "nosuchif0" }),
			flags: []string{"--client-congestion", "--interface"},
			want:  with(func(o *Options) { o.Client.Congestion, o.Interface = "", "" }),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := tc.in.Probe()
			if flags := errorFlags(t, errs); !slices.Equal(flags, tc.flags) {
				t.Errorf("errors %v name %v, want %v", errs, flags, tc.flags)
			}
			if tc.errno != 0 && len(errs) > 0 && !errors.Is(errs[0], tc.errno) {
				t.Errorf("error %v, want %v", errs[0], tc.errno)
			}
			if got != tc.want {
				t.Errorf("Probe returned\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func TestProbeClamped(t *testing.T) {
	t.Parallel()
	in := Options{Client: SockOpts{RecvBufferBytes: 1 << 30}, Backlog: 1 << 30}
	got, errs := in.Probe()
	if flags := errorFlags(t, errs); !slices.Equal(flags, []string{"--client-rcvbuf", "--backlog"}) {
		t.Fatalf("errors %v, want --client-rcvbuf and --backlog clamped", errs)
	}
	for _, err := range errs {
		if !errors.Is(err, ErrClamped) {
			t.Errorf("%v: want ErrClamped", err)
		}
	}
	if got != in {
		t.Errorf("Probe changed clamped options: %+v", got)
	}
}

func TestProbeFastOpen(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_fastopen")
	if err != nil {
		t.Skip(err)
	}
	sysctl, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	if sysctl&2 == 0 {
		want = append(want, "--fastopen")
	}
	if sysctl&1 == 0 {
		want = append(want, "--fastopen-connect")
	}
	got, errs := Options{FastOpenQueue: 8, FastOpenConnect: true}.Probe()
	if flags := errorFlags(t, errs); !slices.Equal(flags, want) {
		t.Errorf("with net.ipv4.tcp_fastopen=%d: errors %v, want flags %v", sysctl, errs, want)
	}
	if (got.FastOpenQueue == 0) != (sysctl&2 == 0) || got.FastOpenConnect != (sysctl&1 != 0) {
		t.Errorf("with net.ipv4.tcp_fastopen=%d Probe returned %+v", sysctl, got)
	}
}

// TestProbeFastOpenClamped: the kernel lowers a fast open queue to
// net.core.somaxconn, and Probe reports that as it does for the backlog. In
// a network namespace of its own, whose net.ipv4.tcp_fastopen enables the
// server side and whose somaxconn is 128.
func TestProbeFastOpenClamped(t *testing.T) {
	netnstest.Need(t)
	t.Parallel()
	ns := fmt.Sprintf("sluice-tfo%d", os.Getpid()%100000)
	netnstest.IP(t, "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	netnstest.In(t, ns, func() error {
		for _, w := range [][2]string{{"ipv4/tcp_fastopen", "3"}, {"core/somaxconn", "128"}} {
			if err := os.WriteFile("/proc/sys/net/"+w[0], []byte(w[1]), 0); err != nil {
				return err
			}
		}
		in := Options{FastOpenQueue: 1000}
		got, errs := in.Probe()
		if flags := errorFlags(t, errs); !slices.Equal(flags, []string{"--fastopen"}) || !errors.Is(errs[0], ErrClamped) || got != in {
			t.Errorf("Probe(--fastopen 1000) with somaxconn 128 = %+v, %v; want it kept, with ErrClamped", got, errs)
		} else if want := "tune: --fastopen (TCP_FASTOPEN): clamped by the kernel to 128 (net.core.somaxconn)"; errs[0].Error() != want {
			t.Errorf("error %q, want %q", errs[0], want)
		}
		in = Options{FastOpenQueue: 128}
		if got, errs := in.Probe(); len(errs) != 0 || got != in {
			t.Errorf("Probe(--fastopen 128) with somaxconn 128 = %+v, %v; want it unchanged and silent", got, errs)
		}
		return nil
	})
}

// TestProbeDeferAcceptClamped: the kernel caps TCP_DEFER_ACCEPT at 255
// SYN-ACK retransmissions, 29,887 s, without an error; Probe says so and
// keeps the value. One it only rounds up to its retransmission schedule
// (10 s is 15) is not reported.
func TestProbeDeferAcceptClamped(t *testing.T) {
	t.Parallel()
	in := Options{DeferAccept: 10 * time.Hour}
	got, errs := in.Probe()
	if flags := errorFlags(t, errs); !slices.Equal(flags, []string{"--defer-accept"}) || !errors.Is(errs[0], ErrClamped) || got != in {
		t.Fatalf("Probe(--defer-accept 10h) = %+v, %v; want it kept, with ErrClamped", got, errs)
	}
	if want := "tune: --defer-accept (TCP_DEFER_ACCEPT): clamped by the kernel to 29887 s (the kernel's longest)"; errs[0].Error() != want {
		t.Errorf("error %q, want %q", errs[0], want)
	}
	for _, d := range []time.Duration{time.Second, 10 * time.Second, 29887 * time.Second} {
		in := Options{DeferAccept: d}
		if got, errs := in.Probe(); len(errs) != 0 || got != in {
			t.Errorf("Probe(--defer-accept %v) = %+v, %v; want it unchanged and silent", d, got, errs)
		}
	}
}

func TestProbeMark(t *testing.T) {
	t.Parallel()
	_, errs := Options{Client: SockOpts{Mark: 7}}.Probe()
	if os.Geteuid() == 0 {
		if len(errs) != 0 {
			t.Errorf("as root: %v", errs)
		}
		return
	}
	if len(errs) != 1 || errs[0].Error() != "tune: --mark (SO_MARK): operation not permitted" {
		t.Errorf("unprivileged: %v", errs)
	}
}

func TestOptionErrorMessage(t *testing.T) {
	t.Parallel()
	err := error(&OptionError{Flag: "--mark", Option: "SO_MARK", Err: unix.EPERM})
	if got, want := err.Error(), "tune: --mark (SO_MARK): operation not permitted"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, unix.EPERM) {
		t.Error("errors.Is(err, EPERM) = false")
	}
}

func errorFlags(t *testing.T, errs []error) []string {
	t.Helper()
	var flags []string
	for _, err := range errs {
		var oe *OptionError
		if !errors.As(err, &oe) {
			t.Fatalf("%v is not an *OptionError", err)
		}
		flags = append(flags, oe.Flag)
	}
	return flags
}
