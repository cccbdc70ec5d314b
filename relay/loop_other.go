//go:build !linux

package relay

import (
	"context"
	"net"
)

// loopSet is empty where there is no splice(2): every session takes the
// goroutine path.
type loopSet struct {
	loops []struct{}
	err   error
}

// sessionFlow: a Session holds nothing without event loops.
type sessionFlow struct{}

func newLoopSet(int, *pipePool, Options, goPath) *loopSet {
	return &loopSet{}
}

func (ls *loopSet) start(context.Context, *Session, *net.TCPConn, *net.TCPConn, [2]int, Ender, bool, bool) bool {
	return false
}

func (ls *loopSet) close() {}

func (ls *loopSet) relayed() (up, down int64) { return 0, 0 }
