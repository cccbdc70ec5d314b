//go:build linux

package relay

import "golang.org/x/sys/unix"

// abortLocked ends f from outside the loop goroutine, l.mu held: with err,
// or with its context's error when err is nil.
func (l *loop) abortLocked(f *flow, err error) {
	l.aborted = append(l.aborted, abortion{f, err})
	l.kick()
}

// A watch ends a loop's flows when their context ends: one
// context.AfterFunc per loop and Done channel, shared by every flow of the
// loop whose context ends with that channel, where one per flow would
// allocate twice per session and take the context's lock for each. A
// server's sessions share a context (one per listener in sluice), so its
// loops register it once and keep it while any session lives, and after
// that too, idle, for the context's next session: up to maxIdleWatches
// per loop, so that contexts of a session each (which a caller may pass)
// are let go. Its fields are guarded by l.mu.
type watch struct {
	n    int         // flows of the loop on it, not yet unlinked
	stop func() bool // the AfterFunc's
}

const maxIdleWatches = 4

// abortWatch is w's callback: the context behind ch ended, and so do the
// flows on w.
func (l *loop) abortWatch(ch <-chan struct{}, w *watch) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.watches[ch] == w {
		if w.n == 0 {
			l.idleW--
		}
		delete(l.watches, ch) // a flow added from now on registers afresh, and its AfterFunc fires at once
	}
	for _, f := range l.flows {
		if f.watch == w {
			l.aborted = append(l.aborted, abortion{f, nil})
		}
	}
	l.kick()
}

// unwatch takes f off its watch, under l.mu, and returns the watch's stop
// when f was its last flow and the loop keeps maxIdleWatches idle ones
// already (the caller calls it after l.mu is released).
func (l *loop) unwatch(f *flow) func() bool {
	w := f.watch
	if w == nil {
		return nil
	}
	f.watch = nil
	if w.n--; w.n > 0 || l.watches[f.doneCh] != w {
		return nil // flows left, or the context ended (abortWatch took it out)
	}
	if l.idleW < maxIdleWatches {
		l.idleW++ // kept for the context's next session
		return nil
	}
	delete(l.watches, f.doneCh)
	return w.stop
}

// abortion is a flow ended from outside: its registration's failure, which
// fails it (err), or its context's end (err nil).
type abortion struct {
	f   *flow
	err error
}

// takeAborts drains the wake eventfd and ends the flows aborted from outside.
func (l *loop) takeAborts() {
	var buf [8]byte
	unix.Read(l.wake, buf[:])
	l.mu.Lock()
	aborted := l.aborted
	l.aborted = nil
	l.mu.Unlock()
	if l.mature != nil && l.nextRipe == 0 {
		l.ripen() // a flow may have come to wait for mature
	}
	for _, a := range aborted {
		if a.f.ended {
			continue
		}
		if a.err != nil {
			// The loop failed the session (its registration): both
			// streams are cut short, and their peers are reset.
			l.fail(a.f, a.err)
			continue
		}
		l.finish(a.f, a.f.ctx.Err())
	}
}
