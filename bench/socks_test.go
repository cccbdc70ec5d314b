package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// testProxy is a minimal SOCKS5 server for the client's tests: CONNECT
// only, optional username/password, a fixed reply code, and a reply whose
// bound address is by default a domain name so that the client must read
// its length.
type testProxy struct {
	user, pass string
	reply      byte   // 0 dials the target; anything else is sent instead
	bnd        []byte // the reply's ATYP, BND.ADDR and BND.PORT; nil: "localhost" port 0
	hangUp     bool   // close after a success reply instead of relaying
}

// Bound addresses of each type for testProxy.bnd.
var (
	bndIPv4      = []byte{1, 127, 0, 0, 1, 0x1f, 0x90}
	bndIPv6      = append(append([]byte{4}, net.IPv6loopback...), 0x1f, 0x90)
	bndShortName = []byte{3, 2, 'a', 'b', 0, 0} // 9 bytes in all, one short of an IPv4 reply
)

// start serves on 127.0.0.1:0 until the test ends and returns the address.
func (p *testProxy) start(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go p.acceptLoop(ln)
	return ln.Addr().String()
}

func (p *testProxy) acceptLoop(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go p.serveConn(c.(*net.TCPConn))
	}
}

func (p *testProxy) serveConn(c *net.TCPConn) {
	defer c.Close()
	b := make([]byte, 512)
	// -> ver nmethods methods...   <- ver method
	if _, err := io.ReadFull(c, b[:2]); err != nil || b[0] != 5 {
		return
	}
	if _, err := io.ReadFull(c, b[:b[1]]); err != nil {
		return
	}
	method := byte(0)
	if p.user != "" {
		method = 2
	}
	if _, err := c.Write([]byte{5, method}); err != nil {
		return
	}
	if p.user != "" {
		// -> 1 ulen user plen pass   <- 1 status
		if _, err := io.ReadFull(c, b[:2]); err != nil {
			return
		}
		user := make([]byte, b[1])
		io.ReadFull(c, user)
		io.ReadFull(c, b[:1])
		pass := make([]byte, b[0])
		io.ReadFull(c, pass)
		if string(user) != p.user || string(pass) != p.pass {
			c.Write([]byte{1, 1})
			return
		}
		c.Write([]byte{1, 0})
	}
	// -> 5 cmd 0 atyp addr port
	if _, err := io.ReadFull(c, b[:4]); err != nil || b[1] != 1 {
		return
	}
	var host string
	switch b[3] {
	case 1, 4:
		ip := make([]byte, map[byte]int{1: 4, 4: 16}[b[3]])
		io.ReadFull(c, ip)
		host = net.IP(ip).String()
	case 3:
		io.ReadFull(c, b[:1])
		io.ReadFull(c, b[1:1+b[0]])
		host = string(b[1 : 1+b[0]])
	}
	if _, err := io.ReadFull(c, b[:2]); err != nil {
		return
	}
	target := net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(b))))
	// <- 5 rep 0 atyp addr port
	bnd := p.bnd
	if bnd == nil {
		bnd = append([]byte{3, 9}, "localhost\x00\x00"...)
	}
	reply := append([]byte{5, p.reply, 0}, bnd...)
	if p.reply != 0 || p.hangUp {
		c.Write(reply)
		return
	}
	up, err := net.Dial("tcp", target)
	if err != nil {
		c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0})
		return
	}
	defer up.Close()
	if _, err := c.Write(reply); err != nil {
		return
	}
	done := make(chan struct{})
	go copyHalf(up.(*net.TCPConn), c, done)
	copyHalf(c, up.(*net.TCPConn), nil)
	<-done
}

// copyHalf copies src to dst, then half-closes dst.
func copyHalf(dst, src *net.TCPConn, done chan<- struct{}) {
	io.Copy(dst, src)
	dst.CloseWrite()
	if done != nil {
		close(done)
	}
}

func TestSocksTput(t *testing.T) {
	t.Parallel()
	sink, source := startTarget(t, Sink, 0), startTarget(t, Source, 3)
	for _, tc := range []struct {
		name  string
		proxy testProxy
		cfg   Proxy
	}{
		{"noauth", testProxy{}, Proxy{}},
		{"userpass", testProxy{user: "u", pass: "secret"}, Proxy{User: "u", Pass: "secret"}},
		{"lockstep userpass", testProxy{user: "u", pass: "p"}, Proxy{User: "u", Pass: "p", Lockstep: true}},
		// The source writes as soon as it is connected: a reply read past
		// its end would take pattern bytes and fail the check.
		{"bnd ipv4", testProxy{bnd: bndIPv4}, Proxy{}},
		{"bnd ipv4 lockstep", testProxy{bnd: bndIPv4}, Proxy{Lockstep: true}},
		{"bnd ipv6", testProxy{bnd: bndIPv6}, Proxy{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.Addr = tc.proxy.start(t)
			o := TputOptions{Client: Client{Proxy: tc.cfg, Duration: shortRun}, Dir: Both,
				Sink: sink, Source: source, Seed: 3}
			r, err := Tput(context.Background(), o)
			checkTput(t, r, err, 2)
		})
	}
}

