package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestLoopsOutOfDescriptors: more --loops than the descriptor limit allows
// (each takes an epoll instance and an eventfd) stops sluice with one line
// naming --loops and the cause, where it used to start with fewer loops and
// then fail on --listen's socket with "too many open files", or serve with
// fewer loops than asked for.
func TestLoopsOutOfDescriptors(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("needs sh to lower RLIMIT_NOFILE for the child")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // safety net
	defer cancel()
	args := []string{"--loops", "100", "--listen", "127.0.0.1:0"}
	self := sluiceCmd(ctx, args...)
	cmd := exec.CommandContext(ctx, "sh", append([]string{"-c", `ulimit -n 64 && exec "$0" "$@"`, self.Path}, args...)...)
	cmd.Env = self.Env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	out := strings.TrimRight(stderr.String(), "\n")
	if cmd.ProcessState.ExitCode() != 1 || strings.Count(out, "\n") != 0 {
		t.Fatalf("sluice %q under 64 descriptors: %v, stderr:\n%s\nwant exit 1 and one line", args, err, out)
	}
	for _, w := range []string{"sluice: --loops 100: ", " of 100 event loops made: ", "too many open files"} {
		if !strings.Contains(out, w) {
			t.Errorf("%q does not say %q", out, w)
		}
	}
}
