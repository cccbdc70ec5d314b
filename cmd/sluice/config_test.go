package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
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

// TestKeepAliveOff: --keepalive=false turns keepalive off whatever
// --keepalive-idle says, 0 included, and in either order, from the file or
// the command line; a per-side --X-keepalive=true turns it back on for that
// side with the idle time given. An idle time used to overwrite the off.
func TestKeepAliveOff(t *testing.T) {
	t.Parallel()
	const off = time.Duration(-1)
	for _, tc := range []struct {
		args     []string
		client   time.Duration
		upstream time.Duration
	}{
		{[]string{"--keepalive=false", "--keepalive-idle", "30s"}, off, off},
		{[]string{"--keepalive-idle", "30s", "--keepalive=false"}, off, off},
		{[]string{"--keepalive=false", "--keepalive-idle", "0"}, off, off},
		{[]string{"--config", writeConfig(t, "keepalive-idle = \"30s\"\n"), "--keepalive=false"}, off, off},
		{[]string{"--config", writeConfig(t, "keepalive = false\nkeepalive-idle = 0\n")}, off, off},
		{[]string{"--keepalive=false", "--client-keepalive", "--keepalive-idle", "30s"}, 30 * time.Second, off},
		{[]string{"--upstream-keepalive=false", "--keepalive-idle", "30s"}, 30 * time.Second, off},
		{[]string{"--keepalive", "--keepalive-idle", "30s"}, 30 * time.Second, 30 * time.Second},
	} {
		cfg, err := parseFlags(tc.args, io.Discard)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if c, u := cfg.tune.Client.KeepAliveIdle, cfg.tune.Upstream.KeepAliveIdle; c != tc.client || u != tc.upstream {
			t.Errorf("%q: keepalive idle client %v, upstream %v; want %v, %v (-1ns: off)", tc.args, c, u, tc.client, tc.upstream)
		}
	}
}

// TestErrorsOneLine: a value or path with a newline (or another control
// character, or bytes that are not UTF-8) is quoted in the error naming it,
// which stays one line. --debug-addr, --listen with --workers, an open
// relay's --listen, and the --config and --users paths wrote it as it was.
func TestErrorsOneLine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	badConfig := filepath.Join(dir, "a\nb.toml")
	if err := os.WriteFile(badConfig, []byte("max-sessions = -1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	usersFile := filepath.Join(dir, "users\n\xff")
	if err := os.WriteFile(usersFile, []byte("no colon\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	errs := map[string]error{}
	for _, args := range [][]string{
		{"--debug-addr", "a\nb:1"},
		{"--listen", "a\n:0", "--workers", "1"},
		{"--config", badConfig},
		{"--config", filepath.Join(dir, "missing\r.toml")},
	} {
		_, err := parseFlags(args, io.Discard)
		errs[strings.Join(args, " ")] = err
	}
	errs["open relay"] = refuseOpenRelay(&config{}, []string{"0.0.0.0\n:1080"})
	_, _, errs["users file"] = loadUsers(usersFile)
	for what, err := range errs {
		if err == nil || strings.ContainsAny(err.Error(), "\n\r") || !utf8.ValidString(err.Error()) {
			t.Errorf("%q: %q; want an error of one line", what, err)
		}
	}
}

// TestSourceAddrUnspecified: --source-addr 0.0.0.0 or :: is refused at the
// start, on the command line or in the configuration file. It meant one
// family only with bare sockets, both with --net-sockets (package net reads
// it as no source), and one for UDP ASSOCIATE's upstream socket.
func TestSourceAddrUnspecified(t *testing.T) {
	t.Parallel()
	file := writeConfig(t, "source-addr = \"::\"\n")
	for _, args := range [][]string{
		{"--source-addr", "0.0.0.0"},
		{"--source-addr", "::"},
		{"--source-addr", "::ffff:0.0.0.0"},
		{"--source-addr", "0.0.0.0", "--net-sockets"},
		{"--config", file},
	} {
		_, err := parseFlags(args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "source-addr") || !strings.Contains(err.Error(), "leave --source-addr unset") {
			t.Errorf("%q: %v; want an error naming --source-addr that says to leave it unset", args, err)
		}
	}
	for _, ok := range []string{"127.0.0.1", "::1"} {
		if _, err := parseFlags([]string{"--source-addr", ok}, io.Discard); err != nil {
			t.Errorf("--source-addr %s: %v", ok, err)
		}
	}
}
