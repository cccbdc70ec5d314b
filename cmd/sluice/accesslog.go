package main

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"sluice/relay"
)

// accessLine holds an access log line's attributes and the text of its
// addresses, so that a line written through the process's own logger
// allocates nothing: the attributes reach the handler as one group with an
// empty key, which slog writes inline, exactly as the same attributes given
// one by one (past the five a slog.Record keeps inline, those would be
// copied to the heap), and the address strings point into text instead of
// being allocated.
//
// A line comes from accessLines and goes back there once written when the
// server's logger is its own (server.logBlocks false): slog's text or JSON
// handler over a logWriter, which format a record within Handle and keep
// nothing of it. A logger handed to start may keep a record (a test's
// handler collecting them), so there each line is allocated and left to the
// garbage collector, its strings never overwritten.
type accessLine struct {
	attrs [13]slog.Attr
	n     int
	text  [384]byte // client and target; a domain name is at most 255 bytes
	used  int
}

var accessLines = sync.Pool{New: func() any { return new(accessLine) }}

// newLine returns an empty line, from the pool if pooled.
func newLine(pooled bool) *accessLine {
	if !pooled {
		return new(accessLine)
	}
	return accessLines.Get().(*accessLine)
}

// write hands l's attributes to h as a record of msg at info level and
// gives l back to the pool if pooled.
func (l *accessLine) write(h slog.Handler, msg string, now time.Time, pooled bool) {
	r := slog.NewRecord(now, slog.LevelInfo, msg, 0) // pc 0: no runtime.Callers; the handlers add no source
	r.AddAttrs(slog.Attr{Value: slog.GroupValue(l.attrs[:l.n]...)})
	_ = h.Handle(context.Background(), r)
	if pooled {
		clear(l.attrs[:l.n]) // let go of what they point at
		l.n, l.used = 0, 0
		accessLines.Put(l)
	}
}

func (l *accessLine) add(a slog.Attr) {
	l.attrs[l.n] = a
	l.n++
}

// addText adds key with the text appended by f to l's own bytes, a string
// that aliases them (until l is reused).
func (l *accessLine) addText(key string, f func([]byte) []byte) {
	b := f(l.text[l.used:l.used])
	if len(b) <= len(l.text)-l.used {
		l.used += len(b) // in place; past the end, append moved it, and the string keeps the copy alive
	}
	l.add(slog.String(key, unsafe.String(unsafe.SliceData(b), len(b))))
}

// addClient adds the client's address as the logs write it (peerString).
func (l *accessLine) addClient(c *client) {
	p := c.peer
	if c.tc != nil {
		if a, ok := c.tc.RemoteAddr().(*net.TCPAddr); ok {
			p = a.AddrPort()
		}
	}
	l.addPeer(p)
}

func (l *accessLine) addPeer(p netip.AddrPort) {
	p = netip.AddrPortFrom(p.Addr().Unmap(), p.Port())
	l.addText("client", p.AppendTo)
}

// logsEnabled reports whether the access log is on and s's logger writes
// info lines.
func (s *server) logsEnabled(lv *live) bool {
	return lv.accessLog && s.log.Handler().Enabled(context.Background(), slog.LevelInfo)
}

// accessLog writes the one line of a session, when the access log is on.
func (s *server) accessLog(lv *live, c *client, user, cmd string, target dest, rep int, up, down int64, start time.Time, err error) {
	if !s.logsEnabled(lv) {
		return
	}
	if s.logBlocks {
		c.handOn() // the line may block: not on the accept loop
	}
	l := newLine(!s.logBlocks)
	l.sessionAttrs(c, user, cmd, target, replyLabels[rep], up, down)
	now := time.Now()
	l.add(slog.Duration("duration", now.Sub(start)))
	l.addErr(err)
	l.write(s.log.Handler(), "session", now, !s.logBlocks)
}

// udpLog writes the line of a UDP association that ended after its reply.
// denied, the datagrams the destination rules refused, is its own field and
// not in dropped (relay counted them as DropUnresolved), as the metrics
// count it apart (metrics.udpUnresolved).
func (s *server) udpLog(lv *live, c *client, user string, target dest, st relay.DatagramStats, denied int64, start time.Time, err error) {
	if !s.logsEnabled(lv) {
		return
	}
	l := newLine(!s.logBlocks)
	l.sessionAttrs(c, user, cmdLabels[cmdLabelUDP], target, "succeeded", st.FromClientBytes, st.ToClientBytes)
	l.add(slog.Int64("datagrams_up", st.FromClient))
	l.add(slog.Int64("datagrams_down", st.ToClient))
	// Never negative: denied counts what Decode refused for the rules,
	// each one a DropUnresolved that relay counted before Datagrams
	// returned, and no drop count ever goes down.
	l.add(slog.Int64("dropped", sumDrops(st)-denied))
	l.add(slog.Int64("denied", denied))
	now := time.Now()
	l.add(slog.Duration("duration", now.Sub(start)))
	l.addErr(err)
	l.write(s.log.Handler(), "session", now, !s.logBlocks)
}

func (l *accessLine) sessionAttrs(c *client, user, cmd string, target dest, reply string, up, down int64) {
	l.addClient(c)
	l.add(slog.String("user", user))
	l.add(slog.String("cmd", cmd))
	if target.addr.Type == 0 {
		l.add(slog.String("target", ""))
	} else {
		l.addText("target", target.addr.AppendTo)
	}
	l.add(slog.String("reply", reply))
	l.add(slog.Int64("up_bytes", up))
	l.add(slog.Int64("down_bytes", down))
}

// addErr adds err as a string: slog's text handler would format an error
// value with fmt.Sprintf("%+v"), an allocation that gives the same text for
// errors that do not format themselves, which none of sluice's do (its JSON
// handler writes err.Error() either way).
func (l *accessLine) addErr(err error) {
	if err != nil {
		l.add(slog.String("err", err.Error()))
	}
}

// logRefused writes the access log line of a client refused for why; a
// pooled line only where log formats it within the call and keeps nothing
// (see accessLine).
func logRefused(log *slog.Logger, client netip.AddrPort, why refusal, pooled bool) {
	h := log.Handler()
	if !h.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	l := newLine(pooled)
	l.addPeer(client)
	l.add(slog.String("reason", why.String()))
	l.write(h, "refused", time.Now(), pooled)
}
