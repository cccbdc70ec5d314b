package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// streamDigest is what one side of a transfer saw: a byte count and its SHA-256.
type streamDigest struct {
	n   int64
	sum [32]byte
}

// sendRandom writes n bytes of the ChaCha8 stream seeded with seed to w, in
// writes of random sizes (1 byte to 256 KiB, drawn from the same seed), then
// closes w's write side. It returns what it sent. pause, when not nil, is
// waited for once after half the bytes are out (and halfway is told then).
func sendRandom(w *net.TCPConn, n int64, seed uint64, halfway chan<- struct{}, pause <-chan struct{}) (streamDigest, error) {
	stream := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24), 's', 'e', 'n', 'd'})
	sizes := rand.New(rand.NewPCG(seed, 1))
	buf := make([]byte, 256<<10)
	h := sha256.New()
	var sent int64
	for sent < n {
		if pause != nil && sent >= n/2 {
			halfway <- struct{}{}
			<-pause
			pause = nil
		}
		k := min(int64(1+sizes.IntN(len(buf))), n-sent)
		stream.Read(buf[:k])
		h.Write(buf[:k])
		if _, err := w.Write(buf[:k]); err != nil {
			return streamDigest{sent, [32]byte(h.Sum(nil))}, fmt.Errorf("after %d of %d bytes: %w", sent, n, err)
		}
		sent += k
	}
	return streamDigest{sent, [32]byte(h.Sum(nil))}, w.CloseWrite()
}

// receiveDigest reads r to EOF and returns what it read.
func receiveDigest(r io.Reader) (streamDigest, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 64<<10))
	return streamDigest{n, [32]byte(h.Sum(nil))}, err
}

// bulkTransfer is one client's view of a bidirectional transfer: what it sent
// and what it got back, and what the target sent and got.
type bulkTransfer struct {
	clientSent, clientGot, targetSent, targetGot streamDigest
	err                                          error
}

// check compares the two directions of a finished transfer.
func (x *bulkTransfer) check() error {
	switch {
	case x.err != nil:
		return x.err
	case x.clientSent != x.targetGot:
		return fmt.Errorf("upload: client sent %d bytes, target got %d; SHA-256 equal: %v", x.clientSent.n, x.targetGot.n, x.clientSent.sum == x.targetGot.sum)
	case x.targetSent != x.clientGot:
		return fmt.Errorf("download: target sent %d bytes, client got %d; SHA-256 equal: %v", x.targetSent.n, x.clientGot.n, x.targetSent.sum == x.clientGot.sum)
	}
	return nil
}

// bulkTarget is a loopback target for bidirectional transfers: each accepted
// connection first gets the download size and seed from the client (8 bytes
// each, big-endian), then sends that many random bytes while reading the
// upload to EOF, and files what it saw under the seed.
type bulkTarget struct {
	l       *net.TCPListener
	results sync.Map // seed -> chan bulkTransfer (target's half)
	halfway chan struct{}
	pause   chan struct{}
}

// startBulkTarget starts a bulkTarget. With pause set, every download stops
// halfway, sends on halfway, and waits for pause to be closed.
func startBulkTarget(t *testing.T, withPause bool) *bulkTarget {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	bt := &bulkTarget{l: l.(*net.TCPListener)}
	if withPause {
		bt.halfway, bt.pause = make(chan struct{}, 1024), make(chan struct{})
	}
	go func() {
		for {
			c, err := bt.l.AcceptTCP()
			if err != nil {
				return
			}
			go bt.serve(c)
		}
	}()
	return bt
}

// serve reads the header (download size: 8 bytes, seed: 8 bytes), then
// downloads and uploads at once, and files its half under the seed.
func (bt *bulkTarget) serve(c *net.TCPConn) {
	defer c.Close()
	var hdr [16]byte
	var x bulkTransfer
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	size, seed := int64(be64(hdr[:8])), be64(hdr[8:])
	sent := make(chan error, 1)
	go func() {
		var err error
		x.targetSent, err = sendRandom(c, size, seed^0xd0, bt.halfway, bt.pause)
		sent <- err
	}()
	var err error
	x.targetGot, err = receiveDigest(c)
	if serr := <-sent; err == nil {
		err = serr
	}
	x.err = err
	ch, _ := bt.results.LoadOrStore(seed, make(chan bulkTransfer, 1))
	ch.(chan bulkTransfer) <- x
}

// be64 decodes a big-endian uint64.
func be64(b []byte) uint64 {
	var v uint64
	for _, c := range b[:8] {
		v = v<<8 | uint64(c)
	}
	return v
}

