//go:build !linux

package relay

// pipePool is empty where splice(2) does not exist.
type pipePool struct{}

func newPipePool(want, max int) *pipePool { return &pipePool{} }

// PipeSizeRefused is Linux's: there are no splice pipes elsewhere.
func PipeSizeRefused(Options) (want, kept int, err error) { return 0, 0, nil }

func (pp *pipePool) idle() int { return 0 }

func (pp *pipePool) close() {}

func (pp *pipePool) trim() int { return 0 }
