package main

import "testing"

// TestIdlePipesSixteenth: the relay's idle pooled pipes hold at most 1/16
// of the process's descriptors (README, Running as a non-root user), two
// descriptors a pipe, and at most 1,024 pipes. The pool used to be sized
// at nofile/16 pipes, 1/8 of the descriptors, with a floor of 8 pipes.
func TestIdlePipesSixteenth(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		nofile uint64
		want   int
	}{
		{32, 1}, {64, 2}, {256, 8}, {1024, 32}, {20000, 625}, {32768, 1024}, {1 << 20, 1024},
	} {
		got := idlePipes(tc.nofile)
		if got != tc.want {
			t.Errorf("idlePipes(%d) = %d; want %d", tc.nofile, got, tc.want)
		}
		if fds := uint64(2 * got); fds > tc.nofile/16 {
			t.Errorf("idlePipes(%d) = %d pipes: %d descriptors, more than 1/16 (%d)", tc.nofile, got, fds, tc.nofile/16)
		}
	}
	if got := idlePipes(8); got != 1 {
		t.Errorf("idlePipes(8) = %d; want 1 (0 would mean the relay's default, 1024)", got)
	}
}
