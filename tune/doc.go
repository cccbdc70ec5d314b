// Package tune builds TCP listeners and dialers with the socket options a
// bare-metal operator reaches for: socket buffers, Nagle, keepalive,
// TCP_USER_TIMEOUT, congestion control, TCP_NOTSENT_LOWAT, SO_MARK, fast open,
// TCP_DEFER_ACCEPT, delayed ACKs from a connection's first byte (SmartAccept)
// and for the last ACK of a dial's handshake (SmartConnect), a source
// address, port range or interface for dials, several
// SO_REUSEPORT listeners per address, and optional CPU steering among them.
// It also pins threads to CPUs and raises RLIMIT_NOFILE.
//
// Options set on a listening socket are inherited by the sockets it accepts,
// so they cost one setsockopt per listener rather than one per connection;
// ApplyClient sets only the rest. MPTCP is turned off on every socket, since
// splice on an MPTCP socket falls back to copying.
//
// The package reads no flags and no environment and never logs: the caller
// maps its flags onto Options, calls Probe once to learn which options the
// kernel or its privileges refuse, and reports those. It runs no accept loops,
// speaks no SOCKS and moves no bytes. Outside Linux, listeners and dialers
// keep package net's keepalive and Nagle handling, every other option is
// refused with errors.ErrUnsupported, and CPUs, PinThread, RaiseNoFile and
// AttachCPUSteering return it.
//
//	o, refused := tune.Options{Listeners: 4, Client: tune.SockOpts{Congestion: "bbr"}}.Probe()
//	ls, err := o.Listen(ctx, "0.0.0.0:1080") // one accept loop per listener, ApplyClient per conn
//	up, err := o.Dialer().DialContext(ctx, "tcp", target) // then ApplyUpstream
//	fd, err := o.DialFd(ctx, addrPort) // Linux: the same options on a bare socket, outside package net
//	fd, err := o.DialFdLate(ctx, addrPort, nil) // the same without keepalive; o.ArmKeepAlive(fd) once it lives on
//
// Listeners set TCP_NODELAY (unless Client.Nagle) for their accepted sockets
// to inherit, so a socket accepted outside package net needs only
// ApplyClientFd.
package tune
