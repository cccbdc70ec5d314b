package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"sluice/handshake"
	"sluice/relay"
	"sluice/tune"
)

// server holds what every session needs. It is built once by run and never
// changed afterwards, so sessions read it without locks.
type server struct {
	hs               handshake.Config
	tune             *tune.Options
	dialer           *net.Dialer
	relay            *relay.Relay
	log              *slog.Logger
	handshakeTimeout time.Duration
	bindTimeout      time.Duration // negative: BIND off
	udpIdleTimeout   time.Duration // negative: UDP ASSOCIATE off; 0: no idle timeout
	sessions         sync.WaitGroup
}

// acceptLoop accepts connections on l until l is closed. Accept errors such
// as EMFILE never end it: it backs off (5 ms doubling to 1 s) and logs at most
// once a second, so a full fd table neither kills the server nor spins a CPU.
// Each accepted connection adds one to accepted.
func (s *server) acceptLoop(ctx context.Context, l *net.TCPListener, cpu int, accepted *atomic.Int64) {
	if cpu >= 0 {
		if err := tune.PinThread(cpu); err != nil {
			s.log.Warn("cannot pin accept loop", "listener", l.Addr().String(), "cpu", cpu, "err", err)
		}
	}
	var delay time.Duration
	var lastLog time.Time
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			if now := time.Now(); now.Sub(lastLog) >= time.Second {
				lastLog = now
				s.log.Error("accept failed; backing off", "listener", l.Addr().String(), "err", err, "backoff", delay)
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		accepted.Add(1)
		s.sessions.Add(1)
		go s.serveConn(ctx, c)
	}
}

// serveConn runs one session: handshake, dial, reply, relay. It owns c and,
// once dialled, the upstream conn, and closes both.
func (s *server) serveConn(ctx context.Context, c *net.TCPConn) {
	defer s.sessions.Done()
	defer c.Close()
	start := time.Now()
	if err := s.tune.ApplyClient(c); err != nil {
		s.log.Debug("client socket options", "client", c.RemoteAddr().String(), "err", err)
	}
	if s.handshakeTimeout > 0 {
		c.SetDeadline(start.Add(s.handshakeTimeout))
	}
	b := handshake.GetBuffer()
	req, err := handshake.Negotiate(c, b, &s.hs)
	if err != nil {
		b.Release()
		s.reject(c, err)
		return
	}
	user, target := string(req.User), req.Addr.String()
	var up *net.TCPConn
	switch req.Cmd {
	case handshake.CmdConnect:
		up, err = s.dial(ctx, req.Addr)
		if err == nil {
			err = handshake.WriteReply(c, handshake.Succeeded, localAddrPort(up))
			if err != nil {
				err = errReplied{err}
			}
		}
	case handshake.CmdBind:
		if s.bindTimeout < 0 {
			err = handshake.ErrCommandNotSupported
			break
		}
		c.SetDeadline(time.Time{}) // bind has its own timeout
		up, err = s.bind(ctx, c, req.Addr)
	case handshake.CmdUDPAssociate:
		if s.udpIdleTimeout < 0 {
			err = handshake.ErrCommandNotSupported
			break
		}
		addr := req.Addr // copied: b is released before the association ends
		if addr.Type == handshake.AddrDomain {
			addr.Name = nil
		}
		b.Release()
		st, err := s.associate(ctx, c, addr)
		s.logAssociation(ctx, c, user, target, st, err, start)
		if err != nil && !errors.As(err, new(errReplied)) {
			s.reject(c, err, "user", user, "cmd", "udp", "target", target)
		}
		return
	default:
		err = handshake.ErrCommandNotSupported
	}
	if err == nil && len(req.Rest) > 0 {
		// Bytes the client pipelined after its request go first, in order.
		if _, err = up.Write(req.Rest); err != nil {
			err = errReplied{err} // the success reply is out: no other reply now
		}
	}
	b.Release() // req aliases b: not used past here
	if err != nil {
		if up != nil {
			up.Close()
		}
		if errors.As(err, new(errReplied)) {
			s.log.Debug("session failed after reply", "client", c.RemoteAddr().String(), "cmd", req.Cmd.String(), "target", target, "err", err)
			return
		}
		s.reject(c, err, "user", user, "cmd", req.Cmd.String(), "target", target)
		return
	}
	defer up.Close()
	c.SetDeadline(time.Time{})
	st, err := s.relay.Pipe(ctx, c, up)
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.Debug("session", "client", c.RemoteAddr().String(), "user", user, "cmd", req.Cmd.String(),
			"target", target, "up_bytes", st.ClientToUpstream, "down_bytes", st.UpstreamToClient,
			"spliced", st.Spliced, "duration", time.Since(start), "err", err)
	}
}

// logAssociation logs the end of a UDP association at debug level.
func (s *server) logAssociation(ctx context.Context, c *net.TCPConn, user, target string, st relay.DatagramStats, err error, start time.Time) {
	if !s.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	s.log.Debug("session", "client", c.RemoteAddr().String(), "user", user, "cmd", "udp", "target", target,
		"datagrams_up", st.FromClient, "datagrams_down", st.ToClient, "up_bytes", st.FromClientBytes,
		"down_bytes", st.ToClientBytes, "dropped_stranger", st.Dropped[relay.DropStranger],
		"dropped_fragment", st.Dropped[relay.DropFragment], "dropped_other", st.Dropped[relay.DropMalformed]+
			st.Dropped[relay.DropUnresolved]+st.Dropped[relay.DropNoClient]+st.Dropped[relay.DropSendFailed],
		"duration", time.Since(start), "err", err)
}

// reject answers a failed handshake or dial with the reply the RFC asks for
// (or none, where it says close) and logs it.
func (s *server) reject(c *net.TCPConn, err error, attrs ...any) {
	werr := handshake.WriteError(c, err)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		attrs = append(attrs, "client", c.RemoteAddr().String(), "reply", handshake.ReplyFor(err).String(), "err", err)
		if werr != nil {
			attrs = append(attrs, "reply_err", werr)
		}
		s.log.Debug("rejected", attrs...)
	}
}

// dial connects to the request's target with the tuned dialer. Domain names
// are resolved by the dialer.
func (s *server) dial(ctx context.Context, a handshake.Addr) (*net.TCPConn, error) {
	var buf [300]byte
	addr := string(a.AppendTo(buf[:0]))
	c, err := s.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	if err := s.tune.ApplyUpstream(tc); err != nil {
		s.log.Debug("upstream socket options", "target", addr, "err", err)
	}
	return tc, nil
}

// localAddrPort is the upstream socket's own address, sent as BND in the
// success reply.
func localAddrPort(c *net.TCPConn) netip.AddrPort {
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
		return a.AddrPort()
	}
	return netip.AddrPort{}
}
