package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"sluice/handshake"
	"sluice/relay"
)

// TestAccessLogLine: the lines accessLog, udpLog and logRefused write are,
// byte for byte but for the time, the lines slog writes for the same
// attributes given one by one (how they were written before they stopped
// allocating), in text and JSON, with the line pooled or not; and with the
// process's own logger a line allocates nothing.
func TestAccessLogLine(t *testing.T) {
	v4 := handshake.Addr{Type: handshake.AddrIPv4, IP: netip.MustParseAddr("10.1.2.3"), Port: 443}
	v6 := handshake.Addr{Type: handshake.AddrIPv6, IP: netip.MustParseAddr("2001:db8::7"), Port: 8080}
	name := handshake.Addr{Type: handshake.AddrDomain, Name: []byte("www.example.com"), Port: 80}
	long := handshake.Addr{Type: handshake.AddrDomain, Name: bytes.Repeat([]byte("a"), 255), Port: 65535}
	colon := handshake.Addr{Type: handshake.AddrDomain, Name: []byte("odd:name \"quoted\""), Port: 1}
	bare := &client{fd: -1, peer: netip.MustParseAddrPort("[::ffff:127.0.0.1]:41234")}
	zoned := &client{fd: -1, peer: netip.MustParseAddrPort("[fe80::1%eth0]:65535")}
	tc := &client{fd: -1, tc: dialSluice(t, echoServer(t, "tcp", "127.0.0.1:0").Addr().String())} // any package net socket
	udpStats := relay.DatagramStats{FromClient: 3, ToClient: 4, FromClientBytes: 300, ToClientBytes: 400}
	udpStats.Dropped[relay.DropUnresolved] = 3 // 2 of them denied: dropped=1 denied=2
	cases := []struct {
		name   string
		c      *client
		target dest
		user   string
		rep    int
		err    error
		udp    bool
	}{
		{"ipv4", bare, newDest(v4), "alice", int(handshake.Succeeded), nil, false},
		{"ipv6-zone", zoned, newDest(v6), "", int(handshake.ConnectionRefused), errors.New("dial: refused"), false},
		{"name", bare, newDest(name), "bob", int(handshake.Succeeded), nil, false},
		{"name-255", bare, newDest(long), "bob", int(handshake.Succeeded), nil, false},
		{"name-quoted", bare, newDest(colon), "b o=b", int(handshake.Succeeded), nil, false},
		{"no-target", bare, dest{}, "", replyNone, errors.New("handshake: malformed"), false},
		{"net-client", tc, newDest(v4), "", int(handshake.Succeeded), nil, false},
		{"udp", bare, newDest(v6), "carol", 0, nil, true},
	}
	start := time.Now().Add(-1500 * time.Millisecond)
	for _, format := range []string{"text", "json"} {
		for _, pooled := range []bool{true, false} {
			var got, want bytes.Buffer
			s := &server{log: newLogger(&config{logFormat: format}, slog.LevelInfo, &got), logBlocks: !pooled}
			ref := newLogger(&config{logFormat: format}, slog.LevelInfo, &want)
			lv := &live{accessLog: true}
			for _, tc := range cases {
				got.Reset()
				want.Reset()
				ctx := context.Background()
				attrs := []slog.Attr{slog.String("client", tc.c.addr()), slog.String("user", tc.user)}
				if tc.udp {
					s.udpLog(lv, tc.c, tc.user, tc.target, udpStats, 2, start, tc.err)
					attrs = append(attrs, slog.String("cmd", "udp_associate"), slog.String("target", tc.target.String()),
						slog.String("reply", "succeeded"), slog.Int64("up_bytes", 300), slog.Int64("down_bytes", 400),
						slog.Int64("datagrams_up", 3), slog.Int64("datagrams_down", 4), slog.Int64("dropped", 1), slog.Int64("denied", 2))
				} else {
					s.accessLog(lv, tc.c, tc.user, "connect", tc.target, tc.rep, 12, 34, start, tc.err)
					attrs = append(attrs, slog.String("cmd", "connect"), slog.String("target", tc.target.String()),
						slog.String("reply", replyLabels[tc.rep]), slog.Int64("up_bytes", 12), slog.Int64("down_bytes", 34))
				}
				d := durationOf(t, got.String())
				attrs = append(attrs, slog.Duration("duration", d))
				if tc.err != nil {
					attrs = append(attrs, slog.Any("err", tc.err))
				}
				ref.LogAttrs(ctx, slog.LevelInfo, "session", attrs...)
				if g, w := sansTime(got.String()), sansTime(want.String()); g != w {
					t.Errorf("%s pooled=%v %s:\n got %s\nwant %s", format, pooled, tc.name, g, w)
				}
				if d < 1500*time.Millisecond {
					t.Errorf("%s: duration %v, want at least 1.5s", tc.name, d)
				}
			}
			got.Reset()
			want.Reset()
			logRefused(s.log, zoned.peer, refMaxPerIP, pooled)
			ref.LogAttrs(context.Background(), slog.LevelInfo, "refused", slog.String("client", "[fe80::1%eth0]:65535"),
				slog.String("reason", refMaxPerIP.String()))
			if g, w := sansTime(got.String()), sansTime(want.String()); g != w {
				t.Errorf("%s pooled=%v refused:\n got %s\nwant %s", format, pooled, g, w)
			}
		}
	}

	if raceEnabled {
		return // the race detector's sync.Pool drops a share of what is put back
	}
	s := &server{log: newLogger(&config{}, slog.LevelInfo, io.Discard)}
	lv := &live{accessLog: true}
	target := newDest(name)
	failed := errors.New("relay: connection reset by peer")
	if n := testing.AllocsPerRun(1000, func() {
		s.accessLog(lv, bare, "alice", "connect", target, int(handshake.Succeeded), 1, 2, start, nil)
		s.accessLog(lv, bare, "", "connect", target, replyNone, 0, 0, start, failed)
		logRefused(s.log, bare.peer, refMaxSessions, true)
	}); n != 0 {
		t.Errorf("%v allocations per session line, failed session line and refusal line; want 0", n)
	}
}

