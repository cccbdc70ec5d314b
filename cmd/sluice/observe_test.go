package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"sluice/handshake"
)

// sumFamily sums the samples of family name (a histogram: its counts).
func sumFamily(mfs map[string]*dto.MetricFamily, name string) float64 {
	var n float64
	for _, m := range mfs[name].GetMetric() {
		switch {
		case m.Counter != nil:
			n += m.Counter.GetValue()
		case m.Gauge != nil:
			n += m.Gauge.GetValue()
		case m.Histogram != nil:
			n += float64(m.Histogram.GetSampleCount())
		}
	}
	return n
}

// acceptRefusals is the refusals of clients at accept: those never
// counted as sessions.
func acceptRefusals(mfs map[string]*dto.MetricFamily) float64 {
	return value(mfs, "sluice_refused_total", "reason", "client_rule") + value(mfs, "sluice_refused_total", "reason", "max_sessions") +
		value(mfs, "sluice_refused_total", "reason", "max_sessions_per_ip")
}

// TestObserveAccounting runs a session down every path a session can
// end on (success, each failure reply, a handshake that fails, both of
// BIND's outcomes, UDP ASSOCIATE, a hand-over that fails, clients refused
// at accept, reloads between them, and sessions the drain ends) against one
// sluice whose log is its own (never blocks), and checks from real scrapes
// that every accepted connection is counted exactly once, as a session or a
// refusal, with one access line each, and that every gauge is back to 0.
func TestObserveAccounting(t *testing.T) {
	t.Parallel()
	for name, flags := range map[string][]string{"bare": nil, "net-sockets": {"--net-sockets"}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testAccounting(t, flags)
		})
	}
}

