package relay

import (
	"sync/atomic"
	"time"
)

// watchdog ends a session in which no byte moved for a whole period. It costs
// one timer per session, re-armed once per period, and no work per read.
type watchdog struct {
	s     *session
	every time.Duration
	last  atomic.Int64 // bytes moved both ways at the previous check
	timer atomic.Pointer[time.Timer]
}

func startWatchdog(s *session, every time.Duration) *watchdog {
	w := &watchdog{s: s, every: every}
	s.halves[0].watched = true
	s.halves[1].watched = true
	w.timer.Store(time.AfterFunc(every, w.check))
	if h := testHookWatchdog; h != nil {
		h(w)
	}
	return w
}

// testHookWatchdog, when a test sets it, is called with each session's
// watchdog as it starts, so that the test can make its checks itself.
var testHookWatchdog func(*watchdog)

// check runs once per period in the timer's goroutine: it aborts the session
// when the byte count has not moved since the previous check, and re-arms
// itself otherwise. Once the session ended (session.end) it does neither:
// both are decided under s.mu.
func (w *watchdog) check() {
	now := w.s.halves[0].progress.Load() + w.s.halves[1].progress.Load()
	if now == w.last.Swap(now) {
		w.s.abortOutside(causeIdle)
		return
	}
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if t := w.timer.Load(); t != nil && !w.s.over {
		t.Reset(w.every)
	}
}

// stop stops the timer; called once the session ended (session.end), which
// makes a check that is running, or runs late, neither re-arm nor abort.
func (w *watchdog) stop() {
	if t := w.timer.Load(); t != nil {
		t.Stop()
	}
}
