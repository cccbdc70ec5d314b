package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"sluice/handshake"
)

// scrape fetches /metrics and parses it as Prometheus text.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v", err)
	}
	return mfs
}

// value returns the value of the sample of family name whose labels are
// the given name=value pairs (a histogram gives its count); -1 if none.
func value(mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	mf := mfs[name]
	if mf == nil {
		return -1
	}
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// TestMetrics runs sessions of each kind and checks the scraped values,
// and the naming conventions of every family.
func TestMetrics(t *testing.T) {
	t.Parallel()
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	target := echo.Addr().(*net.TCPAddr)
	uecho, _ := udpEcho(t, "udp4", "127.0.0.1:0")
	udenied, _ := udpEcho(t, "udp4", "127.0.0.1:0")
	deniedPort := closedPort(t)
	cfg := writeConfig(t, fmt.Sprintf("[[rule]]\naction = \"deny\"\nports = [\"%d\", \"%d\"]\n",
		int(deniedPort[0])<<8|int(deniedPort[1]), udenied.LocalAddr().(*net.UDPAddr).Port))
	addr, inst := startSluice(t, "--config", cfg, "--metrics", "127.0.0.1:0", "--max-sessions", "3")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	maddr, err := serveMetrics(ctx, "127.0.0.1:0", inst.srv.metrics, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}

	for range 2 { // two sessions, 5 bytes each way
		c := connectRaw(t, addr, target)
		mustWrite(t, c, []byte("12345"))
		expect(t, c, []byte("12345"))
		c.Close()
	}
	_, rep := request(t, addr, handshake.CmdConnect, handshake.AddrFromAddrPort(
		netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(deniedPort[0])<<8|uint16(deniedPort[1]))))
	if rep != 0x02 {
		t.Fatalf("denied CONNECT: REP %#02x", rep)
	}
	c, relayAddr := associateUDP(t, addr)
	u := udpClient(t, "127.0.0.1", relayAddr)
	denied := handshake.AddrFromAddrPort(udenied.LocalAddr().(*net.UDPAddr).AddrPort())
	u.Write(append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{Addr: denied}), "no"...))
	allowed := handshake.AddrFromAddrPort(uecho.LocalAddr().(*net.UDPAddr).AddrPort())
	roundTrip(t, u, allowed, []byte("yes"), allowed.AddrPort())
	// Counted as they leave: the association still runs.
	var udpNow [4]float64
	if !waitFor(10*time.Second, func() bool {
		mfs := scrape(t, maddr)
		for i, f := range []string{"sluice_udp_datagrams_total", "sluice_udp_relayed_bytes_total"} {
			udpNow[2*i], udpNow[2*i+1] = value(mfs, f, "direction", "up"), value(mfs, f, "direction", "down")
		}
		return udpNow == [4]float64{1, 1, 3, 3}
	}) {
		t.Errorf("during the association: UDP datagrams up, down, bytes up, down = %v, want [1 1 3 3]", udpNow)
	}
	c.Close()
	if !waitFor(10*time.Second, func() bool { return inst.srv.limits.active.Load() == 0 }) {
		t.Fatal("sessions did not end")
	}
	held := []*net.TCPConn{dialSluice(t, addr), dialSluice(t, addr), dialSluice(t, addr)}
	if !waitFor(10*time.Second, func() bool { return inst.srv.limits.active.Load() == 3 }) {
		t.Fatal("held sessions not admitted")
	}
	over := dialSluice(t, addr)
	expectClosed(t, over)
	for _, h := range held {
		h.Close()
	}

	var mfs map[string]*dto.MetricFamily
	waitFor(10*time.Second, func() bool {
		mfs = scrape(t, maddr)
		return value(mfs, "sluice_sessions_total", "command", "none", "reply", "none") == 3
	})
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"sluice_sessions_total", []string{"command", "connect", "reply", "succeeded"}, 2},
		{"sluice_sessions_total", []string{"command", "connect", "reply", "not_allowed"}, 1},
		{"sluice_sessions_total", []string{"command", "udp_associate", "reply", "succeeded"}, 1},
		{"sluice_sessions_total", []string{"command", "none", "reply", "none"}, 3},
		{"sluice_sessions_active", []string{"command", "connect"}, 0},
		{"sluice_relayed_bytes_total", []string{"direction", "up"}, 10},
		{"sluice_relayed_bytes_total", []string{"direction", "down"}, 10},
		{"sluice_refused_total", []string{"reason", "destination_rule"}, 1},
		{"sluice_refused_total", []string{"reason", "max_sessions"}, 1},
		{"sluice_connections_accepted_total", nil, 8},
		{"sluice_udp_datagrams_total", []string{"direction", "up"}, 1},
		{"sluice_udp_datagrams_total", []string{"direction", "down"}, 1},
		{"sluice_udp_relayed_bytes_total", []string{"direction", "up"}, 3},
		{"sluice_udp_relayed_bytes_total", []string{"direction", "down"}, 3},
		{"sluice_udp_datagrams_dropped_total", []string{"reason", "not_allowed"}, 1},
		{"sluice_udp_datagrams_dropped_total", []string{"reason", "unresolved"}, 0},
		{"sluice_dial_duration_seconds", nil, 2},
		{"sluice_handshake_duration_seconds", nil, 4},
		{"sluice_accept_errors_total", nil, 0},
	}
	for _, ch := range checks {
		if got := value(mfs, ch.name, ch.labels...); got != ch.want {
			t.Errorf("%s%v = %v, want %v", ch.name, ch.labels, got, ch.want)
		}
	}
	paths := value(mfs, "sluice_relay_sessions_total", "path", "splice") + value(mfs, "sluice_relay_sessions_total", "path", "copy") +
		value(mfs, "sluice_relay_sessions_total", "path", "fallback")
	if paths != 2 {
		t.Errorf("sluice_relay_sessions_total over paths = %v, want 2", paths)
	}
	// The process's and the Go runtime's standard families are there too.
	if value(mfs, "process_open_fds") < 2 || value(mfs, "process_max_fds") < 1 || value(mfs, "go_goroutines") < 1 {
		t.Errorf("process_open_fds %v, process_max_fds %v, go_goroutines %v; want the process's figures",
			value(mfs, "process_open_fds"), value(mfs, "process_max_fds"), value(mfs, "go_goroutines"))
	}
	for name, mf := range mfs {
		if strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "go_") {
			continue // the client library's standard names
		}
		ok := strings.HasPrefix(name, "sluice_")
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			ok = ok && strings.HasSuffix(name, "_total")
		case dto.MetricType_HISTOGRAM:
			ok = ok && strings.HasSuffix(name, "_seconds")
		}
		if !ok {
			t.Errorf("metric %s (%v) breaks the naming conventions", name, mf.GetType())
		}
	}
}

