//go:build linux

package relay

import (
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"sluice/tune/rawsys"
)

// resetWatch sees, for the goroutine path, a reset that no goroutine
// would. Each direction's goroutine waits on one socket at a time: while it
// waits for room at its destination it reads nothing, and the other one may
// wait on that same socket (to read it) or have passed its EOF on (it then
// watches its own source only, session.watchSource). The first direction's
// source then had no one waiting on it, and its reset came to light only
// once the destination took bytes again, which a peer that reads nothing
// never does, or at the idle timeout. A goroutine cannot wait on two
// sockets, and a second per session would wake with every byte that
// socket brings (the runtime poller registers each socket for reads and
// writes alike, edge-triggered).
//
// So one epoll instance per Relay holds the sources of the directions that
// waited for room (half.stall), registered for nothing but what epoll
// always reports, EPOLLERR and EPOLLHUP, edge-triggered: bytes and room
// raise no event, a reset raises one. One goroutine waits on it through
// the runtime poller (an epoll descriptor is itself pollable, as for the
// event loops) and ends the sessions whose watched socket failed. A
// direction registers at its first wait for room, and deregisters at its
// source's EOF or at the session's end, before Pipe returns. The instance
// and its goroutine are made for the first registration and go away with
// the last, so a Relay without such a session holds neither.
type resetWatch struct {
	mu     sync.Mutex
	file   *os.File // the epoll descriptor; nil while nothing is watched
	epfd   int
	byID   map[uint64]*half // registered directions, by their events' data
	nextID uint64
	events [16]unix.EpollEvent
	fn     func(fd uintptr) bool // harvest, made once
}

// resetReg is a direction's registration, under resetWatch.mu.
type resetReg struct {
	id uint64          // 0: none
	rc syscall.RawConn // the watched socket: the direction's source
}

// add registers h's source. When it cannot (no descriptor left, say), a
// reset of it is seen as it was before: once h's write moves, or at the
// idle timeout.
//
// The socket's descriptor is used only inside rc.Control (here, in
// harvest and in remove), never kept as a number: a caller may close its
// conn while Pipe runs, and the number may then belong to another socket,
// perhaps another session's, registered here too.
func (w *resetWatch) add(h *half) {
	rc, err := h.src.SyscallConn()
	if err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.file == nil && w.start() != nil {
		return
	}
	w.nextID++
	ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLET} // the FIN, EPOLLERR and EPOLLHUP only
	setData(&ev, w.nextID)
	var aerr error
	if err := rc.Control(func(fd uintptr) { aerr = rawsys.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev) }); err != nil || aerr != nil {
		w.idleLocked()
		return
	}
	// A reset that came before the registration is reported by it: the
	// event is raised at once when the socket polls EPOLLERR then.
	h.reg = resetReg{id: w.nextID, rc: rc}
	w.byID[w.nextID] = h
}

// remove deregisters h, if it is registered: once it returns, the watch no
// longer touches h, its session or its socket.
func (w *resetWatch) remove(h *half) {
	w.mu.Lock()
	defer w.mu.Unlock()
	reg := h.reg
	h.reg = resetReg{}
	if reg.id == 0 || w.byID[reg.id] != h {
		return // never registered, gone already, or the watch failed and forgot it
	}
	delete(w.byID, reg.id)
	// Closed by its caller, the socket left the set with its last
	// descriptor (or stays in it unseen, its id forgotten, until then).
	reg.rc.Control(func(fd uintptr) { rawsys.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
	w.idleLocked()
}

// idleLocked wakes the goroutine, which then closes the instance and
// returns, when no session is registered.
func (w *resetWatch) idleLocked() {
	if len(w.byID) == 0 && w.file != nil {
		w.file.SetReadDeadline(aLongTimeAgo)
	}
}

// start makes the epoll instance and starts its goroutine; w.mu is held.
func (w *resetWatch) start() error {
	ep, err := rawsys.NewEpoll("reset watch")
	if err != nil {
		return err
	}
	if w.byID == nil {
		w.byID = make(map[uint64]*half)
		w.fn = w.harvest
	}
	w.file, w.epfd = ep.File, ep.Fd
	go w.serve(ep.File, ep.Conn)
	return nil
}

// serve is the watch's goroutine. It spends its life in RawConn.Read on the
// epoll descriptor, whose callback (harvest) handles the events; Read
// returns at the past read deadline that the last deregistration sets, and
// serve then closes the instance and returns, unless a session registered
// meanwhile.
func (w *resetWatch) serve(f *os.File, rc syscall.RawConn) {
	for {
		err := rc.Read(w.fn)
		w.mu.Lock()
		if len(w.byID) > 0 && isDeadline(err) {
			f.SetReadDeadline(time.Time{})
			w.mu.Unlock()
			continue
		}
		// No session left; or epoll failed, which cannot happen while
		// the descriptor is held: the sessions are watched no more.
		clear(w.byID)
		w.file = nil
		f.Close()
		w.mu.Unlock()
		return
	}
}

// harvest is the RawConn.Read callback: it takes the ready events without
// blocking and ends each session whose watched socket reports an error,
// then asks the runtime poller to wait. An event that arrives after a
// harvest wakes the poller, which keeps that readiness until this Read
// waits (as for a loop's turn). EPOLLHUP alone is both FINs: the EOF is
// read as usual. The error is taken (SO_ERROR) here; when another call
// took it first (a read of the socket), that call ends the session.
func (w *resetWatch) harvest(fd uintptr) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		n, err := rawsys.EpollPoll(int(fd), w.events[:])
		if err != nil {
			return true
		}
		for i := range w.events[:n] {
			ev := &w.events[i]
			h := w.byID[getData(ev)]
			switch {
			case h == nil:
				continue
			case ev.Events&(unix.EPOLLRDHUP|unix.EPOLLERR) == unix.EPOLLRDHUP:
				h.finSeen = true // the FIN came, before any error
				continue
			case ev.Events&unix.EPOLLERR == 0:
				continue
			}
			if serr := h.s.takeError(h.s.side(h), h.reg.rc, h.finSeen); serr != nil {
				h.s.resetSeen(h, serr)
			}
		}
		if n < len(w.events) {
			return false
		}
	}
}
