package main

// Interop tests: each case drives a freshly started sluice with a real,
// widely used SOCKS5 client (curl, proxychains4 with iperf3, PySocks,
// headless Chromium, ncat) against a local target on loopback. A missing
// client skips its case with a reason, or fails it when
// SLUICE_REQUIRE_CLIENTS=1.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
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
	"sync/atomic"
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

// startIperf3Server starts a one-off iperf3 server on a free port of
// 127.0.0.1 and returns the port once it listens. It is killed in
// t.Cleanup if the test ends before its client does.
func startIperf3Server(t *testing.T, iperf3 string) string {
	t.Helper()
	// The port is picked by a throwaway listener, so another process may take
	// it before iperf3 binds; a bounded number of retries covers that.
	for try := 0; ; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(l.Addr().String())
		l.Close()
		cmd := exec.Command(iperf3, "-s", "-1", "-B", "127.0.0.1", "-p", port, "--forceflush")
		t.Logf("iperf3 server: %s", commandLine(cmd))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			t.Fatalf("%s: %v", commandLine(cmd), err)
		}
		exited := make(chan struct{})
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
		})
		listening := make(chan bool, 1)
		var seen bytes.Buffer // read only after exited closes
		go waitIperf3Listening(cmd, out, &seen, listening, exited)
		var ok bool
		select {
		case ok = <-listening:
		case <-time.After(10 * time.Second): // safety net only
			t.Fatalf("%s: not listening after 10s", commandLine(cmd))
		}
		if ok {
			return port
		}
		<-exited
		if try < 3 && strings.Contains(seen.String(), "in use") {
			continue
		}
		t.Fatalf("%s exited before listening; output %q", commandLine(cmd), seen.String())
	}
}

// waitIperf3Listening reads an iperf3 server's output, reports on listening
// whether it said it listens (false if it ended first), keeps draining its
// output into seen, reaps the process and closes exited.
func waitIperf3Listening(cmd *exec.Cmd, out io.Reader, seen *bytes.Buffer, listening chan<- bool, exited chan<- struct{}) {
	defer close(exited)
	sc := bufio.NewScanner(out)
	reported := false
	for sc.Scan() {
		seen.Write(append(sc.Bytes(), '\n'))
		if !reported && strings.Contains(sc.Text(), "Server listening on") {
			listening <- true
			reported = true
		}
	}
	cmd.Wait()
	if !reported {
		listening <- false
	}
}

// writeProxychainsConf writes a proxychains4 configuration that sends
// every TCP connection, loopback included (no localnet line), through the
// SOCKS5 proxy at addr, and resolves names locally (no proxy_dns).
func writeProxychainsConf(t *testing.T, addr string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf("strict_chain\nquiet_mode\ntcp_read_time_out 15000\ntcp_connect_time_out 8000\n[ProxyList]\nsocks5 %s %s\n", host, port)
	p := filepath.Join(t.TempDir(), "proxychains.conf")
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestIperf3Proxychains runs iperf3 through sluice with proxychains4, in
// both directions: its control connection and its data connection must all
// pass through the proxy, and the test must report nonzero throughput.
func TestIperf3Proxychains(t *testing.T) {
	t.Parallel()
	proxychains := needClient(t, "proxychains4")
	iperf3 := needClient(t, "iperf3")
	cases := []struct {
		name  string
		extra []string
	}{
		{"client-sends", nil},
		{"reverse", []string{"-R"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr, inst := startSluice(t)
			port := startIperf3Server(t, iperf3)
			args := append([]string{"-q", "-f", writeProxychainsConf(t, addr), iperf3, "-c", "127.0.0.1", "-p", port, "-t", "2", "--json"}, tc.extra...)
			r := runClient(t, "proxychains4 + iperf3", 30*time.Second, exec.Command(proxychains, args...))
			var res struct {
				Error string
				End   struct {
					SumReceived struct {
						Bytes         int64   `json:"bytes"`
						BitsPerSecond float64 `json:"bits_per_second"`
					} `json:"sum_received"`
				} `json:"end"`
			}
			if err := json.Unmarshal(r.stdout.Bytes(), &res); err != nil {
				r.fatalf(t, "%s: the output is not its JSON report: %v", tc.name, err)
			}
			got := res.End.SumReceived
			if res.Error != "" || got.Bytes <= 0 || got.BitsPerSecond <= 0 {
				r.fatalf(t, "%s: error %q, received %d bytes at %.0f bit/s; want no error and nonzero throughput", tc.name, res.Error, got.Bytes, got.BitsPerSecond)
			}
			// One control connection and at least one data connection.
			if n := inst.accepted[0].Load(); n < 2 {
				r.fatalf(t, "%s: sluice accepted %d connections, want >= 2 (control and data)", tc.name, n)
			}
			t.Logf("iperf3 %s through sluice: %.2f Gbit/s", tc.name, got.BitsPerSecond/1e9)
		})
	}
}

// needPySocks returns the python3 that has PySocks (the system one when it
// exists: the Debian package installs the module for it), or skips (fails
// with SLUICE_REQUIRE_CLIENTS=1) when there is none.
func needPySocks(t *testing.T) string {
	t.Helper()
	name := "python3"
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		name = "/usr/bin/python3"
	}
	py := needClient(t, name)
	if out, err := exec.Command(py, "-c", "import socks").CombinedOutput(); err != nil {
		if os.Getenv("SLUICE_REQUIRE_CLIENTS") == "1" {
			t.Fatalf("%s cannot import socks (PySocks) and SLUICE_REQUIRE_CLIENTS=1: %v %s", py, err, out)
		}
		t.Skipf("%s cannot import socks: PySocks (python3-socks) not installed: %v %s", py, err, out)
	}
	return py
}

