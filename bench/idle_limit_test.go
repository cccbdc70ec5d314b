package bench

import (
	"context"
	"testing"
	"time"
)

// TestIdleHoldCutByLimit: a hold that the run's limit (MaxDuration for
// Idle) cuts short is not a run stopped early: the sessions held until then
// are still checked, and alive. The build before treated the limit's end as
// SIGINT's, so that --hold 10m (which the limit always cuts, opening having
// taken some of it) reported 0 alive sessions, and no error, whatever the
// relay had done with them.
func TestIdleHoldCutByLimit(t *testing.T) {
	t.Parallel()
	const limit = 200 * time.Millisecond // cuts the hold of a minute
	o := IdleOptions{Target: startTarget(t, Echo, 0), Sessions: 4, Openers: 2, Hold: time.Minute}
	r, err := o.run(context.Background(), limit)
	if err != nil {
		t.Fatal(err)
	}
	if r.Open != 4 || r.Alive != 4 || r.Errors.Total() != 0 {
		t.Fatalf("%d open, %d alive after a hold of %.3f s, errors %+v; want 4 open and alive, no error",
			r.Open, r.Alive, r.HoldSeconds, r.Errors)
	}
}
