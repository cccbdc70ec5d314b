package main

// Interop tests: each case drives a freshly started sluice with a real,
// widely used SOCKS5 client (curl, proxychains4 with iperf3, PySocks,
// headless Chromium, ncat) against a local target on loopback. A missing
// client skips its case with a reason, or fails it when
// SLUICE_REQUIRE_CLIENTS=1.

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clientRun is one finished run of an external client.
type clientRun struct {
	client string       // what the test drives, e.g. "PySocks"
	cmd    string       // the command line, quoted for a shell
	stdout bytes.Buffer // empty when the caller took stdout elsewhere
	stderr bytes.Buffer
}

// fatalf fails the test with the client's name, the message, its full
// command line and the start of what it printed.
func (r *clientRun) fatalf(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Fatalf("%s: %s\ncommand: %s\nstdout: %s\nstderr: %s", r.client, fmt.Sprintf(format, args...), r.cmd, clip(r.stdout.Bytes()), clip(r.stderr.Bytes()))
}

// clip shortens client output for a failure message.
func clip(b []byte) string {
	const maxBytes = 4000
	if len(b) > maxBytes {
		return fmt.Sprintf("%q... (%d bytes)", b[:maxBytes], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// commandLine renders cmd as a shell command line, quoting arguments that
// need it, so a failure can be rerun by hand.
func commandLine(cmd *exec.Cmd) string {
	args := make([]string, len(cmd.Args))
	for i, a := range cmd.Args {
		args[i] = a
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`<>|&;*?()[]{}#~") {
			args[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(args, " ")
}

// runClient logs one line naming client and the command line of cmd, runs
// it within timeout and returns what it printed. Stdout is captured unless
// cmd.Stdout is set. A non-zero exit or the timeout fails the test.
func runClient(t *testing.T, client string, timeout time.Duration, cmd *exec.Cmd) *clientRun {
	t.Helper()
	r := &clientRun{client: client, cmd: commandLine(cmd)}
	t.Logf("%s: %s", client, r.cmd)
	if cmd.Stdout == nil {
		cmd.Stdout = &r.stdout
	}
	cmd.Stderr = &r.stderr
	cmd.WaitDelay = 5 * time.Second // children that keep the pipes open
	if err := cmd.Start(); err != nil {
		r.fatalf(t, "%v", err)
	}
	timer := time.AfterFunc(timeout, func() { cmd.Process.Kill() }) // safety net only
	err := cmd.Wait()
	if !timer.Stop() {
		r.fatalf(t, "still running after %v, killed: %v", timeout, err)
	}
	if err != nil {
		r.fatalf(t, "%v", err)
	}
	return r
}

// bulkBytes is the size of each curl transfer.
const bulkBytes = 64 << 20

// bulkResult is what the bulk server saw of one request: the SHA-256 and
// size of the bytes it wrote (GET) or read (PUT), and the error that cut
// the transfer short, if any.
type bulkResult struct {
	sum [32]byte
	n   int64
	err error
}

// bulkServer serves GET /blob (data, hashed as it is written) and PUT
// /upload (the body is hashed and answered with "SIZE SHA256HEX"). What it
// saw of each request is sent on the returned channel.
func bulkServer(t *testing.T, data []byte) (string, <-chan bulkResult) {
	t.Helper()
	results := make(chan bulkResult, 2)
	handler := func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		var res bulkResult
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/blob":
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			res.n, res.err = io.Copy(io.MultiWriter(w, h), bytes.NewReader(data))
		case r.Method == http.MethodPut && r.URL.Path == "/upload":
			res.n, res.err = io.Copy(h, r.Body)
			fmt.Fprintf(w, "%d %x", res.n, h.Sum(nil))
		default:
			http.NotFound(w, r)
			return
		}
		res.sum = [32]byte(h.Sum(nil))
		results <- res
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(handler)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), results
}

// TestCurlBulk moves 64 MiB each way through sluice with curl (GET, and a
// PUT of a file named by host name) and checks the SHA-256 on both ends.
func TestCurlBulk(t *testing.T) {
	t.Parallel()
	curl := needClient(t, "curl")
	data := make([]byte, bulkBytes)
	rand.NewChaCha8([32]byte{'s', 'l', 'u', 'i', 'c', 'e'}).Read(data)
	want := sha256.Sum256(data)
	upload := filepath.Join(t.TempDir(), "upload")
	if err := os.WriteFile(upload, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args func(proxy, web, port string) []string
		put  bool // curl prints the server's "SIZE SHA256HEX"
	}{
		{"download", func(proxy, web, _ string) []string {
			return []string{"--socks5", proxy, "-o", "-", "http://" + web + "/blob"}
		}, false},
		{"upload", func(proxy, _, port string) []string {
			return []string{"--socks5-hostname", proxy, "-T", upload, "http://localhost:" + port + "/upload"}
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			web, results := bulkServer(t, data)
			_, port, _ := net.SplitHostPort(web)
			addr, _ := startSluice(t)
			args := append([]string{"-sS", "--fail", "--noproxy", "", "--max-time", "40"}, tc.args(addr, web, port)...)
			cmd := exec.Command(curl, args...)
			h := sha256.New() // what curl received
			if !tc.put {
				cmd.Stdout = h
			}
			r := runClient(t, "curl", 50*time.Second, cmd)
			clientSum := [32]byte(h.Sum(nil))
			if tc.put {
				if got, wantOut := r.stdout.String(), fmt.Sprintf("%d %x", bulkBytes, want); got != wantOut {
					r.fatalf(t, "upload: the server answered %q, want %q", got, wantOut)
				}
				clientSum = want // curl sent the file, written from data
			}
			var srv bulkResult
			select {
			case srv = <-results:
			case <-time.After(10 * time.Second): // safety net only
				r.fatalf(t, "%s: the server never finished the request", tc.name)
			}
			if srv.err != nil || srv.n != bulkBytes || clientSum != want || srv.sum != want {
				r.fatalf(t, "%s: the server moved %d bytes (err %v); SHA-256 client %x, server %x; want %d bytes, %x",
					tc.name, srv.n, srv.err, clientSum, srv.sum, bulkBytes, want)
			}
		})
	}
}
