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

// TestDecimalIntFlags: integer flags, and their keys in a configuration
// file, are decimal: 010 is 10, where Go's flag package read it as octal (8),
// and 0x10 is an error naming the flag, where it was 16. A TOML integer
// literal keeps its TOML meaning (0x10 is 16 there, and 010 a syntax error).
func TestDecimalIntFlags(t *testing.T) {
	t.Parallel()
	flags := map[string]func(*config) int{
		"loops":                 func(c *config) int { return c.relay.Loops },
		"listeners":             func(c *config) int { return c.tune.Listeners },
		"workers":               func(c *config) int { return c.workers },
		"backlog":               func(c *config) int { return c.tune.Backlog },
		"max-sessions":          func(c *config) int { return c.maxSessions },
		"max-sessions-per-ip":   func(c *config) int { return c.maxSessionsPerIP },
		"max-sessions-per-user": func(c *config) int { return c.maxSessionsPerUser },
		"fastopen":              func(c *config) int { return c.tune.FastOpenQueue },
	}
	for name, get := range flags {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, args := range [][]string{
				{"--" + name, "010"},
				{"--" + name + "=+010"},
				{"--config", writeConfig(t, name+" = \"010\"\n")},
				{"--config", writeConfig(t, name+" = 10\n")},
				{"--config", writeConfig(t, name+" = 0xa\n")},
			} {
				cfg, err := parseFlags(args, io.Discard)
				if err != nil || get(cfg) != 10 {
					t.Errorf("%q: %v, %s = %d; want 10", args, err, name, get(cfg))
				}
			}
			for _, v := range []string{"0x10", "0o10", "0b10", "1_0", "ten"} {
				_, err := parseFlags([]string{"--" + name, v}, io.Discard)
				if want := `invalid value "` + v + `" for flag --` + name + ": want a decimal integer"; err == nil || err.Error() != want {
					t.Errorf("--%s %s: %v; want %s", name, v, err, want)
				}
				path := writeConfig(t, name+" = \""+v+"\"\n")
				_, err = parseFlags([]string{"--config", path}, io.Discard)
				if want := "--config " + path + ":1: " + name + `: invalid value "` + v + `": want a decimal integer`; err == nil || err.Error() != want {
					t.Errorf("%s = %q in a file: %v; want %s", name, v, err, want)
				}
			}
			_, err := parseFlags([]string{"--" + name, "99999999999999999999"}, io.Discard)
			if want := `invalid value "99999999999999999999" for flag --` + name + ": value out of range"; err == nil || err.Error() != want {
				t.Errorf("--%s 99999999999999999999: %v; want %s", name, err, want)
			}
		})
	}
}
