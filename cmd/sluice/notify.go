package main

import (
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// notifier speaks systemd's readiness protocol (sd_notify(3)): one datagram
// of NAME=value lines to the unix socket named by NOTIFY_SOCKET, which a
// service manager sets for a unit of Type=notify. With it, `systemctl start`
// returns once sluice listens, not when it was exec'd, and `systemctl
// reload` once the reload is done. A nil *notifier sends nothing.
type notifier struct {
	addr *net.UnixAddr
}

// newNotifier takes NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID out of the
// environment, so that no child (a --workers worker) reports as if it were
// sluice, and returns a notifier for NOTIFY_SOCKET, or nil when it is not
// set. A name starting with '@' is a Linux abstract socket, as Go's unix
// addresses write it too.
//
// With WATCHDOG_USEC set (a unit's WatchdogSec=) for this process
// (WATCHDOG_PID unset or its pid), it sends WATCHDOG=1 every half of it
// from now on, as sd_watchdog_enabled(3) asks, for as long as the process
// runs: the manager, which counts from the start, kills a process whose
// runtime no longer schedules the ping, and would kill one that never sent
// it at the first interval's end.
func newNotifier() *notifier {
	name := os.Getenv("NOTIFY_SOCKET")
	every := watchdogInterval(os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID"), os.Getpid())
	for _, v := range [...]string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
		os.Unsetenv(v)
	}
	if name == "" {
		return nil
	}
	n := &notifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}}
	if every > 0 {
		go n.watchdog(every)
	}
	return n
}

// watchdogInterval is how often to send WATCHDOG=1 for WATCHDOG_USEC usec
// and WATCHDOG_PID pid (as the environment gives them) in process self: half
// the timeout, or 0 where there is none for this process.
func watchdogInterval(usec, pid string, self int) time.Duration {
	us, err := strconv.ParseUint(usec, 10, 63)
	if err != nil || us == 0 {
		return 0
	}
	if p, err := strconv.Atoi(pid); pid != "" && (err != nil || p != self) {
		return 0
	}
	us = min(us, uint64(math.MaxInt64/time.Microsecond)) // a Duration holds 292 years
	return max(time.Duration(us)*time.Microsecond/2, time.Microsecond)
}

// watchdog sends WATCHDOG=1 every interval, for the life of the process.
// A send that fails is not logged: the next one may well pass, and the
// manager's kill says more than a line a second would.
func (n *notifier) watchdog(every time.Duration) {
	t := time.NewTicker(every)
	for {
		n.send("WATCHDOG=1")
		<-t.C
	}
}

// send sends state, lines like "READY=1", in one datagram.
func (n *notifier) send(state ...string) error {
	if n == nil {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("NOTIFY_SOCKET %s: %w", n.addr.Name, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(state, "\n") + "\n")); err != nil {
		return fmt.Errorf("NOTIFY_SOCKET %s: %w", n.addr.Name, err)
	}
	return nil
}

// ready says that sluice serves: after its first start, and after each
// reload.
func (n *notifier) ready(status string) error {
	return n.send("READY=1", "STATUS="+status)
}

// reloading says that a reload has begun; the manager holds `systemctl
// reload` until the next ready. MONOTONIC_USEC (where the clock can be
// read) lets a manager for Type=notify-reload tell it from an older one.
func (n *notifier) reloading() error {
	if us, ok := monotonicMicros(); ok {
		return n.send("RELOADING=1", fmt.Sprintf("MONOTONIC_USEC=%d", us))
	}
	return n.send("RELOADING=1")
}

// stopping says that sluice drains and will exit.
func (n *notifier) stopping() error {
	return n.send("STOPPING=1", "STATUS=draining")
}

// notify logs err, a notifier's, as a warning: a manager that never hears
// READY=1 ends sluice at its start timeout, so the reason must be in the log.
func notify(log *slog.Logger, err error) {
	if err != nil {
		log.Warn("cannot notify the service manager", "err", err)
	}
}
