package main

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"testing"
	"time"
)

// TestWorkersMetricsNamedPort: "with --workers N, worker i serves on ADDR's
// port + i", also for a port given as a service name (here bacula-dir,
// 9101/tcp in /etc/services), resolved as --listen's is. workerAddr used to
// add i to a numeric port only and pass a name on as it was, so every
// worker bound the same port, which the metrics listener's SO_REUSEPORT let
// them share silently: each scrape reached one worker at random and no
// worker's own metrics could be read reliably.
func TestWorkersMetricsNamedPort(t *testing.T) {
	t.Parallel()
	if p, err := net.LookupPort("tcp", "bacula-dir"); err != nil || p != 9101 {
		t.Skip("no bacula-dir 9101/tcp in /etc/services")
	}
	for _, p := range []string{"127.0.0.1:9101", "127.0.0.1:9102"} {
		l, err := net.Listen("tcp", p)
		if err != nil {
			t.Skipf("%s in use: %v", p, err)
		}
		l.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // safety net
	defer cancel()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startWorkers(t, ctx, "--listen", addr, "--workers", "2", "--access-log=false", "--metrics", "127.0.0.1:bacula-dir")
	defer p.cmd.Process.Kill()
	re := regexp.MustCompile(`msg="metrics listening" worker=(\d) addr=(\S+)`)
	got := map[string]string{}
	for line := range p.lines {
		t.Log(line)
		if m := re.FindStringSubmatch(line); m != nil {
			got[m[1]] = m[2]
		}
		if len(got) == 2 {
			break
		}
	}
	if len(got) < 2 {
		t.Fatalf("sluice ended before both workers served metrics: %v", got)
	}
	if got["0"] == got["1"] {
		t.Errorf("both workers serve metrics on %s: a scrape reaches either at random (want worker 1 on port + 1)", got["0"])
	}
	p.stop(t)
}
