package bench

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestRRLatencyBeforeClose: a connection's latency runs from the start of
// its connect to its last echo's last byte, as RRResult.Latency says, and
// not on through the close that follows. On loopback close runs the FIN's
// delivery to the peer in the caller's system call (9 µs at the median, 67
// at p99 here, beside 106 and 284 µs for connect, echo and all), which the
// build before added to every latency. Here the first close of the run
// takes a second, far more than any connect and echo on loopback: no
// latency may hold it.
func TestRRLatencyBeforeClose(t *testing.T) {
	t.Parallel()
	const slow = time.Second
	first := true
	o := RROptions{Client: Client{Duration: 50 * time.Millisecond}, Target: startTarget(t, Echo, 0), Workers: 1,
		closeConn: func(c *net.TCPConn) error {
			if first { // one worker: no other goroutine closes
				first = false
				time.Sleep(slow) // the workload: a slow close, not synchronisation
			}
			return c.Close()
		}}
	r, err := RR(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Conns == 0 || r.Errors.Total() != 0 {
		t.Fatalf("%d connections, errors %+v", r.Conns, r.Errors)
	}
	if max := time.Duration(r.Latency.Max * float64(time.Microsecond)); max >= slow {
		t.Errorf("max latency %v over %d connections: it holds the close of %v", max, r.Conns, slow)
	}
}