// TestAccessLog checks the one line per session, and that --access-log=false
// turns it off.
func TestAccessLog(t *testing.T) {
	t.Parallel()
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	target := echo.Addr().(*net.TCPAddr)
	var on, off syncBuffer
	addr, _ := startSluiceLog(t, &on)
	quiet, quietInst := startSluiceLog(t, &off, "--access-log=false")
	for _, a := range []string{addr, quiet} {
		c := connectRaw(t, a, target)
		mustWrite(t, c, []byte("12345"))
		expect(t, c, []byte("12345"))
		c.Close()
	}
	want := []string{"msg=session", "client=127.0.0.1:", "user=\"\"", "cmd=connect", "target=" + target.String(),
		"reply=succeeded", "up_bytes=5", "down_bytes=5", "duration="}
	var line string
	waitFor(10*time.Second, func() bool {
		for _, l := range strings.Split(on.String(), "\n") {
			if strings.Contains(l, "msg=session") {
				line = l
			}
		}
		return line != ""
	})
	for _, w := range want {
		if !strings.Contains(line, w) {
			t.Errorf("access line %q lacks %q", line, w)
		}
	}
	waitFor(10*time.Second, func() bool { return quietInst.srv.limits.active.Load() == 0 }) // its session ended
	if strings.Contains(off.String(), "msg=session") {
		t.Errorf("--access-log=false logged a session: %s", off.String())
	}
}

// connectPipelined sends greeting, a CONNECT to target and ahead in one
// write, as a client that pipelines does, and reads sluice's two answers.
func connectPipelined(t *testing.T, addr string, target *net.TCPAddr, ahead []byte) *net.TCPConn {
	t.Helper()
	c := dialSluice(t, addr)
	req := append([]byte{5, 1, 0, 5, 1, 0, 1}, target.IP.To4()...)
	req = binary.BigEndian.AppendUint16(req, uint16(target.Port))
	mustWrite(t, c, append(req, ahead...))
	expect(t, c, []byte{5, 0})
	if rep, _ := readReply(t, c); rep != 0 {
		t.Fatalf("REP %#02x", rep)
	}
	return c
}