// TestPySocks drives sluice with PySocks: a TCP CONNECT echo, and UDP
// ASSOCIATE echoes to an IPv4 and a domain destination.
func TestPySocks(t *testing.T) {
	t.Parallel()
	py := needPySocks(t)
	script, err := filepath.Abs(filepath.Join("testdata", "pysocks_echo.py"))
	if err != nil {
		t.Fatal(err)
	}
	tcpEcho := echoServer(t, "tcp4", "127.0.0.1:0").Addr().(*net.TCPAddr).AddrPort()
	udpConn, _ := udpEcho(t, "udp4", "127.0.0.1:0")
	udpEchoAddr := udpConn.LocalAddr().(*net.UDPAddr).AddrPort()
	cases := []struct {
		name, mode, host string
		port             uint16
		wantFrom         any // the datagram's source as PySocks reports it
	}{
		{"tcp-connect", "tcp", "127.0.0.1", tcpEcho.Port(), nil},
		{"udp-ipv4", "udp", "127.0.0.1", udpEchoAddr.Port(), []any{"127.0.0.1", float64(udpEchoAddr.Port())}},
		{"udp-domain", "udp", "localhost", udpEchoAddr.Port(), []any{"127.0.0.1", float64(udpEchoAddr.Port())}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr, _ := startSluice(t)
			host, port, _ := net.SplitHostPort(addr)
			payload := "pysocks " + tc.name + " through sluice"
			cmd := exec.Command(py, script, tc.mode, host, port, tc.host, strconv.Itoa(int(tc.port)), payload)
			r := runClient(t, "PySocks", 20*time.Second, cmd)
			var got struct {
				Data string
				From any
			}
			if err := json.Unmarshal(r.stdout.Bytes(), &got); err != nil {
				r.fatalf(t, "%s: output is not the script's JSON: %v", tc.name, err)
			}
			if got.Data != payload || fmt.Sprint(got.From) != fmt.Sprint(tc.wantFrom) {
				r.fatalf(t, "%s: echo %q from %v, want %q from %v", tc.name, got.Data, got.From, payload, tc.wantFrom)
			}
		})
	}
}

// chromiumSourceIP is the source address sluice dials from in TestChromium:
// a request that came through sluice is told from a direct one by its peer.
const chromiumSourceIP = "127.0.0.3"

// peerCount counts a server's requests by whether they came through sluice.
type peerCount struct{ viaSluice, direct atomic.Int64 }

// count records r by its peer address.
func (p *peerCount) count(r *http.Request) {
	if host, _, _ := net.SplitHostPort(r.RemoteAddr); host == chromiumSourceIP {
		p.viaSluice.Add(1)
	} else {
		p.direct.Add(1)
	}
}

// String reports the counts for a failure message.
func (p *peerCount) String() string {
	return fmt.Sprintf("%d through sluice, %d direct", p.viaSluice.Load(), p.direct.Load())
}

