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
