//go:build linux && (amd64 || arm64)

package relay

import (
	"errors"
	"fmt"
	"testing"
)

// TestPipePoolShortGrowsWhenWantRefused: the pool asks for more than
// fs.pipe-max-size (an unprivileged user's --pipe-size above it: every pipe
// keeps the kernel's default, which is then "full"). Once the per-user pipe
// quota cut a pipe short and then freed, the short pipe must be handed out at
// full size again, as it is when the size asked for is granted
// (TestPipePoolUserQuota). grow asks for want only, which the kernel refuses
// for ever, so the short pipe relays at two pages for the process's life.
func TestPipePoolShortGrowsWhenWantRefused(t *testing.T) {
	needRoot(t)
	soft := readSysctl(t, "fs/pipe-user-pages-soft")
	if soft == 0 {
		t.Skip("fs.pipe-user-pages-soft is 0: no quota to reach")
	}
	maxSize := readSysctl(t, "fs/pipe-max-size")
	asUser(t, 54329, func() error { return growRefusedRun(maxSize, soft) })
}

func growRefusedRun(maxSize, soft int) error {
	want := 2 * maxSize // always refused to an unprivileged user
	pp := newPipePool(want, 8)
	defer pp.close()
	first, err := pp.get()
	if err != nil {
		return err
	}
	fullSize := first.size // the kernel default
	if int64(fullSize) != pp.full.Load() {
		return fmt.Errorf("full = %d; want the first pipe's %d", pp.full.Load(), fullSize)
	}
	var hog []*pipe
	defer func() {
		for _, p := range hog {
			p.close()
		}
	}()
	// Big pipes first, then default ones once a big one is refused,
	// until a new pipe comes out cut below the default.
	for range soft/4 + 16 {
		p, err := newPipe(maxSize)
		if err != nil {
			return err
		}
		hog = append(hog, p)
		if p.size < fullSize {
			break
		}
	}
	short, err := pp.get()
	if err != nil {
		return err
	}
	if short.size >= fullSize {
		return errors.New("the quota did not cut a new pipe: cannot test")
	}
	pp.put(first)
	pp.put(short)
	for _, p := range hog {
		p.close()
	}
	hog = nil
	// The quota is free again.
	if p, err := pp.get(); err != nil || p != first {
		return fmt.Errorf("get = %p (%v); want the full pipe first", p, err)
	}
	defer first.close()
	p, err := pp.get()
	if err != nil {
		return err
	}
	defer p.close()
	if p != short {
		return fmt.Errorf("get = %p; want the pooled short pipe %p", p, short)
	}
	if p.size < fullSize {
		return fmt.Errorf("quota freed: the short pipe was handed out with %d bytes (%d slots); the pool's full size is %d: grow asked only for %d, above fs.pipe-max-size (%d), refused for ever",
			p.size, p.slots, fullSize, want, maxSize)
	}
	return nil
}