// TestPipelinedBytesCounted: bytes a client sends in the same write as its
// request reach the target ahead of the relay and count in the session's
// up_bytes all the same, on the bare-socket path and through package net.
// Before, the 3 pipelined bytes went uncounted: up_bytes=2.
func TestPipelinedBytesCounted(t *testing.T) {
	t.Parallel()
	target := echoServer(t, "tcp", "127.0.0.1:0").Addr().(*net.TCPAddr)
	for name, flags := range map[string][]string{"bare": nil, "net-sockets": {"--net-sockets"}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var log syncBuffer
			addr, inst := startSluiceLog(t, &log, flags...)
			c := connectPipelined(t, addr, target, []byte("abc"))
			expect(t, c, []byte("abc"))
			mustWrite(t, c, []byte("de"))
			expect(t, c, []byte("de"))
			c.Close()
			if !waitFor(10*time.Second, func() bool {
				return inst.srv.limits.active.Load() == 0 && strings.Contains(log.String(), "msg=session")
			}) {
				t.Fatalf("session did not end; log:\n%s", log.String())
			}
			for _, w := range []string{"up_bytes=5 ", "down_bytes=5 "} {
				if !strings.Contains(log.String(), w) {
					t.Errorf("access line lacks %q:\n%s", w, log.String())
				}
			}
		})
	}
}

// TestRelayedBytesLive: sluice_relayed_bytes_total counts a session's bytes
// as they move, not when it ends: with the session still open, a scrape
// finds the bytes the client pipelined behind its request and those it sent
// later, and their echo, once the client read it back; after the session
// ends the counts stay where they were (nothing counted twice). On each
// path: the event loops with bare sockets, package net's sockets, the
// goroutine path, and read/write.
func TestRelayedBytesLive(t *testing.T) {
	t.Parallel()
	target := echoServer(t, "tcp", "127.0.0.1:0").Addr().(*net.TCPAddr)
	for name, flags := range map[string][]string{"bare": nil, "net-sockets": {"--net-sockets"},
		"goroutines": {"--loops=-1"}, "no-splice": {"--no-splice"}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			addr, inst := startSluice(t, append([]string{"--metrics", "127.0.0.1:0"}, flags...)...)
			maddr, err := serveMetrics(t.Context(), "127.0.0.1:0", inst.srv.metrics, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			c := connectPipelined(t, addr, target, []byte("abc"))
			// counts waits until a scrape shows n bytes each way and
			// active connect sessions.
			counts := func(n float64, active float64) {
				t.Helper()
				var up, down, act float64
				if !waitFor(10*time.Second, func() bool {
					mfs := scrape(t, maddr)
					up, down = value(mfs, "sluice_relayed_bytes_total", "direction", "up"), value(mfs, "sluice_relayed_bytes_total", "direction", "down")
					act = value(mfs, "sluice_sessions_active", "command", "connect")
					return up == n && down == n && act == active
				}) {
					t.Fatalf("sluice_relayed_bytes_total up %v, down %v, sluice_sessions_active %v; want %v, %v, %v", up, down, act, n, n, active)
				}
			}
			expect(t, c, []byte("abc")) // the pipelined bytes' echo
			counts(3, 1)
			sent := make(chan error, 1)
			go func() {
				_, err := c.Write(make([]byte, 200_000)) // more than the sockets hold: the echo is read meanwhile
				sent <- err
			}()
			if _, err := io.CopyN(io.Discard, c, 200_000); err != nil {
				t.Fatal(err)
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			counts(200_003, 1)
			c.Close()
			counts(200_003, 0)
		})
	}
}

