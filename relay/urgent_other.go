//go:build !linux

package relay

// cutAtMark reports no cut read: only Linux's reads answer EAGAIN at an
// urgent mark for a pending signal.
func cutAtMark(int) (cut, at bool) { return false, false }
