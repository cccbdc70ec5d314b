package tune

import (
	"errors"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestProbeFlagBySide: Probe names a refused per-side option by the flag
// that set it: --X where both sides hold the value, as --X sets it, else
// the side's own flag. An option set on the client side alone was named
// --X, a flag the operator may not have used (--client-congestion).
func TestProbeFlagBySide(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name             string
		client, upstream string // congestion algorithms
		flags            []string
	}{
		{"both", "nosuchcc", "nosuchcc", []string{"--congestion"}},
		{"client", "nosuchcc", "", []string{"--client-congestion"}},
		{"upstream", "", "nosuchcc", []string{"--upstream-congestion"}},
		{"each its own", "nosuchcc", "nosuchcc2", []string{"--client-congestion", "--upstream-congestion"}},
	} {
		in := Options{Client: SockOpts{Congestion: tc.client}, Upstream: SockOpts{Congestion: tc.upstream}}
		got, errs := in.Probe()
		if flags := errorFlags(t, errs); !slices.Equal(flags, tc.flags) {
			t.Errorf("%s: errors %v name %v, want %v", tc.name, errs, flags, tc.flags)
		}
		for _, err := range errs {
			if !errors.Is(err, unix.ENOENT) {
				t.Errorf("%s: %v, want ENOENT", tc.name, err)
			}
		}
		if got.Client.Congestion != "" || got.Upstream.Congestion != "" {
			t.Errorf("%s: Probe kept %+v, %+v; want both refused", tc.name, got.Client, got.Upstream)
		}
	}
}

// TestKeepAliveMax checks MaxKeepAliveIdle, MaxKeepAliveInterval and
// MaxKeepAliveCount against the kernel: each is taken, and one more (a time
// 1 ns more, rounded up to the next second) is refused with EINVAL.
func TestKeepAliveMax(t *testing.T) {
	t.Parallel()
	top := SockOpts{KeepAliveIdle: MaxKeepAliveIdle, KeepAliveInterval: MaxKeepAliveInterval, KeepAliveCount: MaxKeepAliveCount}
	if _, errs := (Options{Client: top, Upstream: top}).Probe(); len(errs) != 0 {
		t.Errorf("keepalive at the maximums: %v", errs)
	}
	for _, tc := range []struct {
		flag string
		past func(*SockOpts)
	}{
		{"--keepalive-idle", func(s *SockOpts) { s.KeepAliveIdle += time.Nanosecond }},
		{"--keepalive-interval", func(s *SockOpts) { s.KeepAliveInterval += time.Nanosecond }},
		{"--keepalive-count", func(s *SockOpts) { s.KeepAliveCount++ }},
	} {
		s := top
		tc.past(&s)
		_, errs := Options{Client: s, Upstream: s}.Probe()
		if flags := errorFlags(t, errs); !slices.Equal(flags, []string{tc.flag}) || !errors.Is(errs[0], unix.EINVAL) {
			t.Errorf("one past the maximum of %s: %v; want EINVAL", tc.flag, errs)
		}
	}
}
