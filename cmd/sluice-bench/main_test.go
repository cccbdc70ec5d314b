package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"sluice/bench"
	"strings"
	"testing"
	"time"
)

func TestRunUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "missing mode"},
		{[]string{"-h"}, 0, ""},
		{[]string{"tput", "-h"}, 0, ""},
		{[]string{"nope"}, 2, `unknown mode "nope"`},
		{[]string{"udp"}, 2, "exactly one of --proxy or --direct"},
		{[]string{"udp-echo", "--addr", "0.0.0.0:1"}, 2, "not loopback"},
		{[]string{"udp", "--direct", "--target", "127.0.0.1:1", "--window", "0"}, 2, "flag --window"},
		{[]string{"tput", "--bogus"}, 2, "not defined: --bogus"},
		{[]string{"rr", "--duration"}, 2, "needs an argument: --duration"},
		{[]string{"rr", "-c"}, 2, "needs an argument: -c"},
		{[]string{"tput", "-P", "x", "--direct", "--target", "127.0.0.1:1"}, 2, "-P"},
		{[]string{"tput", "-P", "0", "--direct", "--target", "127.0.0.1:1"}, 2, "-P"},
		{[]string{"tput", "--dir", "sideways", "--direct", "--target", "127.0.0.1:1"}, 2, "flag --dir"},
		{[]string{"rr", "--dir", "up", "--direct", "--target", "127.0.0.1:1"}, 2, "flag --dir does not apply"},
		{[]string{"rr", "--target", "127.0.0.1:1"}, 2, "--proxy or --direct"},
		{[]string{"rr", "--direct", "--target", "127.0.0.1:1", "--duration", "11m"}, 2, "flag --duration"},
		{[]string{"sink", "--addr", "0.0.0.0:5201"}, 2, "not loopback"},
		{[]string{"echo", "--addr", ":5201"}, 2, "not loopback"},
		{[]string{"echo", "--addr", "127.0.0.1:5201,0.0.0.0:5201"}, 2, "not loopback"},
		{[]string{"rr", "--direct", "--target", "127.0.0.1:1", "--source", "127.0.0.9-127.0.0.2"}, 2, "flag --source"},
		{[]string{"tput", "--direct", "--target", "127.0.0.1:1", "--source", "127.0.0.2"}, 2, "flag --source does not apply"},
		{[]string{"rr", "--direct", "--target", "127.0.0.1:1", "--exchanges", "0"}, 2, "flag --exchanges: must be positive"},
		{[]string{"rr", "--direct", "--target", "127.0.0.1:1", "--exchanges", "1000001"}, 2, "flag --exchanges: at most 1000000"},
		{[]string{"tput", "--direct", "--target", "127.0.0.1:1", "--exchanges", "5"}, 2, "flag --exchanges does not apply"},
	} {
		var out, errOut bytes.Buffer
		code := run(tc.args, &out, &errOut)
		if code != tc.code || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("run(%q) = %d, stderr %q; want %d containing %q", tc.args, code, errOut.String(), tc.code, tc.want)
		}
		if tc.code == 2 && strings.Count(errOut.String(), "\n") != 1 {
			t.Errorf("run(%q): stderr %q; want one line", tc.args, errOut.String())
		}
		if tc.code == 0 && !strings.Contains(out.String(), "idle") {
			t.Errorf("run(%q): help lacks the modes", tc.args)
		}
	}
}

func TestHelpNamesEveryFlag(t *testing.T) {
	t.Parallel()
	var o options
	fs := newFlagSet(&o)
	for mode, flags := range flagsFor {
		for _, name := range strings.Fields(flags) {
			if fs.Lookup(name) == nil {
				t.Errorf("mode %s allows undefined flag %s", mode, name)
			}
			if !strings.Contains(usage, "-"+name+" ") && !strings.Contains(usage, "-"+name+"\n") {
				t.Errorf("usage does not document -%s", name)
			}
		}
	}
}

func TestRunRefusedIsError(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	// Port 1 on loopback: nothing listens there in a test environment.
	code := run([]string{"rr", "--direct", "--target", "127.0.0.1:1", "--duration", "50ms", "-c", "1", "--json"}, &out, &errOut)
	var res struct {
		Errors struct{ Connect int } `json:"errors"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("output %q: %v", out.String(), err)
	}
	if code != 1 || res.Errors.Connect == 0 {
		t.Fatalf("code %d, connect errors %d; want 1 and some", code, res.Errors.Connect)
	}
}

func TestParseSources(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want string // the addresses joined by commas; empty: an error
	}{
		{"127.0.0.2", "127.0.0.2"},
		{"127.0.0.2,::1", "127.0.0.2,::1"},
		{"127.0.0.254-127.0.1.1", "127.0.0.254,127.0.0.255,127.0.1.0,127.0.1.1"},
		{"::1-::2", "::1,::2"},
		{"127.0.0.3-127.0.0.2", ""},
		{"127.0.0.1-::1", ""},
		{"127.0.0.1-127.0.8.0", ""}, // more than 1024
		{"localhost", ""},
	} {
		got, err := parseSources(tc.in)
		var s []string
		for _, a := range got {
			s = append(s, a.String())
		}
		if (err == nil) != (tc.want != "") || strings.Join(s, ",") != tc.want {
			t.Errorf("parseSources(%q) = %v, %v; want %q", tc.in, s, err, tc.want)
		}
	}
}

// TestEchoServesEveryAddr runs an echo target on two loopback addresses and
// echoes through each.
func TestEchoServesEveryAddr(t *testing.T) {
	t.Parallel()
	lns, err := listenAll("127.0.0.1:0,127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errOut bytes.Buffer
	go func() { done <- serveOn(ctx, &bench.Server{Kind: bench.Echo}, lns, &errOut) }()
	for _, ln := range lns {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("ping"))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Errorf("echo on %s answered %q, %v", ln.Addr(), buf, err)
		}
		c.Close()
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("serveOn exit %d: %s", code, errOut.String())
	}
	if _, err := listenAll("127.0.0.1:0,256.0.0.1:0"); err == nil {
		t.Error("listenAll with a bad address: no error")
	}
}

// TestRunUDPNoEchoIsError: a udp run against a target that never answers
// exits 1, with one line on stderr saying that no datagram came back, and
// still prints its result; before, it exited 0 with 100 % loss.
func TestRunUDPNoEchoIsError(t *testing.T) {
	t.Parallel()
	silent, err := net.ListenPacket("udp", "127.0.0.1:0") // never read
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	var out, errOut bytes.Buffer
	code := run([]string{"udp", "--direct", "--target", silent.LocalAddr().String(), "--duration", "50ms", "--json", "--quiet"}, &out, &errOut)
	var res struct{ Sent, Received uint64 }
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("output %q: %v", out.String(), err)
	}
	if code != 1 || res.Sent == 0 || res.Received != 0 {
		t.Fatalf("exit %d, sent %d, received %d; want 1, some, none", code, res.Sent, res.Received)
	}
	if s := errOut.String(); strings.Count(s, "\n") != 1 || !strings.Contains(s, bench.ErrNoEcho.Error()) {
		t.Errorf("stderr %q; want one line with %q", s, bench.ErrNoEcho)
	}
}
