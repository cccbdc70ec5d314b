package bench

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// TestRRCancelExchanges: a run of long sessions (--exchanges) stopped
// early, as SIGINT stops one, ends within an exchange per worker, with no
// error. The echo target stops it once it has echoed 200 messages, and
// cuts any connection that goes on for 1,000 more after that. The build
// before made every exchange of the connection under way (up to
// MaxExchanges, minutes on a slow relay), so the target cut them and the
// run counted the cuts as errors.
func TestRRCancelExchanges(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var echoed, after atomic.Int64
	target := serveEach(t, func(c net.Conn) {
		b := make([]byte, 64)
		for late := 0; ; {
			n, err := c.Read(b)
			if err != nil {
				return
			}
			if ctx.Err() != nil {
				after.Add(1)
				if late++; late > 1000 {
					return
				}
			}
			if _, err := c.Write(b[:n]); err != nil {
				return
			}
			if echoed.Add(1) == 200 {
				cancel()
			}
		}
	})
	const workers = 2
	r, err := RR(ctx, RROptions{Client: Client{Duration: time.Minute}, Target: target, Workers: workers,
		Exchanges: MaxExchanges})
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors.Total() != 0 || after.Load() > workers {
		t.Fatalf("%d messages after the stop, errors %+v; want at most %d, no error", after.Load(), r.Errors, workers)
	}
}
