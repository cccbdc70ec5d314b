package relay

import (
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// watchdogs hands each goroutine-path session's watchdog to the test that
// registered the session's client conn (watchdogsOf).
var watchdogs sync.Map // *net.TCPConn -> chan *watchdog

func init() {
	testHookWatchdog = func(w *watchdog) {
		if ch, ok := watchdogs.Load(w.s.client); ok {
			ch.(chan *watchdog) <- w
		}
	}
}

// watchdogsOf returns the channel on which the watchdog of the session
// relaying client comes, once it starts.
func watchdogsOf(t *testing.T, client *net.TCPConn) chan *watchdog {
	ch := make(chan *watchdog, 1)
	watchdogs.Store(client, ch)
	t.Cleanup(func() { watchdogs.Delete(client) })
	return ch
}

// waitProgress waits until w's session has moved n bytes as its watchdog
// counts them, and returns the count.
func waitProgress(t *testing.T, w *watchdog, n int64) int64 {
	t.Helper()
	for end := time.Now().Add(safety); ; runtime.Gosched() {
		if p := w.s.halves[0].progress.Load() + w.s.halves[1].progress.Load(); p >= n {
			return p
		}
		if time.Now().After(end) {
			t.Fatalf("the watchdog counts %d bytes moved; want %d", w.s.halves[0].progress.Load()+w.s.halves[1].progress.Load(), n)
		}
	}
}
