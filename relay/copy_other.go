//go:build !unix

package relay

import (
	"errors"
	"io"
)

// copyHalf moves h.src to h.dst with plain Read and Write calls through a
// pooled buffer, held for the session's life, then half-closes h.dst on EOF.
// It calls the conns' own Read and Write rather than io.Copy, which would
// take the ReadFrom/splice path, and writes in chunks (writeChunked) so that
// the idle timeout sees a slow destination take the bytes.
func (r *Relay) copyHalf(h *half) error {
	bp := r.getBuf()
	defer r.putBuf(bp)
	buf := *bp
	// Invariant: at the top of each iteration every byte read so far has been
	// written to h.dst, so an error loses nothing that was acknowledged.
	for {
		n, rerr := h.src.Read(buf)
		if n > 0 {
			if err := writeChunked(h.dst, buf[:n], h.moved); err != nil {
				return err
			}
		}
		if errors.Is(rerr, io.EOF) {
			return h.dst.CloseWrite()
		}
		if rerr != nil {
			return rerr
		}
	}
}
