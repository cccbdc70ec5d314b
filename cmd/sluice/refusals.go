package main

import (
	"log/slog"
	"net/netip"
	"sync/atomic"
)

// refusalQueue is how many refused clients may wait for their access log
// line; past it, refusals are counted and reported with the next line.
const refusalQueue = 256

// refusals writes the access log's "refused" lines on a goroutine of its
// own where the logger may block (server.logBlocks: a logger handed to
// start, as in tests; the binary's logWriter never blocks, and its accept
// loops log refusals themselves), so that an accept loop, which refuses
// clients before any session exists, never waits on the log: a stuck log
// would otherwise stop accepting at the first refusal. Lines queue in a
// bounded channel; when it is full a refusal is not logged but counted, and
// the next line written is preceded by one warning with that count. The
// metrics count every refusal.
type refusals struct {
	log     *slog.Logger
	queue   chan refused
	dropped atomic.Int64
	done    chan struct{}
}

type refused struct {
	client netip.AddrPort
	why    refusal
}

// newRefusals starts the writer; close stops it.
func newRefusals(log *slog.Logger) *refusals {
	r := &refusals{log: log, queue: make(chan refused, refusalQueue), done: make(chan struct{})}
	go r.write()
	return r
}

// add queues the line of a client refused for why, or counts it when the
// queue is full. It never blocks.
func (r *refusals) add(client netip.AddrPort, why refusal) {
	select {
	case r.queue <- refused{client, why}:
	default:
		r.dropped.Add(1)
	}
}

func (r *refusals) write() {
	defer close(r.done)
	for x := range r.queue {
		if n := r.dropped.Swap(0); n > 0 {
			r.log.Warn("refused clients not logged: the log fell behind", "count", n)
		}
		logRefused(r.log, x.client, x.why, false)
	}
}

// close stops the writer once it has written what is queued. No add may
// follow or run concurrently (the accept loops have stopped). A nil r (no
// queue: the log never blocks) does nothing.
func (r *refusals) close() {
	if r == nil {
		return
	}
	close(r.queue)
	<-r.done
}
