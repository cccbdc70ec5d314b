package main

// Interop tests: each case drives a freshly started sluice with a real,
// widely used SOCKS5 client (curl, proxychains4 with iperf3, PySocks,
// headless Chromium, ncat) against a local target on loopback. A missing
// client skips its case with a reason, or fails it when
// SLUICE_REQUIRE_CLIENTS=1.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startIperf3Server starts a one-off iperf3 server on a free port of
// 127.0.0.1 and returns the port once it listens. It is killed in
// t.Cleanup if the test ends before its client does.
func startIperf3Server(t *testing.T, iperf3 string) string {
	t.Helper()
	// The port is picked by a throwaway listener, so another process may take
	// it before iperf3 binds; a bounded number of retries covers that.
	for try := 0; ; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(l.Addr().String())
		l.Close()
		cmd := exec.Command(iperf3, "-s", "-1", "-B", "127.0.0.1", "-p", port, "--forceflush")
		t.Logf("iperf3 server: %s", commandLine(cmd))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			t.Fatalf("%s: %v", commandLine(cmd), err)
		}
		exited := make(chan struct{})
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
		})
		listening := make(chan bool, 1)
		var seen bytes.Buffer // read only after exited closes
		go waitIperf3Listening(cmd, out, &seen, listening, exited)
		var ok bool
		select {
		case ok = <-listening:
		case <-time.After(10 * time.Second): // safety net only
			t.Fatalf("%s: not listening after 10s", commandLine(cmd))
		}
		if ok {
			return port
		}
		<-exited
		if try < 3 && strings.Contains(seen.String(), "in use") {
			continue
		}
		t.Fatalf("%s exited before listening; output %q", commandLine(cmd), seen.String())
	}
}

// waitIperf3Listening reads an iperf3 server's output, reports on listening
// whether it said it listens (false if it ended first), keeps draining its
// output into seen, reaps the process and closes exited.
func waitIperf3Listening(cmd *exec.Cmd, out io.Reader, seen *bytes.Buffer, listening chan<- bool, exited chan<- struct{}) {
	defer close(exited)
	sc := bufio.NewScanner(out)
	reported := false
	for sc.Scan() {
		seen.Write(append(sc.Bytes(), '\n'))
		if !reported && strings.Contains(sc.Text(), "Server listening on") {
			listening <- true
			reported = true
		}
	}
	cmd.Wait()
	if !reported {
		listening <- false
	}
}

// writeProxychainsConf writes a proxychains4 configuration that sends
// every TCP connection, loopback included (no localnet line), through the
// SOCKS5 proxy at addr, and resolves names locally (no proxy_dns).
func writeProxychainsConf(t *testing.T, addr string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf("strict_chain\nquiet_mode\ntcp_read_time_out 15000\ntcp_connect_time_out 8000\n[ProxyList]\nsocks5 %s %s\n", host, port)
	p := filepath.Join(t.TempDir(), "proxychains.conf")
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestIperf3Proxychains runs iperf3 through sluice with proxychains4: one
// stream each way (-R), four streams (-P 4) and both ways at once
// (--bidir). Its control connection and every data connection must pass
// through the proxy, and iperf3 must report nonzero throughput in each
// direction it measured. (iperf3 -u is not here: proxychains4 hooks TCP
// connects only, so its datagrams would bypass sluice.)
func TestIperf3Proxychains(t *testing.T) {
	t.Parallel()
	proxychains := needClient(t, "proxychains4")
	iperf3 := needClient(t, "iperf3")
	cases := []struct {
		name  string
		extra []string
		conns int64 // control and data connections iperf3 makes
	}{
		{"client-sends", nil, 2},
		{"reverse", []string{"-R"}, 2},
		{"parallel", []string{"-P", "4"}, 5},
		{"bidir", []string{"--bidir"}, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr, inst := startSluice(t)
			port := startIperf3Server(t, iperf3)
			args := append([]string{"-q", "-f", writeProxychainsConf(t, addr), iperf3, "-c", "127.0.0.1", "-p", port, "-t", "2", "--json"}, tc.extra...)
			r := runClient(t, "proxychains4 + iperf3", 30*time.Second, exec.Command(proxychains, args...))
			type sum struct {
				Bytes         int64   `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			}
			var res struct {
				Error string
				End   struct {
					SumReceived *sum `json:"sum_received"`
					Reverse     *sum `json:"sum_received_bidir_reverse"` // --bidir only
				} `json:"end"`
			}
			if err := json.Unmarshal(r.stdout.Bytes(), &res); err != nil {
				r.fatalf(t, "%s: the output is not its JSON report: %v", tc.name, err)
			}
			sums := map[string]*sum{"sum_received": res.End.SumReceived}
			if tc.name == "bidir" {
				sums["sum_received_bidir_reverse"] = res.End.Reverse
			}
			for field, got := range sums {
				if res.Error != "" || got == nil || got.Bytes <= 0 || got.BitsPerSecond <= 0 {
					r.fatalf(t, "%s: error %q, %s %+v; want no error and nonzero throughput", tc.name, res.Error, field, got)
				}
			}
			got := res.End.SumReceived
			// Accepted before sluice replies, so counted by the time iperf3 is done.
			if n := inst.accepted[0].Load(); n < tc.conns {
				r.fatalf(t, "%s: sluice accepted %d connections, want >= %d (control and one per data stream)", tc.name, n, tc.conns)
			}
			t.Logf("iperf3 %s through sluice: %.2f Gbit/s", tc.name, got.BitsPerSecond/1e9)
		})
	}
}
