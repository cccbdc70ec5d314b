package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sluiceCmd runs this test binary as the sluice command with args.
func sluiceCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), "SLUICE_RUN_MAIN=1")
	return cmd
}

// TestStartupErrors checks that bad configuration stops sluice with exit
// status 2 (flags) or 1 (setup) and one line naming the culprit.
func TestStartupErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	malformed := filepath.Join(dir, "malformed")
	os.WriteFile(malformed, []byte("# ok\nalice:pw\nbob-without-password\n"), 0o600)
	cases := []struct {
		name string
		args []string
		code int
		want []string // substrings of the one line
	}{
		{"unknown-flag", []string{"--no-such-flag"}, 2, []string{"no-such-flag"}},
		{"missing-value", []string{"--listen"}, 2, []string{"needs an argument: --listen"}},
		{"bad-duration", []string{"--dial-timeout", "soon"}, 2, []string{"dial-timeout"}},
		{"bad-size", []string{"--rcvbuf", "lots"}, 2, []string{"rcvbuf"}},
		{"negative-size", []string{"--rcvbuf", "-5"}, 2, []string{"--rcvbuf", "0 (the kernel's default) or more"}},
		{"size-past-int32", []string{"--upstream-sndbuf", "4G"}, 2, []string{"--upstream-sndbuf", "at most 2147483647"}},
		{"pipe-size-past-int32", []string{"--pipe-size", "2G"}, 2, []string{"--pipe-size", "at most 2147483647"}},
		{"negative-copy-below", []string{"--copy-below", "-1"}, 2, []string{"--copy-below -1", "0 (splice every read) to 1M"}},
		{"copy-below-past-1M", []string{"--copy-below", "2M"}, 2, []string{"--copy-below 2097152", "0 (splice every read) to 1M"}},
		{"negative-keepalive", []string{"--client-keepalive-idle", "-5s"}, 2, []string{"--client-keepalive-idle", "0 or more"}},
		{"negative-keepalive-count", []string{"--keepalive-count", "-3"}, 2, []string{"--keepalive-count", "0 or more"}},
		{"negative-user-timeout", []string{"--user-timeout", "-1s"}, 2, []string{"--user-timeout", "0 or more"}},
		{"negative-backlog", []string{"--backlog", "-1"}, 2, []string{"--backlog"}},
		{"negative-fastopen", []string{"--fastopen", "-1"}, 2, []string{"--fastopen"}},
		{"negative-defer-accept", []string{"--defer-accept", "-1s"}, 2, []string{"--defer-accept"}},
		{"negative-idle-timeout", []string{"--idle-timeout", "-1s"}, 2, []string{"--idle-timeout"}},
		{"negative-drain-timeout", []string{"--drain-timeout", "-1s"}, 2, []string{"--drain-timeout"}},
		{"size-overflow", []string{"--notsent-lowat", "9999999999999G"}, 2, []string{"--notsent-lowat", "size in bytes"}},
		{"bad-log-format", []string{"--log-format", "xml"}, 2, []string{"--log-format"}},
		{"int-not-decimal", []string{"--max-sessions", "0x10"}, 2, []string{`invalid value "0x10" for flag --max-sessions: want a decimal integer`}},
		{"stray-argument", []string{"1080"}, 2, []string{"1080"}},
		{"workers-port-0", []string{"--workers", "2", "--listen", "127.0.0.1:0"}, 2, []string{"--listen 127.0.0.1:0 with --workers", "give a port"}},
		// Port 0 however written: "00" passed as a port of its own, and
		// each worker listened on a port the kernel chose.
		// The four names alone: slog's offsets passed ("error+8" logs
		// nothing, a failed reload's line included).
		{"log-level-offset", []string{"--log-level", "info+2"}, 2, []string{`--log-level "info+2": want debug, info, warn or error`}},
		{"log-level-above-error", []string{"--log-level", "ERROR+8"}, 2, []string{`--log-level "ERROR+8": want debug, info, warn or error`}},
		{"workers-port-00", []string{"--workers", "2", "--listen", "127.0.0.1:00"}, 2, []string{"--listen 127.0.0.1:00 with --workers", "give a port"}},
		{"workers-port-000-v6", []string{"--workers", "2", "--listen", "[::1]:000"}, 2, []string{"--listen [::1]:000 with --workers", "give a port"}},
		{"open-relay-ipv4", []string{"--listen", "0.0.0.0:0"}, 1, []string{"0.0.0.0:0", "--allow-open-relay"}},
		{"open-relay-ipv6", []string{"--listen", "[::]:0"}, 1, []string{"--allow-open-relay"}},
		{"debug-addr-public", []string{"--debug-addr", "0.0.0.0:6060"}, 2, []string{"--debug-addr", "loopback", "--debug-allow-public"}},
		// Checked before anything serves (they used to fail after the
		// "sluice listening" line, with exit 1).
		{"bad-metrics-addr", []string{"--metrics", "bogus"}, 2, []string{"--metrics bogus: want host:port"}},
		{"metrics-port-range", []string{"--metrics", "127.0.0.1:99999"}, 2, []string{"--metrics 127.0.0.1:99999: want host:port"}},
		{"bad-debug-addr", []string{"--debug-addr", "bogus"}, 2, []string{"--debug-addr bogus: want host:port"}},
		{"listen-port-range", []string{"--listen", "127.0.0.1:99999"}, 2, []string{`--listen "127.0.0.1:99999": want host:port`}},
		{"bad-profile", []string{"--profile", "disk"}, 2, []string{"--profile"}},
		{"bad-udp-filter", []string{"--udp-filter", "cone"}, 2, []string{"--udp-filter", "addr-port, addr or none"}},
		{"bad-source-ports", []string{"--source-ports", "2000-1000"}, 2, []string{"--source-ports", "LOW-HIGH"}},
		{"source-ports-zero", []string{"--source-ports", "0-1000"}, 2, []string{"--source-ports"}},
		{"source-ports-word", []string{"--source-ports", "most"}, 2, []string{"--source-ports", "all, off"}},
		{"users-missing", []string{"--users", filepath.Join(dir, "nope")}, 1, []string{"--users", "nope", "no such file"}},
		{"users-malformed", []string{"--users", malformed}, 1, []string{malformed + ":3"}},
		// 192.0.2.0/24 (TEST-NET-1) is on no interface here: bind fails, no packet is sent.
		{"listen-not-local", []string{"--listen", "192.0.2.1:1080", "--allow-open-relay"}, 1, []string{"--listen 192.0.2.1:1080"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, out, err := runExit(30*time.Second, tc.args...)
			if code != tc.code || strings.Count(out, "\n") != 0 {
				t.Fatalf("sluice %q: exit %d (%v), stderr:\n%s\nwant exit %d and one line", tc.args, code, err, out, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("sluice %q: %q does not name %q", tc.args, out, w)
				}
			}
		})
	}
}

