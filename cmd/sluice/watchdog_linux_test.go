package main

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestObserveWatchdog: with WATCHDOG_USEC set, as systemd sets it for
// a unit with WatchdogSec=, sluice sends WATCHDOG=1 from its own pid, from
// its start (the manager counts from there, READY=1 or not) and on, until
// it exits; it sent none, so the manager killed it at the first timeout.
func TestObserveWatchdog(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "notify")
	m := listenManager(t, sock)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // safety net
	defer cancel()
	cmd := sluiceCmd(ctx, "--listen", "127.0.0.1:0", "--drain-timeout", "1s")
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=100000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	pid := cmd.Process.Pid
	// until reads messages up to one whose first line is last, and at
	// least pings WATCHDOG=1 messages.
	until := func(last string, pings int) {
		seen := map[string]int{}
		for seen[last] == 0 || seen["WATCHDOG=1"] < pings {
			msg, from := m.next(t)
			if from != pid {
				t.Fatalf("%q from pid %d, want %d", msg, from, pid)
			}
			first, _, _ := strings.Cut(msg, "\n")
			if first == "WATCHDOG=1" && msg != "WATCHDOG=1\n" {
				t.Fatalf("watchdog message %q, want WATCHDOG=1 alone", msg)
			}
			seen[first]++
		}
	}
	until("READY=1", 2)
	cmd.Process.Signal(syscall.SIGTERM)
	until("STOPPING=1", 0)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v, want exit 0", err)
	}
}

// TestObserveWatchdogInterval: WATCHDOG=1 goes out every half of
// WATCHDOG_USEC, only where WATCHDOG_PID is unset or this process's.
func TestObserveWatchdogInterval(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"30000000", "", 15 * time.Second},
		{"30000000", "42", 15 * time.Second},
		{"30000000", "43", 0}, // another process's: a parent's, say
		{"30000000", "x", 0},
		{"0", "", 0},
		{"-5", "", 0},
		{"1", "", time.Microsecond},
		{"junk", "", 0},
		{"18446744073709551615", "", 0}, // past ParseUint's 63 bits
		{"9223372036854775807", "", math.MaxInt64 / time.Microsecond * time.Microsecond / 2}, // capped, no overflow
	} {
		if got := watchdogInterval(tc.usec, tc.pid, 42); got != tc.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q in pid 42: every %v, want %v", tc.usec, tc.pid, got, tc.want)
		}
	}
}
