package handshake

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"
)

// timeoutErr is an error of some other package that reports a timeout.
type timeoutErr struct{}

func (timeoutErr) Error() string { return "timed out" }
func (timeoutErr) Timeout() bool { return true }

// refusedDialError dials a loopback port that was just closed.
func refusedDialError(t *testing.T) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s after close: connected", addr)
	}
	return err
}

// expiredDialError dials with a context whose deadline has passed.
func expiredDialError(t *testing.T) error {
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", "127.0.0.1:1")
	if err == nil {
		c.Close()
		t.Fatal("dial with an expired context: connected")
	}
	return err
}

func opError(err error) error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", err)}
}

func TestReplyFor(t *testing.T) {
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	refused := refusedDialError(t)
	var opErr *net.OpError
	if !errors.As(refused, &opErr) || !errors.Is(refused, syscall.ECONNREFUSED) {
		t.Fatalf("dial to a closed port: %v; want a *net.OpError with ECONNREFUSED", refused)
	}
	_, _, unknownCmd := ParseRequest([]byte{5, 9, 0, 1, 192, 0, 2, 1, 0, 80})
	_, _, unknownAtyp := ParseRequest([]byte{5, 1, 0, 9})
	for _, tt := range []struct {
		name string
		err  error
		want Reply
	}{
		{"nil", nil, GeneralFailure},
		{"other", errors.New("other"), GeneralFailure},
		{"eof", io.EOF, GeneralFailure},
		{"canceled", context.Canceled, GeneralFailure},
		// A lookup the caller cut short (a drain) is no unreachable
		// host: it was answered 0x04.
		{"dns-canceled", canceledLookupError(t), GeneralFailure},
		{"not-allowed", fmt.Errorf("policy: %w", ErrNotAllowed), NotAllowed},
		{"enetunreach", opError(syscall.ENETUNREACH), NetworkUnreachable},
		{"ehostunreach", opError(syscall.EHOSTUNREACH), HostUnreachable},
		{"ehostdown", opError(syscall.EHOSTDOWN), HostUnreachable},
		{"dns-not-found", &net.DNSError{Err: "no such host", Name: "nx.example", IsNotFound: true}, HostUnreachable},
		{"dns-timeout", &net.DNSError{Err: "i/o timeout", Name: "slow.example", IsTimeout: true}, HostUnreachable},
		{"dns-temporary-in-operror", &net.OpError{Op: "dial", Net: "tcp",
			Err: &net.DNSError{Err: "server misbehaving", IsTemporary: true, IsTimeout: true}}, HostUnreachable},
		{"dial-closed-port", refused, ConnectionRefused},
		{"econnrefused", opError(syscall.ECONNREFUSED), ConnectionRefused},
		{"os-deadline", os.ErrDeadlineExceeded, TTLExpired},
		{"context-deadline", expired.Err(), TTLExpired},
		{"dial-expired-context", expiredDialError(t), TTLExpired},
		{"etimedout", opError(syscall.ETIMEDOUT), TTLExpired},
		{"timeout-method", fmt.Errorf("upstream: %w", timeoutErr{}), TTLExpired},
		{"ttl-expired", ErrTTLExpired, TTLExpired},
		{"command", ErrCommandNotSupported, CommandNotSupported},
		{"command-parsed", unknownCmd, CommandNotSupported},
		{"addrtype", ErrAddrTypeNotSupported, AddrTypeNotSupported},
		{"addrtype-parsed", unknownAtyp, AddrTypeNotSupported},
	} {
		if got := ReplyFor(tt.err); got != tt.want {
			t.Errorf("%s: ReplyFor(%v) = %v; want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

// writeCounter records each Write it gets.
type writeCounter struct {
	writes [][]byte
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, bytes.Clone(p))
	return len(p), nil
}

func TestWriteReply(t *testing.T) {
	for _, tt := range []struct {
		name string
		rep  Reply
		bnd  netip.AddrPort
		want []byte
	}{
		{"ipv4", Succeeded, netip.MustParseAddrPort("192.0.2.1:80"), []byte{5, 0, 0, 1, 192, 0, 2, 1, 0, 80}},
		{"ipv6", Succeeded, netip.MustParseAddrPort("[2001:db8::1]:443"),
			[]byte{5, 0, 0, 4, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x01, 0xbb}},
		{"ipv6-zone", Succeeded, netip.MustParseAddrPort("[fe80::1%eth0]:1"),
			[]byte{5, 0, 0, 4, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1}},
		{"ipv4-mapped", Succeeded, netip.MustParseAddrPort("[::ffff:192.0.2.1]:80"), []byte{5, 0, 0, 1, 192, 0, 2, 1, 0, 80}},
		{"invalid", HostUnreachable, netip.AddrPort{}, []byte{5, 4, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"invalid-with-port", GeneralFailure, netip.AddrPortFrom(netip.Addr{}, 80), []byte{5, 1, 0, 1, 0, 0, 0, 0, 0, 0}},
	} {
		var w writeCounter
		if err := WriteReply(&w, tt.rep, tt.bnd); err != nil || len(w.writes) != 1 || !bytes.Equal(w.writes[0], tt.want) {
			t.Errorf("%s: WriteReply wrote % x, %v; want one Write of % x", tt.name, w.writes, err, tt.want)
		}
		if got := AppendReply([]byte{0xaa}, tt.rep, tt.bnd); !bytes.Equal(got, cat([]byte{0xaa}, tt.want)) {
			t.Errorf("%s: AppendReply = % x; want aa % x", tt.name, got, tt.want)
		}
	}
	boom := errors.New("boom")
	if err := WriteReply(failWriter{boom}, Succeeded, netip.AddrPort{}); !errors.Is(err, boom) {
		t.Errorf("WriteReply to a failing writer = %v; want %v wrapped", err, boom)
	}
}

func TestWriteError(t *testing.T) {
	_, _, badVersion := ParseGreeting([]byte{4})
	for _, tt := range []struct {
		name string
		err  error
		want []byte // nil: nothing written
	}{
		{"nil", nil, []byte{5, 1, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"refused", opError(syscall.ECONNREFUSED), []byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"not-allowed", ErrNotAllowed, []byte{5, 2, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"command", ErrCommandNotSupported, []byte{5, 7, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"timeout", os.ErrDeadlineExceeded, []byte{5, 6, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"bad-version", badVersion, nil},
		{"malformed", ErrMalformed, nil},
		{"short", ErrShort, nil},
		{"no-acceptable", ErrNoAcceptableMethod, nil},
		{"auth-failed", ErrAuthFailed, nil},
		{"eof", io.EOF, nil},
		{"unexpected-eof", io.ErrUnexpectedEOF, nil},
		{"negotiate-read-timeout", transportError("request", os.ErrDeadlineExceeded), nil},
	} {
		var w writeCounter
		if err := WriteError(&w, tt.err); err != nil || !bytes.Equal(bytes.Join(w.writes, nil), tt.want) {
			t.Errorf("%s: WriteError wrote % x, %v; want % x", tt.name, w.writes, err, tt.want)
		}
	}
}

// canceledLookupError is the error of a real name lookup whose context was
// cancelled: a *net.DNSError ("operation was canceled") that wraps
// context.Canceled.
func canceledLookupError(t *testing.T) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := &net.Resolver{PreferGo: true}
	_, err := r.LookupNetIP(ctx, "ip4", "pending.test")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !errors.Is(err, context.Canceled) {
		t.Fatalf("lookup with a cancelled context: %v; want a *net.DNSError wrapping context.Canceled", err)
	}
	return err
}
