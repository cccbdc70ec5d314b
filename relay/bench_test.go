package relay

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// middle relays relayA<->relayB until both directions end.
type middle func(relayA, relayB *net.TCPConn) (Stats, error)

// BenchmarkPipe moves 64 MiB per op client->upstream through five middles,
// sweeping the client's write size. cpu-ns/MiB is the whole process's CPU
// time (sender, middle and receiver) per MiB moved; on a busy machine it tells
// the middles apart better than MB/s does. The middles:
//   - splice: Pipe, the splice path on the event loops;
//   - splice-goroutines: Pipe with Loops -1, the splice path on two
//     goroutines per session;
//   - copy: Pipe with ForceCopy, the plain read/write path;
//   - iocopy: io.Copy through wrappers hiding ReadFrom and WriteTo, as a
//     proxy that wraps its conns gets;
//   - stdlib: io.Copy on the bare conns, the standard library's own splice.
func BenchmarkPipe(b *testing.B) {
	modes := []struct {
		name string
		mid  func() (middle, func())
	}{
		{"splice", relayMiddle(Options{})},
		{"splice-goroutines", relayMiddle(Options{Loops: -1})},
		{"copy", relayMiddle(Options{ForceCopy: true})},
		{"iocopy", ioCopyMiddle(true)},
		{"stdlib", ioCopyMiddle(false)},
	}
	for _, m := range modes {
		for _, chunk := range []int{4 << 10, 64 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("%s/chunk=%dKiB", m.name, chunk>>10), func(b *testing.B) {
				mid, done := m.mid()
				defer done()
				benchTransfer(b, mid, chunk)
			})
		}
	}
}

func relayMiddle(o Options) func() (middle, func()) {
	return func() (middle, func()) {
		r := New(o)
		return func(a, c *net.TCPConn) (Stats, error) { return r.Pipe(context.Background(), a, c) }, func() { r.Close() }
	}
}

func ioCopyMiddle(hide bool) func() (middle, func()) {
	return func() (middle, func()) {
		return func(a, c *net.TCPConn) (Stats, error) {
			errc := make(chan error, 1)
			go func() { errc <- copyClose(c, a, hide) }()
			err := copyClose(a, c, hide)
			return Stats{}, joinErr(err, <-errc)
		}, func() {}
	}
}

// copyClose copies src to dst with io.Copy, then half-closes dst.
func copyClose(dst, src *net.TCPConn, hide bool) error {
	var err error
	if hide {
		_, err = io.Copy(struct{ io.Writer }{dst}, struct{ io.Reader }{src})
	} else {
		_, err = io.Copy(dst, src)
	}
	return joinErr(err, dst.CloseWrite())
}

func joinErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func benchTransfer(b *testing.B, mid middle, chunk int) {
	const perOp = 64 << 20
	g := newRig(b)
	g.client.SetDeadline(time.Time{})
	g.upstream.SetDeadline(time.Time{})
	go func() {
		st, err := mid(g.relayA, g.relayB)
		g.done <- pipeResult{st, err}
	}()
	src := make([]byte, chunk)
	dst := make([]byte, 1<<20)
	b.SetBytes(perOp)
	cpu0 := processCPU()
	b.ResetTimer()
	werr := make(chan error, 1)
	go func() {
		for range b.N {
			for sent := 0; sent < perOp; sent += chunk {
				if _, err := g.client.Write(src); err != nil {
					werr <- err
					return
				}
			}
		}
		werr <- g.client.CloseWrite()
	}()
	var got int64
	for got < int64(b.N)*perOp {
		n, err := g.upstream.Read(dst)
		got += int64(n)
		if err != nil {
			b.Fatalf("read after %d bytes: %v", got, err)
		}
	}
	b.StopTimer()
	if cpu := processCPU() - cpu0; cpu > 0 {
		// Sender, receiver and middle together; the middle is what differs.
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(got>>20), "cpu-ns/MiB")
	}
	if err := <-werr; err != nil {
		b.Fatal(err)
	}
	g.upstream.CloseWrite()
	res := g.wait(b)
	if res.err != nil {
		b.Fatal(res.err)
	}
	if res.st.SpliceCalls > 0 {
		b.ReportMetric(float64(res.st.SpliceCalls)/float64(b.N), "splices/op")
	}
}

// BenchmarkMessages sends one message at a time client->upstream, each
// answered by a 1-byte acknowledgement upstream->client, through Pipe with
// every read spliced and with small reads copied (CopyBelow 16 KiB), as a
// request/response session does. cpu-ns/msg is the whole process's CPU time
// per message and its answer.
func BenchmarkMessages(b *testing.B) {
	for _, m := range []struct {
		name string
		o    Options
	}{{"splice", Options{}}, {"copy-below-16KiB", Options{CopyBelow: 16 << 10}}} {
		for _, size := range []int{1, 512, 4 << 10, 64 << 10} {
			b.Run(fmt.Sprintf("%s/size=%d", m.name, size), func(b *testing.B) {
				r := New(m.o)
				defer r.Close()
				g := newRig(b).start(context.Background(), r)
				g.client.SetDeadline(time.Time{})
				g.upstream.SetDeadline(time.Time{})
				msg, got, ack := make([]byte, size), make([]byte, size), []byte{1}
				cpu0 := processCPU()
				b.ResetTimer()
				for range b.N {
					if _, err := g.client.Write(msg); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(g.upstream, got); err != nil {
						b.Fatal(err)
					}
					if _, err := g.upstream.Write(ack); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(g.client, ack); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				if cpu := processCPU() - cpu0; cpu > 0 {
					b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/msg")
				}
				g.client.CloseWrite()
				g.upstream.CloseWrite()
				if res := g.wait(b); res.err != nil {
					b.Fatal(res.err)
				}
			})
		}
	}
}