// TestLogDroppedMetric: the lines a log writer drops while stderr is stuck
// show in sluice_log_lines_dropped_total, read from the writer at each
// scrape; a server whose logger drops nothing reports 0.
func TestLogDroppedMetric(t *testing.T) {
	t.Parallel()
	w := &stuckWriter{started: make(chan struct{}, 16), release: make(chan struct{})}
	w.armed.Store(true)
	lw := newLogWriter(w, 1000, nil)
	t.Cleanup(func() {
		w.armed.Store(false)
		close(w.release)
		lw.close(10 * time.Second)
	})
	lw.Write([]byte("first\n")) // the writer takes it and blocks in w.Write
	select {
	case <-w.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the first line never reached the writer")
	}
	line := bytes.Repeat([]byte("x"), 99)
	for range 10 + 7 { // 10 lines fill the 1,000 bytes, 7 are dropped
		lw.Write(append(line, '\n'))
	}
	var log syncBuffer
	_, inst := startSluiceConfig(t, func(cfg *config) { cfg.logWriter = lw }, &log, "--metrics", "127.0.0.1:0")
	_, quiet := startSluice(t, "--metrics", "127.0.0.1:0")
	for _, tc := range []struct {
		inst *instance
		want float64
	}{{inst, 7}, {quiet, 0}} {
		maddr, err := serveMetrics(t.Context(), "127.0.0.1:0", tc.inst.srv.metrics, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		mfs := scrape(t, maddr)
		if _, ok := mfs["sluice_log_lines_dropped_total"]; !ok {
			t.Fatal("no sluice_log_lines_dropped_total")
		}
		if got := value(mfs, "sluice_log_lines_dropped_total"); got != tc.want {
			t.Errorf("sluice_log_lines_dropped_total = %v, want %v", got, tc.want)
		}
	}
}

// TestMetricsServerTimeouts: the metrics server closes a keep-alive
// connection that sends nothing after its scrape, and one whose request
// announces a body that never comes, once their limit (cut to 300 ms here)
// has passed, where it used to hold each, and its descriptor, for ever.
func TestMetricsServerTimeouts(t *testing.T) {
	t.Parallel()
	const limit = 300 * time.Millisecond
	_, inst := startSluice(t, "--metrics", "127.0.0.1:0")
	inst.srv.metrics.scrapeLimit = limit
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	maddr, err := serveMetrics(t.Context(), "127.0.0.1:0", inst.srv.metrics, quiet)
	if err != nil {
		t.Fatal(err)
	}
	daddr, err := serveDebug("127.0.0.1:0", limit, quiet) // lives as long as the test binary
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, addr, req string
		answered        bool
	}{
		{"idle", maddr, "GET /metrics HTTP/1.1\r\nHost: sluice\r\n\r\n", true},
		{"silent-body", maddr, "GET /metrics HTTP/1.1\r\nHost: sluice\r\nContent-Length: 100\r\n\r\n", false},
		{"debug-idle", daddr, "GET /debug/pprof/cmdline HTTP/1.1\r\nHost: sluice\r\n\r\n", true},
		{"debug-silent-body", daddr, "GET /debug/pprof/ HTTP/1.1\r\nHost: sluice\r\nContent-Length: 100\r\n\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := net.DialTimeout("tcp", tc.addr, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			mustWrite(t, c, []byte(tc.req))
			c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound far past the limit
			br := bufio.NewReader(c)
			if tc.answered {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || resp.Close {
					t.Fatalf("scrape: %s, close %v, body %v; want 200 on a kept-alive connection", resp.Status, resp.Close, err)
				}
			}
			start := time.Now()
			if _, err := io.Copy(io.Discard, br); err != nil { // <- EOF: the server closed it
				t.Fatalf("connection still open %v after the request, limit %v: %v", time.Since(start).Round(time.Millisecond), limit, err)
			}
			t.Logf("closed by the server %v after the request", time.Since(start).Round(time.Millisecond))
		})
	}
}

// TestUDPReplyLostCountsNone: a UDP ASSOCIATE whose client resets its
// control connection before the success reply could be written got no
// reply, so its access line and sluice_sessions_total say reply none, as
// for a CONNECT or BIND whose reply write failed; before, both said
// succeeded. The reset lands before the reply for most of the attempts
// (the reply goes out only after two UDP sockets are opened); an
// association whose reply did leave first is a success.
func TestUDPReplyLostCountsNone(t *testing.T) {
	t.Parallel()
	for name, flags := range map[string][]string{"bare": nil, "net-sockets": {"--net-sockets"}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var log syncBuffer
			addr, inst := startSluiceLog(t, &log, append([]string{"--metrics", "127.0.0.1:0"}, flags...)...)
			maddr, err := serveMetrics(t.Context(), "127.0.0.1:0", inst.srv.metrics, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			zero := handshake.AddrFromAddrPort(netip.AddrPortFrom(netip.IPv4Unspecified(), 0))
			const n = 20
			for range n {
				c := dialSluice(t, addr)
				mustWrite(t, c, handshake.AppendRequest([]byte{5, 1, 0}, handshake.CmdUDPAssociate, zero))
				c.SetLinger(0)
				c.Close() // a reset
			}
			var lines []string
			if !waitFor(10*time.Second, func() bool {
				lines = lines[:0]
				for _, l := range strings.Split(log.String(), "\n") {
					if strings.Contains(l, "msg=session") {
						lines = append(lines, l)
					}
				}
				return inst.srv.limits.active.Load() == 0 && len(lines) == n
			}) {
				t.Fatalf("%d of %d sessions logged:\n%s", len(lines), n, log.String())
			}
			lost := 0
			for _, l := range lines {
				if !strings.Contains(l, `err="handshake: reply:`) {
					continue
				}
				lost++
				if !strings.Contains(l, "reply=none ") {
					t.Errorf("association whose reply was not written, logged as: %s", l)
				}
			}
			if lost == 0 {
				t.Fatal("no reset landed before a reply in 20 tries (19 or 20 do on loopback): nothing checked")
			}
			mfs := scrape(t, maddr)
			if got := value(mfs, "sluice_sessions_total", "command", "udp_associate", "reply", "none"); got != float64(lost) {
				t.Errorf("sluice_sessions_total{udp_associate,none} = %v, want %d (the reply writes that failed)", got, lost)
			}
			if got := value(mfs, "sluice_sessions_total", "command", "udp_associate", "reply", "succeeded"); got != float64(n-lost) && !(got == -1 && lost == n) {
				t.Errorf("sluice_sessions_total{udp_associate,succeeded} = %v, want %d", got, n-lost)
			}
		})
	}
}