func testAccounting(t *testing.T, flags []string) {
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	target := echo.Addr().(*net.TCPAddr)
	closed := closedPort(t)
	dp := closedPort(t)
	deniedPort := int(dp[0])<<8 | int(dp[1])
	rules := writeConfig(t, fmt.Sprintf("[[rule]]\naction = \"deny\"\nports = [\"%d\"]\n", deniedPort))
	base := []string{"--listeners", "1", "--listen", "127.0.0.1:0", "--config", rules, "--metrics", "127.0.0.1:0", "--bind-timeout", "30s"}
	base = append(base, flags...)
	cfg, err := parseFlags(base, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.resolver = nxdomainResolver(t)
	var log syncBuffer
	lw := newLogWriter(&log, logBufferMax, nil)
	defer lw.close(time.Second)
	cfg.logWriter = lw // the process's own log: lines written on loops, pooled
	inst, err := start(context.Background(), cfg, newLogger(cfg, slog.LevelInfo, lw))
	if err != nil {
		t.Fatal(err)
	}
	down := false
	defer func() {
		if !down {
			inst.shutdown(5 * time.Second)
		}
	}()
	addr := inst.addrs()[0]
	maddr, err := serveMetrics(t.Context(), "127.0.0.1:0", inst.srv.metrics, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	reload := func(extra ...string) {
		t.Helper()
		next := inst.reload(append(base[:len(base):len(base)], extra...), cfg, nil)
		if next == cfg {
			t.Fatalf("reload with %q failed", extra)
		}
		cfg = next
	}
	ended := func(n int) { // sessions ended so far, as the limiter sees them
		t.Helper()
		if !waitFor(10*time.Second, func() bool { return inst.srv.limits.active.Load() == int64(n) }) {
			t.Fatalf("%d sessions live, want %d", inst.srv.limits.active.Load(), n)
		}
	}
	ip4 := func(port int) handshake.Addr {
		return handshake.AddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)))
	}

	want := map[[2]string]float64{} // command, reply
	// CONNECT, relayed.
	c := connectRaw(t, addr, target)
	mustWrite(t, c, []byte("12345"))
	expect(t, c, []byte("12345"))
	c.Close()
	want[[2]string{"connect", "succeeded"}]++
	// CONNECT refused by the target, by the rules; an unknown command.
	for _, x := range []struct {
		cmd  handshake.Command
		port int
		rep  byte
		key  [2]string
	}{
		{handshake.CmdConnect, int(closed[0])<<8 | int(closed[1]), 0x05, [2]string{"connect", "connection_refused"}},
		{handshake.CmdConnect, deniedPort, 0x02, [2]string{"connect", "not_allowed"}},
		{9, target.Port, 0x07, [2]string{"unknown", "command_not_supported"}},
	} {
		c, rep := request(t, addr, x.cmd, ip4(x.port))
		if rep != x.rep {
			t.Fatalf("%v: REP %#02x, want %#02x", x.key, rep, x.rep)
		}
		c.Close()
		want[x.key]++
	}
	// A greeting of another version: closed without a reply.
	c = dialSluice(t, addr)
	mustWrite(t, c, []byte{4, 1, 0})
	expectClosed(t, c)
	want[[2]string{"none", "none"}]++
	// BIND: a peer connects; then a client that leaves while it waits.
	bc, listening := bindRequest(t, addr, netip.MustParseAddr("127.0.0.1"))
	peer, err := net.Dial("tcp", listening.String())
	if err != nil {
		t.Fatal(err)
	}
	if rep, _ := readReply(t, bc); rep != 0 {
		t.Fatalf("BIND's second reply %#02x", rep)
	}
	mustWrite(t, peer, []byte("hi"))
	expect(t, bc, []byte("hi"))
	peer.Close()
	bc.Close()
	want[[2]string{"bind", "succeeded"}]++
	bc, _ = bindRequest(t, addr, netip.MustParseAddr("127.0.0.1"))
	bc.Close()
	want[[2]string{"bind", "none"}]++
	// UDP ASSOCIATE.
	uc, _ := associateUDP(t, addr)
	uc.Close()
	want[[2]string{"udp_associate", "succeeded"}]++
	ended(0)
	// A hand-over that fails after the success reply.
	refusedErr := error(fmt.Errorf("dup: %w", io.ErrClosedPipe))
	inst.srv.handOverErr.Store(&refusedErr)
	c = connectRaw(t, addr, target)
	expectClosed(t, c)
	inst.srv.handOverErr.Store(nil)
	want[[2]string{"connect", "succeeded"}]++
	ended(0)
	// Refused at accept, after reloads: a client rule, --max-sessions.
	reload("--client-default-policy", "deny")
	expectClosed(t, dialSluice(t, addr))
	reload("--max-sessions", "1")
	held := connectRaw(t, addr, target)
	expectClosed(t, dialSluice(t, addr))
	held.Close()
	want[[2]string{"connect", "succeeded"}]++
	ended(0)
	reload()
	// Live at the shutdown, which ends them: a relayed CONNECT, a BIND
	// waiting for its peer, a client in its handshake.
	live := connectRaw(t, addr, target)
	mustWrite(t, live, []byte("x"))
	expect(t, live, []byte("x"))
	want[[2]string{"connect", "succeeded"}]++
	bindRequest(t, addr, netip.MustParseAddr("127.0.0.1"))
	want[[2]string{"bind", "general_failure"}]++
	hs := dialSluice(t, addr)
	mustWrite(t, hs, []byte{5})
	want[[2]string{"none", "none"}]++
	ended(3)
	mfs := scrape(t, maddr)
	for _, cmd := range []string{"connect", "bind"} {
		if v := value(mfs, "sluice_sessions_active", "command", cmd); v != 1 {
			t.Errorf("during the drain: sluice_sessions_active{%s} = %v, want 1", cmd, v)
		}
	}
	inst.shutdown(0)
	down = true

	mfs = scrape(t, maddr)
	var sessions float64
	for k, n := range want {
		sessions += n
		if v := value(mfs, "sluice_sessions_total", "command", k[0], "reply", k[1]); v != n {
			t.Errorf("sluice_sessions_total{command=%q,reply=%q} = %v, want %v", k[0], k[1], v, n)
		}
	}
	if v := sumFamily(mfs, "sluice_sessions_total"); v != sessions {
		t.Errorf("sluice_sessions_total sums to %v, want %v", v, sessions)
	}
	if v := sumFamily(mfs, "sluice_sessions_active"); v != 0 {
		t.Errorf("sluice_sessions_active sums to %v after the drain, want 0", v)
	}
	refused := acceptRefusals(mfs)
	if refused != 2 {
		t.Errorf("refused at accept: %v, want 2", refused)
	}
	if v := value(mfs, "sluice_connections_accepted_total"); v != sessions+refused {
		t.Errorf("sluice_connections_accepted_total = %v, want %v sessions + %v refused", v, sessions, refused)
	}
	if v := value(mfs, "sluice_config_reloads_total", "result", "ok"); v != 3 {
		t.Errorf("sluice_config_reloads_total{ok} = %v, want 3", v)
	}
	if !lw.close(10 * time.Second) {
		t.Fatal("log not written out")
	}
	var lines, refusals int
	for l := range strings.Lines(log.String()) {
		lines += strings.Count(l, " msg=session ")
		refusals += strings.Count(l, " msg=refused ")
	}
	if float64(lines) != sessions || float64(refusals) != refused {
		t.Errorf("%d session lines and %d refusal lines, want %v and %v; log:\n%s", lines, refusals, sessions, refused, log.String())
	}
}

