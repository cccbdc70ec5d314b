package main

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAuthNearMisses checks that no password but the right one
// authenticates: near misses, other users' passwords, empty and 255-byte
// fields all get RFC 1929 status 0x01 and a close. The right passwords (a
// short one and a 255-byte one) are the control: they must succeed.
func TestAuthNearMisses(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("p", 255)
	longUser := strings.Repeat("u", 255)
	addr, _ := startSluice(t, "--users", writeUsers(t, "alice:s3cret\nbob:hunter2\n"+longUser+":"+long+"\n"))
	cases := []struct {
		user, pass string
		ok         bool
	}{
		{"alice", "s3cret", true},
		{longUser, long, true},
		{"alice", "s3cre", false},
		{"alice", "s3cret!", false},
		{"alice", "S3cret", false},
		{"alice", "s3creT", false},
		{"alice", "s3cret\x00", false},
		{"alice", "\x00s3cret", false},
		{"alice", "hunter2", false},
		{"alice", "", false},
		{"alice", long, false},
		{"", "s3cret", false},
		{"", "", false},
		{"Alice", "s3cret", false},
		{"alice\x00", "s3cret", false},
		{"bob", "s3cret", false},
		{longUser, long[:254] + "q", false},
		{longUser, long[:254], false},
		{longUser[:254], long, false},
		{strings.Repeat("x", 255), strings.Repeat("y", 255), false},
	}
	for i, tc := range cases {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			c := dialSluice(t, addr)
			msg := append([]byte{5, 1, 2, 1, byte(len(tc.user))}, tc.user...)
			msg = append(append(msg, byte(len(tc.pass))), tc.pass...)
			mustWrite(t, c, msg) // -> greeting, user/pass
			expect(t, c, []byte{5, 2})
			if tc.ok {
				expect(t, c, []byte{1, 0})
				return
			}
			expect(t, c, []byte{1, 1})
			expectClosed(t, c)
		})
	}
}

// TestAuthOverlong checks that user names and passwords whose frames claim
// more bytes than are sent, or that are followed by more bytes than the
// frame holds, are rejected cleanly: closed by the handshake timeout or
// answered 0x01, never authenticated, never crashing the server.
func TestAuthOverlong(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	addr, _ := startSluice(t, "--users", writeUsers(t, "alice:s3cret\n"), "--handshake-timeout", "500ms")
	t.Run("ulen-past-end", func(t *testing.T) {
		c := dialSluice(t, addr)
		mustWrite(t, c, append([]byte{5, 1, 2, 1, 255}, "alice"...)) // -> ULEN 255, 5 bytes sent
		expect(t, c, []byte{5, 2})
		expectClosed(t, c) // the handshake timeout
	})
	t.Run("plen-past-end-then-fin", func(t *testing.T) {
		c := dialSluice(t, addr)
		mustWrite(t, c, append([]byte{5, 1, 2, 1, 5, 'a', 'l', 'i', 'c', 'e', 255}, "s3cret"...))
		c.CloseWrite()
		expect(t, c, []byte{5, 2})
		expectClosed(t, c)
	})
	t.Run("trailing-garbage-wrong-password", func(t *testing.T) {
		c := dialSluice(t, addr)
		msg := append([]byte{5, 1, 2, 1, 5}, "alice"...)
		msg = append(append(msg, 255), strings.Repeat("s3cret", 100)...) // 600 password bytes for a 255-byte frame
		mustWrite(t, c, msg)
		expect(t, c, []byte{5, 2, 1, 1})
		expectClosed(t, c)
	})
	t.Run("trailing-garbage-right-password", func(t *testing.T) {
		c := dialSluice(t, addr)
		msg := append([]byte{5, 1, 2, 1, 5}, "alice"...)
		msg = append(append(msg, 6), "s3cret"...)
		mustWrite(t, c, append(msg, bytes.Repeat([]byte{0xff}, 600)...)) // the rest is not a request
		expect(t, c, []byte{5, 2, 1, 0})
		expectClosed(t, c)
	})
	if err := serveOneEcho(addr, echo, "alice", "s3cret", 10*time.Second); err != nil {
		t.Fatalf("a normal client after the over-long ones: %v", err)
	}
}
