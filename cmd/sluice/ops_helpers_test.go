package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"sluice/handshake"
)

// writeConfig writes a configuration file and returns its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sluice.toml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// fixedResolver returns a pure-Go resolver whose loopback DNS server answers
// every A query with ip (IPv4) and every other query with no answer.
func fixedResolver(t *testing.T, ip netip.Addr) *net.Resolver {
	t.Helper()
	return loopbackResolver(t, func(pc net.PacketConn) { serveFixed(pc, ip.As4(), nil) })
}

// dualResolver is fixedResolver with an AAAA answer too: v4 and v6.
func dualResolver(t *testing.T, v4, v6 netip.Addr) *net.Resolver {
	t.Helper()
	ip6 := v6.As16()
	return loopbackResolver(t, func(pc net.PacketConn) { serveFixed(pc, v4.As4(), &ip6) })
}

// serveFixed answers DNS queries on pc: one A record for type A questions,
// one AAAA record for type AAAA questions when v6 is set, an empty NOERROR
// answer for the rest.
func serveFixed(pc net.PacketConn, ip [4]byte, v6 *[16]byte) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if n < 12 {
			continue
		}
		// The question ends after its name (labels, then 0) and QTYPE, QCLASS.
		q := 12
		for q < n && buf[q] != 0 {
			q += int(buf[q]) + 1
		}
		q += 5
		if q > n {
			continue
		}
		qtype := binary.BigEndian.Uint16(buf[q-4:])
		msg := append([]byte(nil), buf[:q]...)
		msg[2] = 0x80 | msg[2]&0x79 | 0x04 // QR, AA
		msg[3] = 0x80                      // RA, NOERROR
		copy(msg[6:12], []byte{0, 0, 0, 0, 0, 0})
		switch {
		case qtype == 1:
			msg[7] = 1                                                 // ANCOUNT
			msg = append(msg, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4) // name ptr, A, IN, TTL, len
			msg = append(msg, ip[:]...)                                // RDATA
		case qtype == 28 && v6 != nil:
			msg[7] = 1                                                   // ANCOUNT
			msg = append(msg, 0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16) // name ptr, AAAA, IN, TTL, len
			msg = append(msg, v6[:]...)                                  // RDATA
		}
		pc.WriteTo(msg, from)
	}
}

// startSluiceLog is startSluice with the log at info level written to buf.
func startSluiceLog(t *testing.T, buf *syncBuffer, args ...string) (string, *instance) {
	t.Helper()
	return startSluiceResolver(t, nxdomainResolver(t), buf, args...)
}

// startSluiceResolver is startSluiceLog with r as the upstream resolver.
func startSluiceResolver(t *testing.T, r *net.Resolver, buf *syncBuffer, args ...string) (string, *instance) {
	t.Helper()
	return startSluiceConfig(t, func(cfg *config) { cfg.resolver = r }, buf, args...)
}

// startSluiceConfig is startSluiceResolver with setup, which may set the
// configuration's test-only fields, run on the parsed flags before start.
func startSluiceConfig(t *testing.T, setup func(*config), buf *syncBuffer, args ...string) (string, *instance) {
	t.Helper()
	args = append([]string{"--listeners", "1", "--listen", "127.0.0.1:0"}, args...)
	cfg, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatalf("parseFlags(%q): %v", args, err)
	}
	setup(cfg)
	log := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	inst, err := start(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("start(%q): %v", args, err)
	}
	t.Cleanup(func() { inst.shutdown(5 * time.Second) })
	return inst.addrs()[0], inst
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// request sends a no-auth greeting and a request for cmd to target and
// returns the reply code.
func request(t *testing.T, addr string, cmd handshake.Command, target handshake.Addr) (*net.TCPConn, byte) {
	t.Helper()
	c := dialSluice(t, addr)
	mustWrite(t, c, handshake.AppendRequest([]byte{5, 1, 0}, cmd, target))
	expect(t, c, []byte{5, 0})
	rep, _ := readReply(t, c)
	return c, rep
}

// domainAddr is a SOCKS domain address.
func domainAddr(name string, port int) handshake.Addr {
	return handshake.Addr{Type: handshake.AddrDomain, Name: []byte(name), Port: uint16(port)}
}

// proc is a sluice process run from this test binary, with its log lines.
type proc struct {
	cmd   *exec.Cmd
	lines chan string
	addr  string // from its "sluice listening" line
	done  chan error
}

// startProc runs sluice with args and waits for its listening line.
func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	p := &proc{cmd: sluiceCmd(ctx, args...), lines: make(chan string, 1024), done: make(chan error, 1)}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // nobody reads: drop
			}
		}
		close(p.lines)
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() { p.cmd.Process.Kill() })
	line := p.waitLine(t, "sluice listening")
	p.addr = lineAddr(line)
	return p
}

// waitLine reads log lines until one contains want and returns it.
func (p *proc) waitLine(t *testing.T, want string) string {
	t.Helper()
	timeout := time.After(30 * time.Second) // safety net
	var seen []string
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("sluice exited before logging %q; log:\n%s", want, strings.Join(seen, "\n"))
			}
			seen = append(seen, line)
			if strings.Contains(line, want) {
				return line
			}
		case <-timeout:
			t.Fatalf("no log line with %q; log:\n%s", want, strings.Join(seen, "\n"))
		}
	}
}

// wait waits for the process to exit and returns its error.
func (p *proc) wait(t *testing.T) error {
	t.Helper()
	go func() {
		for range p.lines {
		}
	}()
	select {
	case err := <-p.done:
		return err
	case <-time.After(40 * time.Second): // safety net
		t.Fatal("sluice did not exit")
		return nil
	}
}
