package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
)

// notifier speaks systemd's readiness protocol (sd_notify(3)): one datagram
// of NAME=value lines to the unix socket named by NOTIFY_SOCKET, which a
// service manager sets for a unit of Type=notify. With it, `systemctl start`
// returns once sluice listens, not when it was exec'd, and `systemctl
// reload` once the reload is done. A nil *notifier sends nothing.
type notifier struct {
	addr *net.UnixAddr
}

// newNotifier takes NOTIFY_SOCKET out of the environment, so that no child
// (a --workers worker) reports as if it were sluice, and returns a notifier
// for it, or nil when it is not set. A name starting with '@' is a Linux
// abstract socket, as Go's unix addresses write it too.
func newNotifier() *notifier {
	name := os.Getenv("NOTIFY_SOCKET")
	os.Unsetenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	return &notifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}}
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
