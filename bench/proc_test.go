package bench

import (
	"errors"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		ppid int
		cpu  time.Duration
		err  error
	}{
		{"plain", "42 (sluice) S 7 42 42 0 -1 4194560 100 0 0 0 150 50 3 2 20 0 9 0", 7, 2050 * time.Millisecond, nil},
		{"odd name", "42 (a) b (c) R 1 42 42 0 -1 0 0 0 0 0 1 2 0 0 20 0", 1, 30 * time.Millisecond, nil},
		{"short", "42 (x) S 1 2 3", 0, 0, errProcFormat},
		{"no name", "42 x S 1", 0, 0, errProcFormat},
	} {
		ppid, cpu, err := parseStat([]byte(tc.in))
		if ppid != tc.ppid || cpu != tc.cpu || !errors.Is(err, tc.err) {
			t.Errorf("%s: parseStat = %d, %v, %v; want %d, %v, %v", tc.name, ppid, cpu, err, tc.ppid, tc.cpu, tc.err)
		}
	}
}

func TestParseMachineStat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		busy time.Duration
		err  error
	}{
		// user nice system idle iowait irq softirq steal guest guest_nice:
		// busy is 100+2+50+3+4 ticks; idle, iowait and steal are not.
		{"plain", "cpu  100 2 50 9000 70 3 4 600 0 0\ncpu0 50 1 25 4500 35 1 2 300 0 0\n", 1590 * time.Millisecond, nil},
		{"old kernel", "cpu 1 0 1 5 0 0 0\n", 20 * time.Millisecond, nil},
		// 10^10 ticks: 1,157 days of CPU, which ticks times a second
		// before the division by 100 took past 2^63 ns.
		{"past 2^63 ns before the division", "cpu 10000000000 0 0 0 0 0 0\n", 1e8 * time.Second, nil},
		{"per-CPU line first", "cpu0 1 0 1 5 0 0 0\n", 0, errProcFormat},
		{"short", "cpu 1 2 3\n", 0, errProcFormat},
		{"not a number", "cpu 1 2 x 4 5 6 7\n", 0, errProcFormat},
	} {
		busy, err := parseMachineStat([]byte(tc.in))
		if busy != tc.busy || !errors.Is(err, tc.err) {
			t.Errorf("%s: parseMachineStat = %v, %v; want %v, %v", tc.name, busy, err, tc.busy, tc.err)
		}
	}
}

func TestParseRSS(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int64
		err  error
	}{
		{"Name:\tx\nVmPeak:\t 9 kB\nVmRSS:\t    1234 kB\nRssAnon:\t 1 kB\n", 1234 << 10, nil},
		{"Name:\tkthreadd\nState:\tS\n", 0, nil},
		{"Name:\tx\nVmRSS:\t12 MB\n", 0, errProcFormat},
	} {
		got, err := parseRSS([]byte(tc.in))
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("parseRSS(%q) = %d, %v; want %d, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}
