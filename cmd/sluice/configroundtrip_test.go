package main

import (
	"bytes"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestPrintConfigRoundTrip checks that --print-config writes a file that
// --config reads back to the same configuration: for each command line, the
// text printed from the flags and the text printed from that file are the
// same, and so is every effective setting (the parsed config). Socket
// options given in forms TOML has no literal for (--nodelay=0,
// --keepalive=F, leading zeros, 0x_1) come back as the values they were
// parsed to, and per-side options left unset stay unset, so that
// --congestion is not overridden by an empty --client-congestion.
func TestPrintConfigRoundTrip(t *testing.T) {
	t.Parallel()
	cases := [][]string{
		{"--congestion", "reno"},
		{"--nodelay=0"},
		{"--nodelay=1", "--upstream-nodelay=F"},
		{"--keepalive=F"},
		{"--keepalive=t", "--client-keepalive=FALSE"},
		{"--quickack=0", "--client-quickack=T"},
		{"--keepalive-count=010"},
		{"--rcvbuf=010"},
		{"--mark=017"},
		{"--mark=0x_1"},
		{"--mark=0b101", "--upstream-mark=0o17"},
		{"--sndbuf=1M", "--client-notsent-lowat=16k", "--upstream-rcvbuf=0"},
		{"--keepalive-idle=90s", "--upstream-keepalive-interval=0", "--user-timeout=1500ms"},
		{"--congestion", "bbr", "--client-congestion", ""}, // set, and empty: the system's default
		{ // many keys, both sides and one side: subtest "many-keys"
			"--listen", "127.0.0.1:1081", "--listen", "[::1]:1082",
			"--handshake-timeout", "3s", "--dial-timeout", "0", "--idle-timeout", "5m",
			"--bind=false", "--bind-timeout", "7s", "--udp-idle-timeout", "0", "--udp-filter", "none",
			"--drain-timeout", "1s", "--pipe-size", "256K", "--copy-below", "16K", "--loops", "-1",
			"--no-splice", "--net-sockets", "--listeners", "3", "--pin", "--backlog", "017",
			"--fastopen", "16", "--defer-accept", "0", "--smart-accept=false", "--smart-connect",
			"--fastopen-connect", "--source-addr", "127.0.0.1", "--source-ports", "20000-30000",
			"--interface", "lo", "--log-level", "warn", "--log-format", "json",
			"--profile", "cpu", "--profile-dir", "/tmp/p", "--debug-addr", "127.0.0.1:6060",
			"--access-log=0", "--metrics", "127.0.0.1:9180", "--max-sessions", "100",
			"--max-sessions-per-ip", "010", "--max-sessions-per-user", "3", "--deny-private",
			"--default-policy", "deny", "--client-default-policy", "deny",
			"--rcvbuf", "4M", "--client-rcvbuf", "64K", "--sndbuf", "1G", "--upstream-sndbuf", "0",
			"--nodelay=false", "--client-nodelay", "--keepalive=0", "--upstream-keepalive=1",
			"--keepalive-idle", "1m", "--client-keepalive-interval", "10s", "--keepalive-count", "05",
			"--upstream-keepalive-count", "0", "--user-timeout", "30s", "--congestion", "cubic",
			"--upstream-congestion", "reno", "--notsent-lowat", "016", "--quickack", "--upstream-quickack=f",
			"--mark", "0x_ff", "--client-mark", "0",
		},
	}
	strip := func(s string) string { _, rest, _ := strings.Cut(s, "\n"); return rest } // the header names the file
	for _, args := range cases {
		name := strings.Join(args, " ")
		if len(args) > 20 {
			name = "many-keys"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseFlags(args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			var first bytes.Buffer
			if err := printConfig(&first, cfg); err != nil {
				t.Fatal(err)
			}
			path := writeConfig(t, first.String())
			cfg2, err := parseFlags([]string{"--config", path}, io.Discard)
			if err != nil {
				t.Fatalf("--print-config output does not load: %v\n%s", err, first.String())
			}
			var second bytes.Buffer
			if err := printConfig(&second, cfg2); err != nil {
				t.Fatal(err)
			}
			if strip(first.String()) != strip(second.String()) {
				t.Errorf("printed from the flags:\n%s\nprinted from that file:\n%s", first.String(), second.String())
			}
			if c, u := cfg2.tune.Client, cfg2.tune.Upstream; c != cfg.tune.Client || u != cfg.tune.Upstream {
				t.Errorf("socket options from the file:\n client %+v\n upstream %+v\nfrom the flags:\n client %+v\n upstream %+v",
					c, u, cfg.tune.Client, cfg.tune.Upstream)
			}
			// Every other setting too. configFile and fileLines say where
			// the settings came from; values is what the texts compared.
			a, b := *cfg, *cfg2
			b.configFile, b.fileLines = "", nil
			a.values, b.values = nil, nil
			if !reflect.DeepEqual(a, b) {
				t.Errorf("config from the file:\n%+v\nfrom the flags:\n%+v", b, a)
			}
		})
	}
}

// TestPrintConfigSockOpts checks how --print-config writes socket options:
// the value each flag was parsed to, as TOML reads it (decimal integers and
// bytes, true or false, durations as Go writes them), and an option no flag
// set as a comment, whatever its type, while one set to "" is written.
func TestPrintConfigSockOpts(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{
		"--nodelay=0", "--client-keepalive=F", "--upstream-quickack=T", "--keepalive-count=010",
		"--rcvbuf=010", "--client-sndbuf=1M", "--client-mark=017", "--upstream-mark=0x_1",
		"--keepalive-idle=90s", "--congestion", "reno", "--upstream-congestion", "",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := printConfig(&out, cfg); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	for _, want := range []string{
		"nodelay = false", "client-keepalive = false", "upstream-quickack = true", "keepalive-count = 10",
		"rcvbuf = 10", "client-sndbuf = 1048576", "client-mark = 15", "upstream-mark = 1",
		`keepalive-idle = "1m30s"`, `congestion = "reno"`, `upstream-congestion = ""`,
		"# client-congestion = (not set)", "# keepalive = (not set)", "# mark = (not set)",
		"# upstream-keepalive-count = (not set)", "# user-timeout = (not set)",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("no line %q in\n%s", want, out.String())
		}
	}
}