func TestSocksRR(t *testing.T) {
	t.Parallel()
	echo := startTarget(t, Echo, 0)
	for _, tc := range []struct {
		name  string
		proxy testProxy
		cfg   Proxy
	}{
		{"noauth", testProxy{}, Proxy{}},
		{"lockstep", testProxy{}, Proxy{Lockstep: true}},
		{"userpass", testProxy{user: "me", pass: "pw"}, Proxy{User: "me", Pass: "pw"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.Addr = tc.proxy.start(t)
			r, err := RR(context.Background(), RROptions{Client: Client{Proxy: tc.cfg, Duration: shortRun},
				Target: echo, Workers: 4, SizeBytes: 100})
			if err != nil {
				t.Fatal(err)
			}
			if r.Errors.Total() != 0 || r.Conns == 0 {
				t.Fatalf("conns %d, errors %+v", r.Conns, r.Errors)
			}
		})
	}
}

func TestSocksErrors(t *testing.T) {
	t.Parallel()
	echo := startTarget(t, Echo, 0)
	for _, tc := range []struct {
		name  string
		proxy testProxy
		cfg   Proxy
		want  error
	}{
		{"reply refused", testProxy{reply: 5}, Proxy{}, &ReplyError{Code: 5}},
		{"reply refused lockstep", testProxy{reply: 5}, Proxy{Lockstep: true}, &ReplyError{Code: 5}},
		{"wrong password", testProxy{user: "u", pass: "p"}, Proxy{User: "u", Pass: "x"}, ErrAuthFailed},
		{"wrong password lockstep", testProxy{user: "u", pass: "p"}, Proxy{User: "u", Pass: "x", Lockstep: true}, ErrAuthFailed},
		{"auth required", testProxy{user: "u", pass: "p"}, Proxy{}, ErrBadReply},
		{"bnd name of 2 bytes", testProxy{bnd: bndShortName, hangUp: true}, Proxy{}, ErrShortReply},
		{"bnd type 2", testProxy{bnd: []byte{2, 0, 0, 0, 0, 0, 0}}, Proxy{}, ErrBadReply},
		{"refused, then closed after the code", testProxy{reply: 2, bnd: []byte{}}, Proxy{}, &ReplyError{Code: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.Addr = tc.proxy.start(t)
			d, err := NewDialer(tc.cfg, echo)
			if err != nil {
				t.Fatal(err)
			}
			_, err = d.Dial(context.Background())
			var he *HandshakeError
			if !errors.As(err, &he) {
				t.Fatalf("Dial: %v; want a *HandshakeError", err)
			}
			var re *ReplyError
			if want, ok := tc.want.(*ReplyError); ok {
				if !errors.As(err, &re) || re.Code != want.Code {
					t.Fatalf("Dial: %v; want reply 0x%02x", err, want.Code)
				}
			} else if !errors.Is(err, tc.want) {
				t.Fatalf("Dial: %v; want %v", err, tc.want)
			}
			r, err := RR(context.Background(), RROptions{Client: Client{Proxy: tc.cfg, Duration: 50 * time.Millisecond},
				Target: echo, Workers: 1})
			if err != nil {
				t.Fatal(err)
			}
			if r.Errors.Socks == 0 || r.Conns != 0 {
				t.Fatalf("conns %d, errors %+v; want socks errors only", r.Conns, r.Errors)
			}
		})
	}
}

// TestSocksCutShort: a server that closes part-way through the answers or
// the reply gets an error naming the early end, never a panic, whatever the
// byte it stopped after.
func TestSocksCutShort(t *testing.T) {
	t.Parallel()
	full := []byte{5, 0, 5, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90} // method answer, then an IPv4 reply
	for _, lockstep := range []bool{false, true} {
		for n := 0; n < len(full); n++ {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				if lockstep && n > 2 {
					io.ReadFull(c, make([]byte, 3)) // the greeting, before the method answer
				}
				c.Write(full[:n])
				c.Close()
			}()
			d, err := NewDialer(Proxy{Addr: ln.Addr().String(), Lockstep: lockstep}, "127.0.0.1:9")
			if err != nil {
				t.Fatal(err)
			}
			_, err = d.Dial(context.Background())
			ln.Close()
			if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) &&
				!errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
				t.Errorf("lockstep %v, closed after %d bytes: %v; want an early end", lockstep, n, err)
			}
		}
	}
}

func TestAppendConnect(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		host string
		want []byte
	}{
		{"127.0.0.1", []byte{5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90}},
		{"::1", append(append([]byte{5, 1, 0, 4}, net.IPv6loopback...), 0x1f, 0x90)},
		{"::ffff:10.0.0.1", []byte{5, 1, 0, 1, 10, 0, 0, 1, 0x1f, 0x90}},
		{"ab.c", []byte{5, 1, 0, 3, 4, 'a', 'b', '.', 'c', 0x1f, 0x90}},
	} {
		got, err := appendConnect(nil, tc.host, 8080)
		if err != nil || string(got) != string(tc.want) {
			t.Errorf("appendConnect(%q) = %v, %v; want %v", tc.host, got, err, tc.want)
		}
	}
}
