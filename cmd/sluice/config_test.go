package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

// TestSockFlags checks the mapping of socket-option flags onto both sides,
// and that a per-side flag wins over the both-sides one in any order.
func TestSockFlags(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{
		"--client-rcvbuf", "1M", "--rcvbuf", "256K", "--sndbuf", "64K", "--upstream-sndbuf", "2M",
		"--nodelay=false", "--keepalive-idle", "30s", "--upstream-keepalive=false", "--congestion", "reno",
		"--user-timeout", "5s", "--mark", "0x10", "--client-quickack", "--notsent-lowat", "16K",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c, u := cfg.tune.Client, cfg.tune.Upstream
	checks := []struct {
		name      string
		got, want any
	}{
		{"client rcvbuf", c.RecvBufferBytes, 1 << 20}, {"upstream rcvbuf", u.RecvBufferBytes, 256 << 10},
		{"client sndbuf", c.SendBufferBytes, 64 << 10}, {"upstream sndbuf", u.SendBufferBytes, 2 << 20},
		{"client nagle", c.Nagle, true}, {"upstream nagle", u.Nagle, true},
		{"client keepalive", c.KeepAliveIdle, 30 * time.Second}, {"upstream keepalive", u.KeepAliveIdle, time.Duration(-1)},
		{"congestion", c.Congestion + "/" + u.Congestion, "reno/reno"},
		{"user timeout", u.UserTimeout, 5 * time.Second}, {"mark", c.Mark, uint32(16)},
		{"client quickack", c.QuickAck, true}, {"upstream quickack", u.QuickAck, false},
		{"notsent-lowat", u.NotSentLowatBytes, 16 << 10},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

// TestRefusedOptionWarnsOnce starts sluice with a congestion algorithm the
// kernel does not have: it logs one warning naming the flag and serves.
func TestRefusedOptionWarnsOnce(t *testing.T) {
	t.Parallel()
	p := spawnSluice(t, nil, "--congestion", "nosuchcc", "--listeners", "1")
	var warnings []string
	for _, line := range strings.Split(p.log(), "\n") {
		if strings.Contains(line, "level=WARN") {
			warnings = append(warnings, line)
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "--congestion") {
		t.Fatalf("warnings %q, want exactly one naming --congestion", warnings)
	}
}
