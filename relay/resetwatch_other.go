//go:build !linux

package relay

// resetWatch watches nothing without epoll: a reset of the source of a
// direction that waits for room is seen once that direction's write moves,
// or at the idle timeout, unless the other direction waits on it.
type resetWatch struct{}

// resetReg is empty: nothing registers.
type resetReg struct{}

func (w *resetWatch) add(*half) {}

func (w *resetWatch) remove(*half) {}
