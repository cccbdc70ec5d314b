package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// TestStuckAccessLogSparesRefusals: while the access log cannot be written,
// clients refused at accept are still closed at once, more of them than the
// queue of refusal lines holds, and an allowed client is still served; once
// the log drains, the queued lines follow one warning that counts the
// refusals left out.
func TestStuckAccessLogSparesRefusals(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	rules := writeConfig(t, "[[client-rule]]\naction = \"deny\"\ncidr = [\"127.0.0.2\"]\n")
	addr, w, unstick := startStuckLog(t, "--config", rules)
	w.armed.Store(true) // after the listening line

	const extra = 40
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 10 * time.Second}
	for i := range 1 + refusalQueue + extra {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("refused client %d: %v", i, err)
		}
		mustWrite(t, c, []byte{5, 1, 0}) // wakes the deferred accept
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 2)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("refused client %d: read %d bytes, %v; want it closed", i, n, err)
		}
		c.Close()
		if i == 0 { // its line is the one stuck in Write; the queue is empty again
			select {
			case <-w.started:
			case <-time.After(10 * time.Second):
				t.Fatal("the first refused client wrote no access log line")
			}
		}
	}
	if err := serveOneEcho(addr, echo, "", "", 5*time.Second); err != nil {
		t.Fatalf("an allowed client while refusal lines are stuck: %v", err)
	}

	w.armed.Store(false) // later writes go straight through
	unstick()
	want := fmt.Sprintf("count=%d", extra)
	if !waitFor(10*time.Second, func() bool { return strings.Count(w.out.String(), "msg=refused ") == 1+refusalQueue }) {
		t.Fatalf("refused lines: %d, want %d", strings.Count(w.out.String(), "msg=refused "), 1+refusalQueue)
	}
	out := w.out.String()
	warn := strings.Index(out, `msg="refused clients not logged`)
	if warn < 0 || !strings.Contains(out[warn:strings.IndexByte(out[warn:], '\n')+warn], want) {
		t.Fatalf("no warning with %s in:\n%s", want, out)
	}
	if first := strings.Index(out, "msg=refused "); first > warn || strings.Count(out[:warn], "msg=refused ") != 1 {
		t.Errorf("the warning should follow the stuck line and precede the queued ones:\n%s", out)
	}
}

// TestRefusedLineInBinary: the binary, whose log never blocks, writes a
// refused client's line from the accept loop itself, without the queue.
func TestRefusedLineInBinary(t *testing.T) {
	t.Parallel()
	rules := writeConfig(t, "[[client-rule]]\naction = \"deny\"\ncidr = [\"127.0.0.2\"]\n")
	p := spawnSluice(t, nil, "--listeners", "1", "--config", rules)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mustWrite(t, c, []byte{5, 1, 0}) // wakes the deferred accept
	line, ok := p.waitLine("msg=refused", 30*time.Second)
	if !ok {
		t.Fatalf("no refused line; log:\n%s", p.log())
	}
	want := fmt.Sprintf("client=%s reason=client_rule", c.LocalAddr())
	if !strings.Contains(line, want) {
		t.Errorf("refused line %q lacks %q", line, want)
	}
}
