package main

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/proxy"
)

// TestSessionLimits checks the global, per-IP and per-user limits on real
// sockets: a client past a limit is refused at once, the sessions already
// running are untouched, and the refusal is counted.
func TestSessionLimits(t *testing.T) {
	t.Parallel()
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	target := echo.Addr().(*net.TCPAddr)
	t.Run("global", func(t *testing.T) {
		t.Parallel()
		addr, inst := startSluice(t, "--max-sessions", "2")
		a, b := connectRaw(t, addr, target), connectRaw(t, addr, target)
		c := dialSluice(t, addr)
		mustWrite(t, c, []byte{5, 1, 0})
		expectClosed(t, c) // refused before its greeting is read
		for _, s := range []*net.TCPConn{a, b} {
			mustWrite(t, s, []byte("still here"))
			expect(t, s, []byte("still here"))
		}
		a.Close()
		if !waitFor(10*time.Second, func() bool { return inst.srv.limits.active.Load() == 1 }) {
			t.Fatalf("active = %d after a close, want 1", inst.srv.limits.active.Load())
		}
		connectRaw(t, addr, target) // room again
	})
	t.Run("per-ip", func(t *testing.T) {
		t.Parallel()
		addr, _ := startSluice(t, "--max-sessions-per-ip", "1")
		connectRaw(t, addr, target)
		c := dialSluice(t, addr)
		mustWrite(t, c, []byte{5, 1, 0})
		expectClosed(t, c)
		// Another client IP has its own count.
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		other, err := d.Dial("tcp", addr)
		if err != nil {
			t.Skipf("cannot dial from 127.0.0.2: %v", err)
		}
		defer other.Close()
		other.SetDeadline(time.Now().Add(10 * time.Second))
		mustWrite(t, other, []byte{5, 1, 0})
		expect(t, other, []byte{5, 0})
	})
	t.Run("per-user", func(t *testing.T) {
		t.Parallel()
		addr, _ := startSluice(t, "--users", writeUsers(t, "alice:a\nbob:b\n"), "--max-sessions-per-user", "1")
		dial := func(user string) (net.Conn, error) {
			d, _ := proxy.SOCKS5("tcp", addr, &proxy.Auth{User: user, Password: user[:1]}, nil)
			return d.Dial("tcp", target.String())
		}
		first, err := dial("alice")
		if err != nil {
			t.Fatal(err)
		}
		defer first.Close()
		if c, err := dial("alice"); err == nil {
			c.Close()
			t.Fatal("second session of alice accepted")
		} else if want := "general SOCKS server failure"; !containsErr(err, want) {
			t.Fatalf("second session of alice: %v, want %q (reply 0x01)", err, want)
		}
		bob, err := dial("bob")
		if err != nil {
			t.Fatalf("bob refused: %v", err)
		}
		bob.Close()
		mustWrite(t, first, []byte("alive"))
		expect(t, first, []byte("alive"))
	})
}

func containsErr(err error, s string) bool {
	return err != nil && strings.Contains(err.Error(), s)
}

// BenchmarkLimiter measures admit+release on the accept path, from many
// goroutines at once: the global count alone (one atomic add), with the
// sharded per-IP count, and, for comparison, one mutex around one map and
// one owner goroutine served over channels.
func BenchmarkLimiter(b *testing.B) {
	ips := make([]netip.Addr, 256)
	for i := range ips {
		ips[i] = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
	}
	b.Run("global", func(b *testing.B) {
		l := newLimiter()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_, per := l.admit(netip.Addr{}, 1<<30, 0)
				l.release(netip.Addr{}, per)
			}
		})
	})
	b.Run("per-ip-sharded", func(b *testing.B) {
		l := newLimiter()
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			ip := ips[next.Add(1)%int64(len(ips))]
			for pb.Next() {
				_, per := l.admit(ip, 1<<30, 1<<20)
				l.release(ip, per)
			}
		})
	})
	b.Run("per-ip-one-mutex", func(b *testing.B) {
		var mu sync.Mutex
		m := map[netip.Addr]int{}
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			ip := ips[next.Add(1)%int64(len(ips))]
			for pb.Next() {
				mu.Lock()
				m[ip]++
				mu.Unlock()
				mu.Lock()
				m[ip]--
				mu.Unlock()
			}
		})
	})
	b.Run("per-ip-owner-goroutine", func(b *testing.B) {
		type op struct {
			ip    netip.Addr
			delta int
			done  chan bool
		}
		ops := make(chan op)
		go func() {
			m := map[netip.Addr]int{}
			for o := range ops {
				m[o.ip] += o.delta
				o.done <- true
			}
		}()
		defer close(ops)
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			ip := ips[next.Add(1)%int64(len(ips))]
			done := make(chan bool)
			for pb.Next() {
				ops <- op{ip, 1, done}
				<-done
				ops <- op{ip, -1, done}
				<-done
			}
		})
	})
}

// BenchmarkLimiterAdmit measures admit+release, and admitUser+releaseUser,
// as every session pays them, from many goroutines at once: with no limit
// set (0), where the counts are kept anyway so that a limit a reload sets
// later applies to the sessions already open, and with limits set. The
// clients come from 256 addresses and the users are 16 names.
func BenchmarkLimiterAdmit(b *testing.B) {
	ips := make([]netip.Addr, 256)
	for i := range ips {
		ips[i] = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
	}
	users := make([]string, 16)
	for i := range users {
		users[i] = "user" + string(rune('a'+i))
	}
	for _, bc := range []struct {
		name  string
		limit int
	}{{"unlimited", 0}, {"limited", 1 << 20}} {
		b.Run("ip-"+bc.name, func(b *testing.B) {
			b.ReportAllocs()
			l := newLimiter()
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				ip := ips[next.Add(1)%int64(len(ips))]
				for pb.Next() {
					_, per := l.admit(ip, 0, bc.limit)
					l.release(ip, per)
				}
			})
		})
		b.Run("user-"+bc.name, func(b *testing.B) {
			b.ReportAllocs()
			l := newLimiter()
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				u := users[next.Add(1)%int64(len(users))]
				for pb.Next() {
					if l.admitUser(u, bc.limit) {
						l.releaseUser(u)
					}
				}
			})
		})
	}
}