// TestChromium loads a page through sluice with headless Chromium; a script
// from a second host name rewrites the page, and the DOM dump must show it.
// Every request to both servers must have come through sluice.
func TestChromium(t *testing.T) {
	t.Parallel()
	chromium := needClient(t, "chromium")
	const marker = "rewritten by a script fetched from localhost through sluice"
	var page, script peerCount
	scriptHost := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		script.count(r)
		w.Header().Set("Content-Type", "text/javascript")
		fmt.Fprintf(w, "document.getElementById('status').textContent = %q;\n", marker)
	})
	_, scriptPort, _ := net.SplitHostPort(scriptHost)
	pageHost := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		page.count(r)
		if r.URL.Path != "/" {
			http.NotFound(w, r) // favicon.ico
			return
		}
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, "<!DOCTYPE html><html><body><p id=\"status\">not rewritten</p>"+
			"<script src=\"http://localhost:%s/x.js\"></script></body></html>", scriptPort)
	})
	addr, _ := startSluice(t, "--source-addr", chromiumSourceIP)
	dir := t.TempDir()
	cmd := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
		"--user-data-dir="+filepath.Join(dir, "profile"),
		"--proxy-server=socks5://"+addr,
		"--proxy-bypass-list=<-loopback>", // Chromium bypasses any proxy for loopback unless told not to
		"--dump-dom", "http://"+pageHost+"/")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir, "XDG_CACHE_HOME="+dir)
	r := runClient(t, "chromium", 45*time.Second, cmd)
	if !strings.Contains(r.stdout.String(), marker) {
		r.fatalf(t, "the DOM dump lacks %q (page requests: %v; script requests: %v)", marker, &page, &script)
	}
	if page.viaSluice.Load() == 0 || script.viaSluice.Load() == 0 || page.direct.Load()+script.direct.Load() != 0 {
		r.fatalf(t, "page requests: %v; script requests: %v; want all through sluice (from %s)", &page, &script, chromiumSourceIP)
	}
}

// serveHTTP serves handler on a fresh 127.0.0.1 port and returns its address.
func serveHTTP(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// TestNcatHalfClose sends a payload through sluice with ncat, whose stdin
// then ends: ncat half-closes, the target reads to EOF, answers and closes,
// and ncat's stdout must be exactly that answer.
func TestNcatHalfClose(t *testing.T) {
	t.Parallel()
	ncat := needClient(t, "ncat")
	payload := bytes.Repeat([]byte("ncat to target, then EOF\n"), 40000) // ~1 MB
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	received := make(chan targetRead, 1)
	go serveReadThenReply(l.(*net.TCPListener), received)
	addr, _ := startSluice(t)
	_, targetPort, _ := net.SplitHostPort(l.Addr().String())
	cmd := exec.Command(ncat, "--proxy", addr, "--proxy-type", "socks5", "127.0.0.1", targetPort)
	cmd.Stdin = bytes.NewReader(payload)
	r := runClient(t, "ncat", 20*time.Second, cmd)
	var tr targetRead
	select {
	case tr = <-received:
	case <-time.After(5 * time.Second): // safety net only
		r.fatalf(t, "the target never finished reading")
	}
	if tr.err != nil || !bytes.Equal(tr.got, payload) {
		r.fatalf(t, "the target read %d bytes (err %v), want the %d-byte payload, then EOF", len(tr.got), tr.err, len(payload))
	}
	if want := ncatReply(tr.got); r.stdout.String() != want {
		r.fatalf(t, "stdout is not the target's reply %q", want)
	}
}

// ncatReply is what the target of TestNcatHalfClose answers after EOF.
func ncatReply(got []byte) string {
	return fmt.Sprintf("target read %d bytes to EOF, sha256 %x\n", len(got), sha256.Sum256(got))
}

// targetRead is what the target of TestNcatHalfClose read before EOF, or
// the error that ended its read (or its accept).
type targetRead struct {
	got []byte
	err error
}

// serveReadThenReply accepts one connection on l, reads it to EOF, reports
// what it read on received, answers with ncatReply and closes.
func serveReadThenReply(l *net.TCPListener, received chan<- targetRead) {
	c, err := l.AcceptTCP()
	if err != nil {
		received <- targetRead{err: fmt.Errorf("accept: %w", err)}
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second)) // safety net only
	got, err := io.ReadAll(c)
	received <- targetRead{got, err}
	if err == nil {
		io.WriteString(c, ncatReply(got)) // a failed write shows in ncat's output
	}
}