// TestAccessLogLevel: with --log-level warn no access line is written.
func TestAccessLogLevel(t *testing.T) {
	var buf bytes.Buffer
	s := &server{log: newLogger(&config{}, slog.LevelWarn, &buf)}
	c := &client{fd: -1, peer: netip.MustParseAddrPort("127.0.0.1:1")}
	s.accessLog(&live{accessLog: true}, c, "", "connect", dest{}, replyNone, 0, 0, time.Now(), nil)
	logRefused(s.log, c.peer, refMaxSessions, true)
	if buf.Len() != 0 {
		t.Errorf("lines written at level warn: %q", buf.String())
	}
}

// sansTime cuts a line's time field, the one part two lines written apart
// differ in.
func sansTime(line string) string {
	if i := strings.Index(line, "level="); i >= 0 && strings.HasPrefix(line, "time=") {
		return line[i:]
	}
	if i := strings.Index(line, `"level":`); i >= 0 {
		return line[i:]
	}
	return line
}

// durationOf reads the duration a session line gives, in text or JSON.
func durationOf(t *testing.T, line string) time.Duration {
	t.Helper()
	if i := strings.Index(line, " duration="); i >= 0 {
		f := strings.Fields(line[i+len(" duration="):])
		d, err := time.ParseDuration(f[0])
		if err != nil {
			t.Fatalf("duration in %q: %v", line, err)
		}
		return d
	}
	if i := strings.Index(line, `"duration":`); i >= 0 {
		var ns int64
		rest := line[i+len(`"duration":`):]
		for _, r := range rest {
			if r < '0' || r > '9' {
				break
			}
			ns = ns*10 + int64(r-'0')
		}
		return time.Duration(ns)
	}
	t.Fatalf("no duration in %q", line)
	return 0
}

// BenchmarkAccessLog writes one session's access log line and one refused
// client's through the binary's own logger (slog's text or JSON handler,
// here over io.Discard): the work a session adds with --access-log on.
func BenchmarkAccessLog(b *testing.B) {
	peer := netip.MustParseAddrPort("[::ffff:127.0.0.1]:41234")
	targets := map[string]handshake.Addr{
		"ipv4":   {Type: handshake.AddrIPv4, IP: netip.MustParseAddr("10.1.2.3"), Port: 443},
		"domain": {Type: handshake.AddrDomain, Name: []byte("www.example.com"), Port: 443},
	}
	for _, format := range []string{"text", "json"} {
		for _, tn := range []string{"ipv4", "domain"} {
			b.Run(format+"/"+tn, func(b *testing.B) {
				s := &server{log: newLogger(&config{logFormat: format}, slog.LevelInfo, io.Discard)}
				lv := &live{accessLog: true}
				c := &client{fd: -1, peer: peer}
				target := newDest(targets[tn])
				start := time.Now()
				b.ReportAllocs()
				for b.Loop() {
					s.accessLog(lv, c, "alice", cmdLabels[cmdLabelConnect], target, int(handshake.Succeeded), 1234, 56789, start, nil)
				}
			})
		}
	}
	b.Run("refused", func(b *testing.B) {
		log := newLogger(&config{logFormat: "text"}, slog.LevelInfo, io.Discard)
		b.ReportAllocs()
		for b.Loop() {
			logRefused(log, peer, refMaxSessions, true)
		}
	})
	b.Run("text/error", func(b *testing.B) {
		s := &server{log: newLogger(&config{logFormat: "text"}, slog.LevelInfo, io.Discard)}
		c := &client{fd: -1, peer: peer}
		lv := &live{accessLog: true}
		err := errors.New("relay: connection reset by peer")
		b.ReportAllocs()
		for b.Loop() {
			s.accessLog(lv, c, "", cmdLabels[cmdLabelConnect], dest{}, replyNone, 0, 0, time.Now(), err)
		}
	})
}
