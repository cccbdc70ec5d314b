package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestSecondInstanceWarns: a sluice started on an address another one
// already serves binds beside it (SO_REUSEPORT, as a restart needs) and says
// so in one warning; the first, alone on its port, says nothing of it.
func TestSecondInstanceWarns(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("listeners do not share ports on Windows")
	}
	t.Parallel()
	const warning = "another socket already listens on this address"
	var firstLog syncBuffer
	first, _ := startSluiceLog(t, &firstLog)
	if strings.Contains(firstLog.String(), warning) {
		t.Errorf("a sluice alone on its port warned:\n%s", firstLog.String())
	}
	cfg, err := parseFlags([]string{"--listeners", "1", "--listen", first}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var log syncBuffer
	second, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatalf("second sluice on %s: %v", first, err)
	}
	t.Cleanup(func() { second.shutdown(5 * time.Second) })
	if n := strings.Count(log.String(), warning); n != 1 || !strings.Contains(log.String(), "addr="+first) {
		t.Errorf("second sluice on %s: %d warnings naming it; want 1\n%s", first, n, log.String())
	}

	// A port another program holds (no SO_REUSEPORT) is no sharing:
	// sluice fails to bind it, with that error alone.
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	cfg, err = parseFlags([]string{"--listeners", "1", "--listen", other.Addr().String()}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var otherLog syncBuffer
	if inst, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(&otherLog, nil))); err == nil {
		inst.shutdown(0)
		t.Errorf("sluice bound %s, which another program listens on", other.Addr())
	}
	if strings.Contains(otherLog.String(), warning) {
		t.Errorf("a port another program holds: warned of sharing it\n%s", otherLog.String())
	}
}
