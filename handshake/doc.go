// Package handshake implements the SOCKS5 wire format on the server side:
// the greeting and method selection (RFC 1928), username/password
// authentication (RFC 1929), the request, and the replies.
//
// Negotiate runs the whole exchange up to the request on a connection,
// answering the method and authentication steps itself, and returns the
// parsed Request. Its success path does not allocate: frames are parsed in
// place in a pooled Buffer, and the Request aliases that Buffer until it is
// released. Bytes a client pipelines after its request come back in
// Request.Rest. The pure Parse* functions and Append* encoders expose each
// frame on its own, for fuzzing and for clients.
//
// The package leaves everything past the wire format to its caller: it does
// not dial, apply policy, relay data or log. The caller dials the target,
// then answers with WriteReply on success or WriteError on failure, which
// maps any error to its reply code (ReplyFor) or stays silent where the RFC
// says to close. With Config.Coalesce, Negotiate holds back the answers a
// pipelining client does not wait for, and Request.WriteReply and
// Request.WriteError send them in the same write as the reply.
//
//	b := handshake.GetBuffer()
//	req, err := handshake.Negotiate(conn, b, &handshake.Config{Credentials: users})
//	// dial req.Addr, forward req.Rest, b.Release(), then WriteReply or WriteError
package handshake
