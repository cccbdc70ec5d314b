package bench

import (
	"errors"
	"fmt"
	"net"
)

// ErrMismatch reports data that differs from what was sent or expected:
// a wrong echo, a source byte off the pattern, a sink count that disagrees.
var ErrMismatch = errors.New("bench: data mismatch")

// HandshakeError is a failure after the TCP connect to the proxy succeeded:
// a SOCKS5 answer other than success, or the proxy going away mid-handshake.
type HandshakeError struct {
	// Proxy is the proxy's address.
	Proxy string
	// Err is the cause, such as a *ReplyError or ErrAuthFailed.
	Err error
}

// Error describes the failure with the proxy's address.
func (e *HandshakeError) Error() string {
	return fmt.Sprintf("bench: socks handshake with %s: %v", e.Proxy, e.Err)
}

// Unwrap returns the cause.
func (e *HandshakeError) Unwrap() error { return e.Err }

// maxSamples is how many error messages a run keeps.
const maxSamples = 5

// Errors counts the failures of a run by kind and keeps the first messages.
type Errors struct {
	// Connect counts TCP connects that failed, to the proxy or the target.
	Connect int `json:"connect"`
	// Socks counts failed SOCKS5 handshakes, non-zero replies included.
	Socks int `json:"socks"`
	// Data counts mismatches: echo content, source pattern, sink byte counts.
	Data int `json:"data"`
	// IO counts other read and write failures during the run.
	IO int `json:"io"`
	// Samples holds the first few messages, for the report.
	Samples []string `json:"samples,omitempty"`
}

// Total returns the number of failures of every kind.
func (e *Errors) Total() int { return e.Connect + e.Socks + e.Data + e.IO }

// add counts err under its kind.
func (e *Errors) add(err error) {
	var he *HandshakeError
	var op *net.OpError
	switch {
	case errors.As(err, &he):
		e.Socks++
	case errors.Is(err, ErrMismatch):
		e.Data++
	case errors.As(err, &op) && op.Op == "dial":
		e.Connect++
	default:
		e.IO++
	}
	if len(e.Samples) < maxSamples {
		e.Samples = append(e.Samples, err.Error())
	}
}

// merge adds o's counts and samples to e.
func (e *Errors) merge(o *Errors) {
	e.Connect += o.Connect
	e.Socks += o.Socks
	e.Data += o.Data
	e.IO += o.IO
	for _, s := range o.Samples {
		if len(e.Samples) < maxSamples {
			e.Samples = append(e.Samples, s)
		}
	}
}
