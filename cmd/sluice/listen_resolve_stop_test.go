package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stallDNSEnv, set for a child run as sluice, is the address of a DNS
// server that the child's configurations resolve with (testResolver).
const stallDNSEnv = "SLUICE_TEST_DNS"

func init() {
	if addr := os.Getenv(stallDNSEnv); addr != "" && os.Getenv("SLUICE_RUN_MAIN") == "1" {
		testResolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", addr)
		}}
	}
}

// TestStopWhileResolvingListen: a SIGTERM while the start waits on a
// --listen host name's lookup (a DNS server that does not answer) stops
// sluice with exit 0 and no error line, as it does once serving, with
// --workers too (the parent looks the names up before any worker starts).
// It exited 1 with "sluice: --listen NAME: lookup ...: operation was
// canceled", so that a service manager stopping a slow start saw a failure.
// The signal is sent once the query has reached the server.
func TestStopWhileResolvingListen(t *testing.T) {
	t.Parallel()
	for _, extra := range [][]string{nil, {"--workers", "1"}} {
		t.Run(fmt.Sprint(extra), func(t *testing.T) {
			t.Parallel()
			asked := make(chan struct{}, 1)
			dns := dnsServer(t, func(pc net.PacketConn) { // reads queries, answers none
				b := make([]byte, 1500)
				for {
					if _, _, err := pc.ReadFrom(b); err != nil {
						return
					}
					select {
					case asked <- struct{}{}:
					default:
					}
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // safety net
			defer cancel()
			cmd := sluiceCmd(ctx, append([]string{"--listen", "stalled.example:1080", "--listeners", "1"}, extra...)...)
			cmd.Env = append(cmd.Env, stallDNSEnv+"="+dns)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-asked:
			case <-ctx.Done():
				t.Fatal("no DNS query for the --listen name")
			}
			cmd.Process.Signal(syscall.SIGTERM)
			err := cmd.Wait()
			out := stderr.String()
			if err != nil || strings.Contains(out, "sluice:") || strings.Contains(out, "level=ERROR") || !strings.Contains(out, "stopped while starting") {
				t.Fatalf("SIGTERM during the --listen lookup: %v, stderr:\n%s\nwant exit 0 and an info line, stopped while starting", err, out)
			}
		})
	}
}
