package main

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
)

// refusal is why a client was refused before its session started.
type refusal uint8

const (
	admitted       refusal = iota
	refClientRule          // a client rule denies its address
	refMaxSessions         // --max-sessions reached
	refMaxPerIP            // --max-sessions-per-ip reached
	refMaxPerUser          // --max-sessions-per-user reached
	refDestRule            // a destination rule denied the request
	numRefusals
)

var refusalNames = [numRefusals]string{"", "client_rule", "max_sessions", "max_sessions_per_ip", "max_sessions_per_user", "destination_rule"}

func (r refusal) String() string { return refusalNames[r] }

// limiter counts live sessions, globally, per client IP and per user. It is
// on the accept path of every connection, so it takes no lock for the
// global count (one atomic add) and a small sharded lock for the per-IP count
// (BenchmarkLimiter compares the choices). It counts every session whether
// or not a limit is set, so that a limit a reload sets later (0 to N)
// applies to the sessions already open (BenchmarkLimiterAdmit measures what
// that costs). The limits themselves come from the live configuration at
// each call, so a reload changes them for new sessions without touching the
// counts.
type limiter struct {
	active atomic.Int64
	ips    [64]ipShard
	users  userCounts
}

type ipShard struct {
	mu sync.Mutex
	n  map[netip.Addr]int32
	_  [48]byte // keep shards on separate cache lines: 64 bytes in all
}

type userCounts struct {
	mu sync.Mutex
	n  map[string]int32
}

func newLimiter() *limiter { return &limiter{} }

// shard picks ip's shard with a multiplicative hash of its 16 bytes.
func (l *limiter) shard(ip netip.Addr) *ipShard {
	a := ip.As16()
	h := (binary.LittleEndian.Uint64(a[:8]) ^ binary.LittleEndian.Uint64(a[8:])) * 0x9e3779b97f4a7c15
	return &l.ips[h>>58] // 64 shards
}

// admit counts a new session from ip against maxTotal and maxPerIP (0 means
// no limit). It counts ip even with no per-IP limit, unless ip is the zero
// Addr (not known). On success it reports admitted and whether ip was
// counted, which release must be given back.
func (l *limiter) admit(ip netip.Addr, maxTotal, maxPerIP int) (refusal, bool) {
	if n := l.active.Add(1); maxTotal > 0 && n > int64(maxTotal) {
		l.active.Add(-1)
		return refMaxSessions, false
	}
	if !ip.IsValid() {
		return admitted, false
	}
	sh := l.shard(ip)
	sh.mu.Lock()
	if sh.n == nil {
		sh.n = make(map[netip.Addr]int32)
	}
	n := sh.n[ip]
	if maxPerIP > 0 && int(n) >= maxPerIP {
		sh.mu.Unlock()
		l.active.Add(-1)
		return refMaxPerIP, false
	}
	sh.n[ip] = n + 1
	sh.mu.Unlock()
	return admitted, true
}

// release ends a session admitted by admit.
func (l *limiter) release(ip netip.Addr, perIP bool) {
	l.active.Add(-1)
	if !perIP {
		return
	}
	sh := l.shard(ip)
	sh.mu.Lock()
	if n := sh.n[ip]; n <= 1 {
		delete(sh.n, ip)
	} else {
		sh.n[ip] = n - 1
	}
	sh.mu.Unlock()
}

// admitUser counts a session of user against max (0 means no limit: the
// session is counted all the same); it reports whether the session may go
// on, in which case releaseUser must follow.
func (l *limiter) admitUser(user string, max int) bool {
	u := &l.users
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.n == nil {
		u.n = make(map[string]int32)
	}
	if max > 0 && int(u.n[user]) >= max {
		return false
	}
	u.n[user]++
	return true
}

func (l *limiter) releaseUser(user string) {
	u := &l.users
	u.mu.Lock()
	if n := u.n[user]; n <= 1 {
		delete(u.n, user)
	} else {
		u.n[user] = n - 1
	}
	u.mu.Unlock()
}
