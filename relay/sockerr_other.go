//go:build !unix

package relay

// watchErrors: here a wait on a socket at EOF would not block, so a
// finished half does not watch its source (session.watchSource).
const watchErrors = false

func sockError(int) error { return nil }

func lingerZero(int) {}
