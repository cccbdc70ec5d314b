package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
)

// TestConfigFileErrors checks that a bad file is one error line naming the
// file, the line and the key.
func TestConfigFileErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, file string
		want       []string
	}{
		{"unknown-key", "bind = true\nlisten-on = \"x\"\n", []string{":2:", `unknown key "listen-on"`}},
		{"unknown-table", "[limits]\nmax = 1\n", []string{":1:", `unknown key "limits"`}},
		{"duration-as-int", "\n\ndial-timeout = 10\n", []string{":3:", "dial-timeout", "wrong type integer"}},
		{"bool-as-string", "udp = \"no\"\n", []string{":1:", "udp", "true or false"}},
		{"int-as-string", "max-sessions = \"many\"\n", []string{":1:", "max-sessions", `"many"`}},
		{"bad-duration", "handshake-timeout = \"soon\"\n", []string{":1:", "handshake-timeout", `"soon"`}},
		{"bad-size", "rcvbuf = \"lots\"\n", []string{":1:", "rcvbuf", "size"}},
		{"array-for-scalar", "users = [\"a\", \"b\"]\n", []string{":1:", "users", "not an array"}},
		{"syntax", "bind = \n", []string{":1:"}},
		{"config-key", "config = \"other.toml\"\n", []string{":1:", `unknown key "config"`}},
		{"rule-bad-cidr", "bind = true\n[[rule]]\naction = \"deny\"\n[[rule]]\naction = \"deny\"\ncidr = [\"10.0.0.0/33\"]\n", []string{":4:", "[[rule]] #2", "10.0.0.0/33"}},
		{"rule-bad-action", "[[rule]]\naction = \"maybe\"\n", []string{":1:", "maybe"}},
		{"rule-unknown-key", "[[rule]]\naction = \"deny\"\nport = [\"25\"]\n", []string{":3:", `unknown key "port"`}},
		{"rule-cidr-not-array", "[[rule]]\naction = \"deny\"\ncidr = \"10.0.0.0/8\"\n", []string{":3:", "cidr"}},
		// One field under two keys that differ in case (valid TOML, whose
		// keys are case-sensitive): the decoder took either, by map order.
		{"rule-key-twice", "[[rule]]\naction = \"allow\"\nACTION = \"deny\"\n", []string{":2:", `[[rule]] #1: key "action" given twice (also as "ACTION")`}},
		{"inline-rule-key-twice", "rule = [{cidr = [\"10.0.0.0/8\"], action = \"deny\", Cidr = [\"0.0.0.0/0\"]}]\n", []string{":1:", `[[rule]] #1: key "cidr" given twice (also as "Cidr")`}},
		{"client-rule-ports", "[[client-rule]]\naction = \"deny\"\nports = [\"25\"]\n", []string{":1:", "client rule"}},
		{"bad-policy", "default-policy = \"maybe\"\n", []string{"default-policy", "maybe"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeConfig(t, tc.file)
			_, err := parseFlags([]string{"--config", path}, io.Discard)
			if err == nil {
				t.Fatalf("file %q: no error", tc.file)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.Contains(msg, path) && !strings.Contains(msg, "--") {
				t.Errorf("error %q: want one line naming the file or flag", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

// TestConfigFileAndFlags checks that every kind of key sets its flag and
// that the command line overrides the file, replacing (not extending) a
// repeatable key.
func TestConfigFileAndFlags(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, `
listen = ["127.0.0.1:1081", "[::1]:1081"]
dial-timeout = "3s"
udp-idle-timeout = 0
udp-filter = "addr"
max-sessions = 100
pipe-size = "256K"
rcvbuf = 65536
mark = 0x10
bind = false
deny-private = true
log-level = "debug"

[[rule]]
action = "allow"
cidr = ["10.1.2.3"]
ports = ["22"]
`)
	cfg, err := parseFlags([]string{"--config", path, "--max-sessions", "7", "--listen", "127.0.0.1:2000"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", strings.Join(cfg.listen, ","), "127.0.0.1:2000"},
		{"dial-timeout", cfg.tune.DialTimeout, 3 * time.Second},
		{"udp-idle-timeout", cfg.udpIdleTimeout, time.Duration(0)},
		{"udp-filter", cfg.udpFilter, "addr"},
		{"max-sessions", cfg.maxSessions, 7},
		{"pipe-size", cfg.relay.PipeBytes, 256 << 10},
		{"rcvbuf", cfg.tune.Client.RecvBufferBytes, 65536},
		{"mark", cfg.tune.Upstream.Mark, uint32(16)},
		{"bind", cfg.bind, false},
		{"deny-private", cfg.denyPrivate, true},
		{"log-level", cfg.logLevel.String(), "DEBUG"},
		{"rules", len(cfg.rules), 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	cfg, err = parseFlags([]string{"--config", path}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.listen, ","); got != "127.0.0.1:1081,[::1]:1081" {
		t.Errorf("listen from the file = %s", got)
	}
}

// TestExampleConfig loads the commented example shipped in contrib/, and
// checks that --print-config gives a file that reads back to itself.
func TestExampleConfig(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"--config", "../../contrib/sluice.toml"}, io.Discard)
	if err != nil {
		t.Fatalf("contrib/sluice.toml: %v", err)
	}
	if len(cfg.rules) == 0 || len(cfg.clientRules) == 0 {
		t.Errorf("example has %d rules and %d client rules; want some of each", len(cfg.rules), len(cfg.clientRules))
	}
	if _, _, err := buildLive(cfg); err != nil {
		t.Fatalf("example does not compile: %v", err)
	}
	var first bytes.Buffer
	if err := printConfig(&first, cfg); err != nil {
		t.Fatal(err)
	}
	printed := writeConfig(t, first.String())
	cfg2, err := parseFlags([]string{"--config", printed}, io.Discard)
	if err != nil {
		t.Fatalf("--print-config output does not load: %v\n%s", err, first.String())
	}
	var second bytes.Buffer
	printConfig(&second, cfg2)
	strip := func(s string) string { _, rest, _ := strings.Cut(s, "\n"); return rest } // the header names the file
	if strip(first.String()) != strip(second.String()) {
		t.Errorf("print-config is not a fixpoint:\n%s\n---\n%s", first.String(), second.String())
	}
}

// TestPrintConfig runs "sluice --print-config": exit 0, TOML on stdout with
// the flags given, and defaults as they are given, not as this machine
// resolves them.
func TestPrintConfig(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := sluiceCmd(ctx, "--print-config", "--max-sessions-per-ip", "9", "--listen", "[::1]:1")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("--print-config: %v; stderr: %s", err, stderr.String())
	}
	var got map[string]any
	if _, err := toml.Decode(stdout.String(), &got); err != nil {
		t.Fatalf("output is not TOML: %v\n%s", err, stdout.String())
	}
	if got["max-sessions-per-ip"] != int64(9) || got["handshake-timeout"] != "10s" {
		t.Errorf("max-sessions-per-ip = %v, handshake-timeout = %v; want 9, 10s", got["max-sessions-per-ip"], got["handshake-timeout"])
	}
	if l, _ := got["listen"].([]any); len(l) != 1 || l[0] != "[::1]:1" {
		t.Errorf("listen = %v", got["listen"])
	}
	// The default, one listener per CPU, stays 0: a count of this
	// machine's CPUs would pin the file to it.
	if got["listeners"] != int64(0) {
		t.Errorf("listeners = %v; want 0 (one per usable CPU, wherever the file is read)", got["listeners"])
	}
}

// TestPrintConfigOddStrings: values with quotes, backslashes, control
// characters and non-ASCII letters come back unchanged through
// --print-config and --config; a value that is not UTF-8, which TOML cannot
// hold, is an error naming its key.
func TestPrintConfigOddStrings(t *testing.T) {
	t.Parallel()
	odd := "d \"q\" \\ \x01\x1f\x7f\t\r\n é 日本"
	cfg, err := parseFlags([]string{"--profile-dir", odd}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg2, out, err := printAndLoad(t, cfg)
	if err != nil {
		t.Fatalf("--print-config output does not load: %v\n%s", err, out)
	}
	if cfg2.profileDir != odd {
		t.Errorf("profile-dir came back as %q; want %q", cfg2.profileDir, odd)
	}

	cfg, err = parseFlags([]string{"--profile-dir", "bad \xff byte"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := printConfig(io.Discard, cfg); err == nil || !strings.Contains(err.Error(), "profile-dir") {
		t.Errorf("printConfig of a value that is not UTF-8: %v; want an error naming profile-dir", err)
	}
}

// TestPrintConfigFileName checks that the header comment of --print-config,
// which names the configuration file, reads back whatever the file's name:
// one in Latin-1 (not UTF-8), or with a newline, a carriage return or DEL
// in it, is quoted. It used to be written as it was, and the output did not
// load ("invalid UTF-8 byte", or the rest of a name past its newline read as
// TOML). A plain name is written as it is.
func TestPrintConfigFileName(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"caf\xe9.toml", "a\nb = 1.toml", "a\rb.toml", "a\x7fb.toml", "tab\there é.toml"} {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, []byte("max-sessions = 5\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := parseFlags([]string{"--config", p}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		cfg2, out, err := printAndLoad(t, cfg)
		if err != nil {
			t.Errorf("config file %q: --print-config output does not load: %v\n%s", name, err, out)
			continue
		}
		if cfg2.maxSessions != 5 {
			t.Errorf("config file %q: max-sessions came back as %d; want 5", name, cfg2.maxSessions)
		}
		if header, _, _ := strings.Cut(out, "\n"); utf8.ValidString(name) && !strings.ContainsAny(name, "\n\r\x7f") && !strings.Contains(header, p) {
			t.Errorf("config file %q: header %q does not name it as it is", name, header)
		}
	}
}

// TestConfigFileNestedKeys checks that a dotted key or a nested table is an
// error naming its first part, as a plain unknown [table] is: none of them
// was read (the keys were skipped without a word). A flag's key used as a
// table is a wrong type naming it. Rules, arrays of tables, still load.
func TestConfigFileNestedKeys(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, file string
		want       []string
	}{
		{"dotted-unknown", "tune.rcvbuf = \"4M\"\n", []string{":1:", `unknown key "tune"`}},
		{"dotted-unknown-deep", "bind = true\n\"tune\" . rcvbuf.x = 1\n", []string{":2:", `unknown key "tune"`}},
		{"dotted-flag", "max-sessions.x = 1\n", []string{":1:", "max-sessions", "wrong type table", "an integer"}},
		{"nested-table", "[a.b]\nc = 1\n", []string{":1:", `unknown key "a"`}},
		{"nested-table-later", "udp = false\n\n[x.y.z]\n", []string{":3:", `unknown key "x"`}},
		{"flag-table", "bind = true\n[max-sessions]\nx = 1\n", []string{":2:", "max-sessions", "wrong type table"}},
		{"flag-nested-table", "[listen.x]\ny = \"z\"\n", []string{":1:", "listen", "wrong type table"}},
		{"inline-table", "log-level = { x = 1 }\n", []string{":1:", "log-level", "wrong type table"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			expectFileError(t, tc.file, tc.want...)
		})
	}
	cfg, err := parseFlags([]string{"--config", writeConfig(t, "bind = false\n[[rule]]\naction = \"deny\"\nports = [\"25\"]\n[[client-rule]]\naction = \"allow\"\ncidr = [\"::1\"]\n")}, io.Discard)
	if err != nil || len(cfg.rules) != 1 || len(cfg.clientRules) != 1 || cfg.bind {
		t.Errorf("file with [[rule]] and [[client-rule]]: err %v; want them loaded", err)
	}
}

// TestConfigFileValueErrors checks that a value the checks after parsing
// refuse names the file, the line and the key when it came from the file,
// and the flag as before when it came from the command line (which
// overrides the file's value, bad or good).
func TestConfigFileValueErrors(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "bind = true\nmax-sessions = -1\n")
	_, err := parseFlags([]string{"--config", path}, io.Discard)
	if want := "--config " + path + ":2: max-sessions: -1: must be 0 (no limit) or more"; err == nil || err.Error() != want {
		t.Errorf("max-sessions = -1 in the file: %v; want %s", err, want)
	}
	if _, err := parseFlags([]string{"--config", path, "--max-sessions", "3"}, io.Discard); err != nil {
		t.Errorf("bad file value overridden by a flag: %v", err)
	}
	good := writeConfig(t, "max-sessions = 5\n")
	_, err = parseFlags([]string{"--config", good, "--max-sessions", "-1"}, io.Discard)
	if want := "--max-sessions -1: must be 0 (no limit) or more"; err == nil || err.Error() != want {
		t.Errorf("--max-sessions -1 over the file: %v; want %s", err, want)
	}
	cases := []struct {
		name, file string
		want       []string
	}{
		{"log-level", "\nlog-level = \"loud\"\n", []string{":2: log-level: \"loud\": want debug"}},
		{"log-level-offset", "log-level = \"debug-4\"\n", []string{":1: log-level: \"debug-4\": want debug"}},
		{"workers", "workers = -2\n", []string{":1: workers: -2: must be 0 or more"}},
		{"bind-timeout", "udp = true\nbind-timeout = \"0s\"\n", []string{":2: bind-timeout: 0s: must be more than 0"}},
		{"udp-filter", "udp-filter = \"cone\"\n", []string{":1: udp-filter: \"cone\": want addr-port"}},
		{"default-policy", "# policy\ndefault-policy = \"maybe\"\n", []string{":2: default-policy: \"maybe\": want allow or deny"}},
		{"listen-workers", "workers = 2\nlisten = [\"127.0.0.1:0\"]\n", []string{":2: listen: 127.0.0.1:0 with --workers"}},
		{"debug-addr", "debug-addr = \"0.0.0.0:6060\"\n", []string{":1: debug-addr: 0.0.0.0:6060: must be a loopback address"}},
		{"domain-wildcard", "[[rule]]\naction = \"allow\"\ndomains = [\"*.Example.com\"]\n", []string{`[[rule]] #1: domain "*.example.com": write ".example.com"`}},
		{"domain-empty-label", "[[rule]]\naction = \"deny\"\ndomains = [\"..example.com\"]\n", []string{`domain "..example.com": empty label`}},
		{"domain-inner-empty-label", "[[rule]]\naction = \"deny\"\ndomains = [\"a..example.com\"]\n", []string{`domain "a..example.com": empty label`}},
		{"domain-port", "[[rule]]\naction = \"deny\"\ndomains = [\"example.com:443\"]\n", []string{`domain "example.com:443": want a name`}},
		{"domain-blank", "[[rule]]\naction = \"deny\"\ndomains = [\"example .com\"]\n", []string{`domain "example .com": want a name`}},
		{"cidr-zone", "[[rule]]\naction = \"allow\"\ncidr = [\"fe80::1%eth0\"]\n", []string{`cidr "fe80::1%eth0": zones (%eth0) are not matched; write fe80::1`}},
		{"client-cidr-zone", "[[client-rule]]\naction = \"deny\"\ncidr = [\"fe80::/10%eth0\"]\n", []string{`cidr "fe80::/10%eth0": zones`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			expectFileError(t, tc.file, tc.want...)
		})
	}
}

// expectFileError loads a configuration file holding text and checks that
// it fails with one line that names the file and holds each of want.
func expectFileError(t *testing.T, text string, want ...string) {
	t.Helper()
	path := writeConfig(t, text)
	_, err := parseFlags([]string{"--config", path}, io.Discard)
	if err == nil {
		t.Fatalf("file %q: no error", text)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "--config "+path+":") {
		t.Errorf("error %q: want one line naming the file", msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not contain %q", msg, w)
		}
	}
}

// printAndLoad writes cfg with printConfig and reads the output back as a
// configuration file; it returns that configuration, the output and the
// error of reading it.
func printAndLoad(t *testing.T, cfg *config) (*config, string, error) {
	t.Helper()
	var out bytes.Buffer
	if err := printConfig(&out, cfg); err != nil {
		t.Fatal(err)
	}
	cfg2, err := parseFlags([]string{"--config", writeConfig(t, out.String())}, io.Discard)
	return cfg2, out.String(), err
}
