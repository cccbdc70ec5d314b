//go:build linux

package relay

import (
	"testing"
)

// TestPipePoolShort: a pipe smaller than the pool has seen (as the per-user
// pipe quota makes them) waits behind full ones, is grown when it is handed
// out, and gives its place to a full one when the pool is full.
func TestPipePoolShort(t *testing.T) {
	t.Parallel()
	const want = 1 << 20
	pp := newPipePool(want, 2)
	defer pp.close()
	full, err := pp.get()
	if err != nil {
		t.Fatal(err)
	}
	if full.size < want {
		full.close()
		t.Skipf("a new pipe got %d bytes of %d asked (fs.pipe-max-size or the pipe quota): nothing to compare a short pipe with", full.size, want)
	}
	short, err := newPipe(4096)
	if err != nil {
		t.Fatal(err)
	}
	pp.put(full)
	pp.put(short) // last in, but short
	if got, err := pp.get(); err != nil || got != full {
		t.Fatalf("get = %p (%v); want the full pipe %p before the short one %p", got, err, full, short)
	}
	got, err := pp.get()
	if err != nil || got != short {
		t.Fatalf("get = %p (%v); want the pooled short pipe %p", got, err, short)
	}
	if got.size < want || got.slots != got.size/4096 {
		t.Errorf("short pipe handed out with size %d, %d slots; want grown to %d", got.size, got.slots, want)
	}

	// A full pipe given back to a full pool takes a short one's place.
	small, err := newPipe(4096)
	if err != nil {
		t.Fatal(err)
	}
	other, err := newPipe(want)
	if err != nil {
		t.Fatal(err)
	}
	pp.put(small)
	pp.put(other) // now at max: one short, one full
	pp.put(got)   // full: evicts the short one
	if n := pp.idle(); n != 2 {
		t.Fatalf("idle = %d; want 2", n)
	}
	for range 2 {
		p, err := pp.get()
		if err != nil {
			t.Fatal(err)
		}
		if p == small {
			t.Errorf("the short pipe stayed pooled in place of a full one")
		}
		defer p.close()
	}
}
