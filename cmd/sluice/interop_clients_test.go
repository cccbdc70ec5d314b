package main

// Interop tests: each case drives a freshly started sluice with a real,
// widely used SOCKS5 client (curl, proxychains4 with iperf3, PySocks,
// headless Chromium, ncat, OpenBSD netcat) against a local target on
// loopback. A missing client skips its case with a reason, or fails it when
// SLUICE_REQUIRE_CLIENTS=1.

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	checkReadThenReply(t, r, received, payload)
}

// checkReadThenReply checks a client run r against serveReadThenReply's
// target: the target read exactly payload, then EOF, and the client's
// stdout is exactly the target's answer.
func checkReadThenReply(t *testing.T, r *clientRun, received <-chan targetRead, payload []byte) {
	t.Helper()
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

// TestNetcatOpenBSD drives sluice with OpenBSD netcat's SOCKS5 client
// (nc -X 5 -x), the ProxyCommand ssh users write into their configuration:
// a payload to an IPv4, an IPv6 and a named target (nc sends the name,
// sluice resolves it), half-closed after stdin's EOF (-N), and the target's
// answer exactly on stdout. Against --users, which this nc cannot speak, a
// refusal nc understands: it exits non-zero, and no connection reaches the
// target.
func TestNetcatOpenBSD(t *testing.T) {
	t.Parallel()
	nc := needClient(t, "nc.openbsd")
	payload := bytes.Repeat([]byte("nc -X 5 to target, then EOF\n"), 20000) // ~560 KB
	var log syncBuffer
	addr, _ := startSluiceLog(t, &log)
	for _, tc := range []struct{ name, network, listen, host string }{
		{"ipv4", "tcp4", "127.0.0.1:0", "127.0.0.1"},
		{"ipv6", "tcp6", "[::1]:0", "::1"},
		{"name", "tcp4", "127.0.0.1:0", "localhost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, err := net.Listen(tc.network, tc.listen)
			if err != nil {
				t.Skipf("no %s loopback: %v", tc.network, err)
			}
			t.Cleanup(func() { l.Close() })
			received := make(chan targetRead, 1)
			go serveReadThenReply(l.(*net.TCPListener), received)
			_, port, _ := net.SplitHostPort(l.Addr().String())
			cmd := exec.Command(nc, "-N", "-X", "5", "-x", addr, tc.host, port)
			cmd.Stdin = bytes.NewReader(payload)
			r := runClient(t, "nc.openbsd", 20*time.Second, cmd)
			checkReadThenReply(t, r, received, payload)
			// The session's line says what nc asked for: the name itself, not an address.
			target := " target=" + net.JoinHostPort(tc.host, port) + " "
			if !waitFor(10*time.Second, func() bool { return strings.Contains(log.String(), target) }) {
				t.Errorf("no access line with%s; log:\n%s", target, log.String())
			}
		})
	}
	t.Run("users", func(t *testing.T) {
		t.Parallel()
		withAuth, _ := startSluice(t, "--users", writeUsers(t, "alice:s3cret\n"))
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		_, port, _ := net.SplitHostPort(l.Addr().String())
		var stderr bytes.Buffer
		cmd := exec.Command(nc, "-N", "-w", "10", "-X", "5", "-x", withAuth, "127.0.0.1", port)
		cmd.Stdin = strings.NewReader("never relayed\n")
		cmd.Stderr = &stderr
		err = cmd.Run()
		if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Fatalf("nc against --users: %v (stderr %q), want a non-zero exit", err, stderr.String())
		}
		t.Logf("nc: %v: %s", err, strings.TrimSpace(stderr.String()))
		l.(*net.TCPListener).SetDeadline(time.Now())
		if c, err := l.Accept(); err == nil {
			c.Close()
			t.Errorf("a connection reached the target from %v", c.RemoteAddr())
		}
	})
}
