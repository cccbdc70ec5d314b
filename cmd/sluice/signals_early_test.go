package main

import (
	"bufio"
	"context"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hupAtInitEnv, set to 1 for a child run as sluice, makes it send itself
// SIGHUP from this file's init function: after package main's variables
// are set, before main runs.
const hupAtInitEnv = "SLUICE_TEST_HUP_AT_INIT"

func init() {
	switch {
	case os.Getenv("SLUICE_RUN_MAIN") != "1":
		signal.Stop(earlyHUP) // the test process keeps Go's default: SIGHUP ends it
	case os.Getenv(hupAtInitEnv) == "1":
		p, _ := os.FindProcess(os.Getpid())
		p.Signal(syscall.SIGHUP)
	}
}

// TestSIGHUPWhileStarting: a SIGHUP that reaches sluice before run (here
// from an init function of package main, so that the test never depends on
// when a signal sent from outside happens to land) neither kills it, as
// Go's default for SIGHUP would, nor is lost: the reload it asks for is
// applied once sluice serves.
func TestSIGHUPWhileStarting(t *testing.T) {
	t.Parallel()
	for i := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // safety net
		defer cancel()
		cmd := sluiceCmd(ctx, "--listen", "127.0.0.1:0", "--listeners", "1", "--drain-timeout", "1s")
		cmd.Env = append(cmd.Env, hupAtInitEnv+"=1")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var log []string
		served, reloaded := false, false
		sc := bufio.NewScanner(stderr)
		for !reloaded && sc.Scan() {
			log = append(log, sc.Text())
			served = served || strings.Contains(sc.Text(), "sluice listening")
			reloaded = served && strings.Contains(sc.Text(), "configuration reloaded")
		}
		cmd.Process.Signal(syscall.SIGTERM)
		for sc.Scan() {
		}
		if err := cmd.Wait(); err != nil || !reloaded {
			t.Fatalf("start %d with a SIGHUP before main: %v, reloaded after serving %v, log:\n%s\nwant it to serve, reload, and exit 0 on SIGTERM",
				i+1, err, reloaded, strings.Join(log, "\n"))
		}
	}
}
