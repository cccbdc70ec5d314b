package handshake

import (
	"io"
	"sync"
)

// BufferSize is the size of a Buffer's scratch area. The largest frames a
// client can send before its payload, a greeting (257 bytes), an RFC 1929
// request (513) and a SOCKS request (262), take 1032 bytes together, so every
// frame always fits; the rest holds pipelined payload.
const BufferSize = 2048

// Buffer is a fixed-size scratch area for one handshake. Get one with
// GetBuffer and give it back with Release. A Buffer is not safe for
// concurrent use.
type Buffer struct {
	data [BufferSize]byte
	// data[r:w] has been read from the client but not yet parsed.
	r, w int
	out  [2]byte // method and auth status replies
	// held[:nheld] are method and auth answers held back to go out with the
	// next answer or the request's reply (Config.Coalesce).
	held  [4]byte
	nheld int
	// pooled is set while b sits in the pool: a second Release of b
	// would put it there twice, and two handshakes would share it.
	pooled bool
}

var bufferPool = sync.Pool{New: func() any { return new(Buffer) }}

// GetBuffer returns an empty Buffer from a pool.
func GetBuffer() *Buffer {
	b := bufferPool.Get().(*Buffer)
	b.reset()
	b.pooled = false
	return b
}

// Release returns b to the pool. Everything aliasing it (a Request's Name,
// User and Rest) becomes invalid, and b must not be used again. Releasing
// it again before GetBuffer hands it out does nothing.
func (b *Buffer) Release() {
	if b.pooled {
		return
	}
	b.reset()
	b.pooled = true
	bufferPool.Put(b)
}

func (b *Buffer) reset() { b.r, b.w, b.nheld = 0, 0, 0 }

// pending returns the bytes read but not yet consumed.
func (b *Buffer) pending() []byte { return b.data[b.r:b.w:b.w] }

// consume marks n pending bytes as parsed.
func (b *Buffer) consume(n int) { b.r += n }

// maxEmptyReads bounds the Reads in a row that return neither bytes nor an
// error, as bufio does.
const maxEmptyReads = 100

// fill reads once more from r into the free space after the pending bytes.
// At end of stream it returns io.EOF when the client sent no byte at all
// (a port scan, a health check), else io.ErrUnexpectedEOF; ErrMalformed when
// no space is left, which cannot happen for frames within the RFC's limits.
func (b *Buffer) fill(r io.Reader) error {
	if b.w == len(b.data) {
		return ErrMalformed
	}
	for range maxEmptyReads {
		n, err := r.Read(b.data[b.w:])
		b.w += n
		switch {
		case n > 0:
			return nil // any error comes back on the next Read
		case err == io.EOF && b.w == 0:
			return io.EOF
		case err == io.EOF:
			return io.ErrUnexpectedEOF
		case err != nil:
			return err
		}
	}
	return io.ErrNoProgress
}

// replyPool holds scratch arrays for WriteReply, so that the slice handed to
// an io.Writer need not escape from its stack.
var replyPool = sync.Pool{New: func() any { return new([maxReplyLen]byte) }}

func getReplyScratch() *[maxReplyLen]byte  { return replyPool.Get().(*[maxReplyLen]byte) }
func putReplyScratch(p *[maxReplyLen]byte) { replyPool.Put(p) }
