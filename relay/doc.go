// Package relay moves bytes between two TCP connections, both directions at
// once, half-close aware. On Linux it moves them with splice(2) through kernel
// pipes, so payload never enters user space; elsewhere, and when the kernel
// refuses splice for a socket (an MPTCP socket on older kernels, for one), it
// copies through a pooled buffer.
//
// Pipes are taken on demand, as HAProxy does: a session that has nothing to
// move holds no pipe, only its two sockets. A pipe is taken from the Relay's
// bounded pool when data arrives and given back once it is drained and the
// source would block, so thousands of idle sessions cost no pipe descriptors.
//
// On Linux a Relay runs its sessions on event loops, four per P by default:
// each loop registers a session's two sockets once, edge-triggered, in an
// epoll instance of its own, waits on that instance through the runtime
// poller, and splices wherever a socket is ready. A session costs no
// goroutine and no stack while it lives, only a small struct and its sockets.
// A turn gives each direction at most 16 splice calls, so that bulk
// transfers do not starve the interactive sessions of their loop. With
// ForceCopy or negative Loops, after Close, where splice is refused, and
// elsewhere than Linux, a session runs on two goroutines, one per direction.
// A direction that waits for room at its destination reads nothing
// meanwhile, and the other may wait on that same socket, or have finished:
// from its first such wait, its source is watched for a reset in one epoll
// instance that the Relay shares among such directions, made for the first
// and closed after the last (Linux).
//
// A reset is passed on as a reset. When a session ends because one of its
// connections failed, each socket whose peer's stream is cut short (the
// direction toward it had not passed its FIN on) is left with SO_LINGER 0,
// so that its close, the relay's or the caller's, resets that peer instead
// of passing the cut stream for a whole one with a FIN; so is one toward
// which a session that the context or the idle timeout ended drops bytes
// the relay acknowledged. A direction that
// holds bytes its destination does not take when its source resets drops
// them and ends the session at once, unless the source's FIN came before
// the reset (the stream is whole): it then passes them on, and the FIN; so
// does the other direction, whose FIN meets that reset socket (there is
// nothing more to tell its peer, which sent all it had).
//
// Datagrams relays a UDP association between a client-facing and an
// upstream-facing socket; a Codec supplied by the caller reads and writes
// the client's datagram header. On Linux it reads with recvmmsg into pooled
// buffers held only while datagrams wait, and relays without allocating.
//
// The package knows nothing of SOCKS or any other protocol. It leaves to the
// caller dialling, closing both connections, logging and metrics: Pipe
// half-closes (CloseWrite) the conns it is given but never closes them, and
// reports what moved in Stats. With Options.TakeSockets, Start instead takes
// the sockets of a session that goes to an event loop out of package net
// (duplicated descriptors, the conns closed) and closes them itself, so that
// an idle session holds nothing of package net or the runtime poller.
// StartFds takes sockets that never were in package net (bare descriptors
// from a raw accept4 and tune.Options.DialFd) and closes them itself, and
// StartFdConn a bare client with a dialled *net.TCPConn upstream; their
// plain path wraps the descriptors with FileConn, which keeps their socket
// options. StartFdsIn is StartFds for a caller that keeps each session in a
// struct of its own: a Session embedded there holds the relay's state for
// it and the struct, as an Ender, is told of the end, so that starting a
// session allocates nothing.
//
// Use:
//
//	r := relay.New(relay.Options{IdleTimeout: 5 * time.Minute})
//	defer r.Close()
//	st, err := r.Pipe(ctx, client, upstream) // the caller then closes client and upstream
//
// or, without a goroutine waiting on the session:
//
//	r.Start(ctx, client, upstream, func(st relay.Stats, err error) {
//		client.Close() // done runs on an event loop: account, close, never block
//		upstream.Close()
//	})
package relay