// TestRunAndSignal starts the real command on a free loopback port, reads its
// "listening" line, proxies a connection, and stops it with SIGTERM.
func TestRunAndSignal(t *testing.T) {
	t.Parallel()
	users := writeUsers(t, "alice:pw\n")
	os.Chmod(users, 0o644)
	p := spawnSluice(t, nil, "--users", users, "--listeners", "2")
	if p.count("accessible by other users") == 0 {
		t.Errorf("no warning for a users file readable by others; log:\n%s", p.log())
	}
	c := dialSluice(t, p.addr)
	mustWrite(t, c, []byte{5, 1, 2}) // -> user/pass
	expect(t, c, []byte{5, 2})       // <- user/pass
	c.Close()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(); err != nil {
		t.Fatalf("after SIGTERM: %v, want exit 0", err)
	}
}

// TestFlagErrorDashes checks that every error of the flag package names the
// flag --name, as sluice writes flags, and leaves the value quoted in it as
// it was, dashes, quotes and all.
func TestFlagErrorDashes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--nodelay=maybe"}, `invalid boolean value "maybe" for --nodelay: invalid syntax`},
		{[]string{"--udp=no for -bind"}, `invalid boolean value "no for -bind" for --udp: parse error`},
		{[]string{"--dial-timeout", "flag -x"}, `invalid value "flag -x" for flag --dial-timeout: want a duration such as "10s", "1m30s" or "500ms"`},
		{[]string{"--dial-timeout", `a" for flag -b`}, `invalid value "a\" for flag -b" for flag --dial-timeout: want a duration such as "10s", "1m30s" or "500ms"`},
		{[]string{"--no-such-flag"}, "flag provided but not defined: --no-such-flag"},
		{[]string{"--listen"}, "flag needs an argument: --listen"},
	}
	for _, tc := range cases {
		_, err := parseFlags(tc.args, io.Discard)
		if err == nil || err.Error() != tc.want {
			t.Errorf("sluice %q: %v; want %s", tc.args, err, tc.want)
		}
	}
}

// TestUsersFileNames checks that a UTF-8 byte order mark at the start of a
// users file and spaces or tabs around a name are not part of the name, so
// that those users can log in, while the password stays everything after
// the first ':', spaces included.
func TestUsersFileNames(t *testing.T) {
	t.Parallel()
	path := writeUsers(t, "\ufeffalice:pw1\r\n  bob\t: pw 2 \n\t# a comment\n\tcarol :p:w\n")
	users, _, err := loadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"alice": "pw1", "bob": " pw 2 ", "carol": "p:w"}
	if len(users) != len(want) {
		t.Errorf("users %q; want %q", users, want)
	}
	for name, pass := range want {
		if got, ok := users[name]; !ok || got != pass {
			t.Errorf("user %q: password %q (listed: %v); want %q", name, got, ok, pass)
		}
	}
	addr, _ := startSluice(t, "--users", path)
	for _, tc := range []struct {
		user, pass string
		ok         bool
	}{
		{"alice", "pw1", true},
		{"bob", " pw 2 ", true},
		{"carol", "p:w", true},
		{"\ufeffalice", "pw1", false},
		{"  bob\t", " pw 2 ", false},
		{"bob", "pw 2", false},
	} {
		t.Run(tc.user+":"+tc.pass, func(t *testing.T) {
			c := dialSluice(t, addr)
			msg := append([]byte{5, 1, 2, 1, byte(len(tc.user))}, tc.user...)
			mustWrite(t, c, append(append(msg, byte(len(tc.pass))), tc.pass...))
			expect(t, c, []byte{5, 2})
			if tc.ok {
				expect(t, c, []byte{1, 0})
			} else {
				expect(t, c, []byte{1, 1})
			}
		})
	}
}

// runExit runs sluice with args until it exits, killed after timeout (a
// safety net), and returns its exit status, its stderr without the last
// newline, and Run's error.
func runExit(timeout time.Duration, args ...string) (code int, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var buf bytes.Buffer
	cmd := sluiceCmd(ctx, args...)
	cmd.Stderr = &buf
	err = cmd.Run()
	return cmd.ProcessState.ExitCode(), strings.TrimRight(buf.String(), "\n"), err
}

// TestHelpToStdout: --help prints its usage on stdout and exits 0, so that
// `sluice --help | less` shows it; it went to stderr.
func TestHelpToStdout(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := sluiceCmd(ctx, "--help")
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("sluice --help: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "--listen") || errOut.Len() != 0 {
		t.Errorf("sluice --help: stdout %d bytes (want the usage, naming --listen), stderr %q (want nothing)", out.Len(), errOut.String())
	}
}
