package relay

import "io"

// writeChunk bounds one Write on the portable copy path (copy_other.go). A
// conn's Write returns only once all its bytes are out, and a destination
// that reads slowly can take longer than an idle timeout to take a whole
// copy buffer; bytes counted per chunk let the watchdog see them move.
const writeChunk = 16 << 10

// writeChunked writes b to w in pieces of at most writeChunk bytes and
// reports each piece's bytes to moved as soon as its Write returns.
func writeChunked(w io.Writer, b []byte, moved func(int)) error {
	for len(b) > 0 {
		n, err := w.Write(b[:min(len(b), writeChunk)])
		moved(n)
		b = b[n:]
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
	}
	return nil
}