// run makes one transfer through sluice at proxy: up bytes from the client,
// down bytes from the target, both random, with the given seed (unique per
// bulkTransfer). halfway is told once the client's connection is established.
func (bt *bulkTarget) run(proxy string, up, down int64, seed uint64, timeout time.Duration) bulkTransfer {
	var x bulkTransfer
	ch, _ := bt.results.LoadOrStore(seed, make(chan bulkTransfer, 1))
	defer bt.results.Delete(seed)
	c, err := net.DialTimeout("tcp", proxy, timeout)
	if err != nil {
		x.err = err
		return x
	}
	defer c.Close()
	tc := c.(*net.TCPConn)
	tc.SetDeadline(time.Now().Add(timeout)) // safety net
	hdr := connectReq(bt.l.Addr().(*net.TCPAddr).AddrPort())
	for _, v := range []uint64{uint64(down), seed} {
		for i := 7; i >= 0; i-- {
			hdr = append(hdr, byte(v>>(8*i)))
		}
	}
	if _, err := tc.Write(hdr); err != nil {
		x.err = err
		return x
	}
	reply := make([]byte, 12)
	if _, err := io.ReadFull(tc, reply); err != nil || reply[1] != 0 || reply[3] != 0 {
		x.err = fmt.Errorf("handshake: reply %x, %v", reply, err)
		return x
	}
	sent := make(chan error, 1)
	go func() {
		var err error
		x.clientSent, err = sendRandom(tc, up, seed^0xc0, nil, nil)
		sent <- err
	}()
	x.clientGot, x.err = receiveDigest(tc)
	if err := <-sent; x.err == nil {
		x.err = err
	}
	if x.err != nil {
		return x
	}
	select {
	case tx := <-ch.(chan bulkTransfer):
		x.targetSent, x.targetGot, x.err = tx.targetSent, tx.targetGot, tx.err
	case <-time.After(timeout):
		x.err = errors.New("target never finished")
	}
	return x
}

// TestConcurrentIntegrity runs 200 transfers at once through one sluice,
// each of random sizes (up to 2 MiB each way, random write sizes), and
// compares byte counts and SHA-256 sums of both directions: with the
// defaults, and with small reads copied (--copy-below), whose directions
// switch between copying and splicing as the write sizes and the timing
// make their reads small or large.
func TestConcurrentIntegrity(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {"--copy-below", "16K"}} {
		t.Run(fmt.Sprint(args), func(t *testing.T) {
			t.Parallel()
			concurrentIntegrity(t, args)
		})
	}
}

func concurrentIntegrity(t *testing.T, args []string) {
	const transfers = 200
	bt := startBulkTarget(t, false)
	addr, _ := startSluice(t, args...)
	sizes := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	var wg sync.WaitGroup
	errs := make(chan error, transfers)
	var total int64
	for i := range transfers {
		up, down := sizes.Int64N(2<<20), sizes.Int64N(2<<20)
		total += up + down
		wg.Go(func() {
			x := bt.run(addr, up, down, uint64(i+1), 60*time.Second)
			if err := x.check(); err != nil {
				errs <- fmt.Errorf("bulkTransfer %d (%d up, %d down): %w", i, up, down, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d concurrent transfers, %.0f MiB in all, intact", transfers, float64(total)/(1<<20))
}

// TestIntegrityBulk moves SLUICE_BULK_MIB MiB each way at once (1,024 with
// SLUICE_LONG=1) through sluice with random write sizes and compares SHA-256
// sums. Without either variable it is skipped; TestTransfer64MiB covers
// 64 MiB in every run.
func TestIntegrityBulk(t *testing.T) {
	mib, _ := strconv.Atoi(os.Getenv("SLUICE_BULK_MIB"))
	if mib <= 0 && os.Getenv("SLUICE_LONG") == "1" {
		mib = 1024
	}
	if mib <= 0 {
		t.Skip("set SLUICE_BULK_MIB=N (or SLUICE_LONG=1 for 1 GiB) to move N MiB each way")
	}
	t.Parallel()
	bt := startBulkTarget(t, false)
	addr, _ := startSluice(t)
	size := int64(mib) << 20
	start := time.Now()
	x := bt.run(addr, size, size, 1, 10*time.Minute)
	if err := x.check(); err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	t.Logf("%d MiB each way intact in %v (%.2f Gbit/s each way)", mib, d.Round(time.Millisecond), float64(size*8)/d.Seconds()/1e9)
}

// TestDrainUnderLoad sends SIGTERM to a sluice child process while 50
// transfers are halfway (the targets hold the second half back until the
// signal is out and sluice has logged that it is shutting down). All 50 must
// then finish byte-for-byte, new connections must be refused, and sluice
// must exit 0 within --drain-timeout.
func TestDrainUnderLoad(t *testing.T) {
	t.Parallel()
	const (
		transfers = 50
		drain     = 10 * time.Second
	)
	bt := startBulkTarget(t, true)
	p := spawnSluice(t, nil, "--drain-timeout", drain.String(), "--listeners", "1")
	results := make(chan error, transfers)
	for i := range transfers {
		go func() {
			x := bt.run(p.addr, 256<<10, 1<<20, uint64(i+1), 60*time.Second)
			results <- x.check()
		}()
	}
	for range transfers { // every download is halfway and paused
		select {
		case <-bt.halfway:
		case err := <-results:
			t.Fatalf("a bulkTransfer ended before the pause: %v", err)
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	signalled := time.Now()
	if _, ok := p.waitLine("shutting down", 10*time.Second); !ok {
		t.Fatalf("no shutdown line after SIGTERM; log:\n%s", p.log())
	}
	close(bt.pause)
	for i := range transfers {
		if err := <-results; err != nil {
			t.Errorf("bulkTransfer %d of %d during drain: %v", i, transfers, err)
		}
	}
	if err := p.wait(); err != nil {
		t.Fatalf("exit after drain: %v, want 0; log:\n%s", err, p.log())
	}
	if d := time.Since(signalled); d > drain {
		t.Errorf("exited %v after SIGTERM, past the %v drain timeout", d, drain)
	}
	if p.count("drain timeout") > 0 {
		t.Errorf("sluice reports a drain timeout; log:\n%s", p.log())
	}
	if c, err := net.DialTimeout("tcp", p.addr, 5*time.Second); err == nil {
		c.Close()
		t.Errorf("a connection to %s succeeded after the drain", p.addr)
	}
}
