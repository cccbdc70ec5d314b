package main

import (
	"net"
	"testing"
)

// TestReplyCodeGeneralFailure provokes a dial failure that maps to no
// specific code: an IPv6 source address cannot reach an IPv4 target (0x01).
// (0x02 is covered by the access-rule tests, 0x03 by handshake's ReplyFor
// table: provoking ENETUNREACH needs a target off this host.)
func TestReplyCodeGeneralFailure(t *testing.T) {
	t.Parallel()
	echo := echoServer(t, "tcp4", "127.0.0.1:0")
	port := echo.Addr().(*net.TCPAddr).Port
	cases := []struct {
		name  string
		flags []string
		req   []byte
		want  byte
	}{
		{"general-failure", []string{"--source-addr", "::1"}, []byte{5, 1, 0, 1, 127, 0, 0, 1, byte(port >> 8), byte(port)}, 0x01},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr, _ := startSluice(t, tc.flags...)
			c := dialSluice(t, addr)
			mustWrite(t, c, append([]byte{5, 1, 0}, tc.req...)) // -> greeting, CONNECT
			expect(t, c, []byte{5, 0})
			if rep, _ := readReply(t, c); rep != tc.want {
				t.Fatalf("REP = %#02x, want %#02x", rep, tc.want)
			}
			expectClosed(t, c)
		})
	}
}