// TestObserveLogOneLine: a user name and a domain name from a client,
// with line breaks, quotes, '=', control characters and invalid UTF-8 in
// them, leave the access line one line, in text and JSON, with the field
// they were sent in holding them (escaped) and no field of their own.
func TestObserveLogOneLine(t *testing.T) {
	t.Parallel()
	const evil = "x\n" + `time=0 level=ERROR msg=forged reply="succeeded` + "\" \x00\x1b[2J\r\xff\xfe end"
	users := writeUsers(t, "alice:pw\n")
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			var log syncBuffer
			addr, _ := startOwnLog(t, &log, "--users", users, "--log-format", format)
			// A failed login as evil; a CONNECT to a domain named evil.
			c := dialSluice(t, addr)
			mustWrite(t, c, append([]byte{5, 1, 2}, userPass(evil, "wrong")...))
			expect(t, c, []byte{5, 2, 1, 1})
			expectClosed(t, c)
			c = dialSluice(t, addr)
			mustWrite(t, c, append(append([]byte{5, 1, 2}, userPass("alice", "pw")...),
				handshake.AppendRequest([]byte{5, 1, 0}, handshake.CmdConnect, domainAddr(evil, 80))[3:]...))
			expect(t, c, []byte{5, 2, 1, 0})
			if rep, _ := readReply(t, c); rep != byte(handshake.HostUnreachable) {
				t.Fatalf("CONNECT to an unresolvable name: REP %#02x", rep)
			}
			c.Close()
			var lines []string
			if !waitFor(10*time.Second, func() bool {
				lines = lines[:0]
				for l := range strings.Lines(log.String()) {
					if strings.Contains(l, "session") {
						lines = append(lines, l)
					}
				}
				return len(lines) >= 2
			}) {
				t.Fatalf("no two session lines; log:\n%s", log.String())
			}
			if len(lines) != 2 {
				t.Errorf("%d lines for 2 sessions; log:\n%s", len(lines), log.String())
			}
			for i, field := range []string{"user", "target"} {
				got := fieldOf(t, format, lines[i], field)
				if format == "json" {
					// JSON strings are UTF-8: invalid bytes become U+FFFD.
					if w := strings.ToValidUTF8(evil, "\uFFFD\uFFFD"); !strings.HasPrefix(got, w) {
						t.Errorf("%s = %q, want %q", field, got, w)
					}
				} else if !strings.HasPrefix(got, evil) {
					t.Errorf("%s = %q, want %q", field, got, evil)
				}
				if m := fieldOf(t, format, lines[i], "msg"); m != "session" {
					t.Errorf("msg = %q in %s", m, lines[i])
				}
			}
		})
	}
}

// startOwnLog starts sluice as run does, with its log through a logWriter
// (written to log) in the format its flags give, the access log pooled and
// written on the loops; it shuts down, and the log is written out, in
// t.Cleanup.
func startOwnLog(t *testing.T, log io.Writer, args ...string) (string, *instance) {
	t.Helper()
	cfg, err := parseFlags(append([]string{"--listeners", "1", "--listen", "127.0.0.1:0"}, args...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.resolver = nxdomainResolver(t)
	lw := newLogWriter(log, logBufferMax, nil)
	cfg.logWriter = lw
	inst, err := start(context.Background(), cfg, newLogger(cfg, slog.LevelInfo, lw))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.shutdown(5 * time.Second); lw.close(5 * time.Second) })
	return inst.addrs()[0], inst
}

// fieldOf parses line, a text (slog's key=value, values bare or Go-quoted)
// or JSON log line, and returns the value of key; it fails the test on a
// line that does not parse or that has a key twice.
func fieldOf(t *testing.T, format, line, key string) string {
	t.Helper()
	fields := map[string]string{}
	if format == "json" {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not one JSON object: %v: %q", err, line)
		}
		for k, v := range m {
			fields[k] = fmt.Sprint(v)
		}
		return fields[key]
	}
	rest := strings.TrimSuffix(line, "\n")
	for rest != "" {
		k, v, ok := strings.Cut(rest, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \"") {
			t.Fatalf("no key=value at %q in %q", rest, line)
		}
		if strings.HasPrefix(v, `"`) {
			q, err := strconv.QuotedPrefix(v)
			if err != nil {
				t.Fatalf("bad quoting at %q in %q", v, line)
			}
			rest = v[len(q):]
			v, _ = strconv.Unquote(q)
		} else {
			i := strings.IndexByte(v, ' ')
			if i < 0 {
				i = len(v)
			}
			v, rest = v[:i], v[i:]
		}
		if _, dup := fields[k]; dup {
			t.Fatalf("key %s twice in %q", k, line)
		}
		fields[k] = v
		if rest != "" && rest[0] != ' ' {
			t.Fatalf("no space after %s's value in %q", k, line)
		}
		rest = strings.TrimPrefix(rest, " ")
	}
	return fields[key]
}

// TestObserveLint: /metrics, scraped from a server that has served
// sessions, passes promlint, Prometheus' own checks of names, types, units
// and help.
func TestObserveLint(t *testing.T) {
	t.Parallel()
	_, inst := startSluice(t, "--metrics", "127.0.0.1:0")
	maddr, err := serveMetrics(t.Context(), "127.0.0.1:0", inst.srv.metrics, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + maddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	problems, err := promlint.New(resp.Body).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// gatedPacketConn holds each DNS query it reads until release is closed,
// and says on asked that one came.
type gatedPacketConn struct {
	net.PacketConn
	asked   chan<- struct{}
	release <-chan struct{}
}

func (g gatedPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := g.PacketConn.ReadFrom(b)
	if err == nil {
		select {
		case g.asked <- struct{}{}:
		default:
		}
		<-g.release
	}
	return n, from, err
}

// TestObserveBindFailAfterSecondReply: a BIND whose second reply,
// 0x00, went out and whose pipelined bytes then could not reach the peer
// (it reset the connection while sluice looked up DST.ADDR's name to check
// it: the DNS server holds the answer until it has) ends with the reply it
// got, succeeded, as a CONNECT that fails after its success reply does; it
// was logged and counted as reply none.
func TestObserveBindFailAfterSecondReply(t *testing.T) {
	t.Parallel()
	asked, release := make(chan struct{}, 1), make(chan struct{})
	r := loopbackResolver(t, func(pc net.PacketConn) {
		serveFixed(gatedPacketConn{pc, asked, release}, [4]byte{127, 0, 0, 1}, nil)
	})
	rules := writeConfig(t, "default-policy = \"deny\"\n[[rule]]\naction = \"allow\"\ncommands = [\"bind\"]\ndomains = [\"ftp.test\"]\n")
	var log syncBuffer
	addr, inst := startSluiceResolver(t, r, &log, "--config", rules, "--metrics", "127.0.0.1:0", "--bind-timeout", "1m")
	maddr, err := serveMetrics(t.Context(), "127.0.0.1:0", inst.srv.metrics, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	c := dialSluice(t, addr)
	mustWrite(t, c, append(handshake.AppendRequest([]byte{5, 1, 0}, handshake.CmdBind, domainAddr("ftp.test", 21)), "ahead"...))
	expect(t, c, []byte{5, 0})
	rep, bnd := readReply(t, c)
	if rep != 0 || len(bnd) != 6 {
		t.Fatalf("first reply REP %#02x BND %x", rep, bnd)
	}
	peer, err := net.DialTCP("tcp", nil, &net.TCPAddr{IP: net.IP(bnd[:4]), Port: int(bnd[4])<<8 | int(bnd[5])})
	if err != nil {
		t.Fatal(err)
	}
	<-asked // sluice holds the peer and checks it against ftp.test
	peer.SetLinger(0)
	peer.Close() // a reset: the write of "ahead" fails
	close(release)
	if rep, _ := readReply(t, c); rep != 0 {
		t.Fatalf("second reply REP %#02x, want 0x00", rep)
	}
	expectClosed(t, c)
	line := sessionLine(t, &log, c)
	if !strings.Contains(line, " reply=succeeded ") || !strings.Contains(line, " cmd=bind ") {
		t.Errorf("BIND that failed after its second reply, 0x00: want cmd=bind reply=succeeded in\n%s", line)
	}
	mfs := scrape(t, maddr)
	ok, none := value(mfs, "sluice_sessions_total", "command", "bind", "reply", "succeeded"), value(mfs, "sluice_sessions_total", "command", "bind", "reply", "none")
	if ok != 1 || none != 0 {
		t.Errorf("sluice_sessions_total{bind} succeeded %v, none %v; want 1, 0", ok, none)
	}
}
