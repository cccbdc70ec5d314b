package main

import (
	"strings"
	"sync"
	"testing"
	"time"

	"sluice/handshake"
)

// TestDeniedNameNotLookedUp: a destination name that a rule denies whatever
// it resolves to (a rule on the name alone) is refused before any DNS
// query, for a CONNECT (0x02) and for a UDP datagram (dropped, counted as
// denied), with address rules beside it too, which make sluice resolve the
// names it lets through itself. The lookup alone would carry what a client
// puts in the name (secret.denied.test) to the denied domain's name
// servers; a datagram to such a name that did not resolve was counted as a
// failed lookup, not as denied. The resolver answers every name NXDOMAIN
// and records it.
func TestDeniedNameNotLookedUp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, rules string }{
		{"name rules only", "[[rule]]\naction = \"deny\"\ndomains = [\".denied.test\"]\n"},
		{"beside an address rule", "[[rule]]\naction = \"deny\"\ndomains = [\".denied.test\"]\n[[rule]]\naction = \"deny\"\ncidr = [\"192.0.2.0/24\"]\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var asked []string
			seen := make(chan string, 64)
			r := loopbackResolver(t, nxdomainNoting(func(q string) {
				mu.Lock()
				asked = append(asked, q)
				mu.Unlock()
				select {
				case seen <- q:
				default:
				}
			}))
			deniedAsked := func() []string {
				mu.Lock()
				defer mu.Unlock()
				var d []string
				for _, q := range asked {
					if strings.HasSuffix(q, "denied.test.") {
						d = append(d, q)
					}
				}
				return d
			}
			var log syncBuffer
			addr, _ := startSluiceResolver(t, r, &log, "--config", writeConfig(t, tc.rules))

			c := dialSluice(t, addr)
			mustWrite(t, c, handshake.AppendRequest([]byte{5, 1, 0}, handshake.CmdConnect, domainAddr("secret.denied.test", 80)))
			expect(t, c, []byte{5, 0})
			if rep, _ := readReply(t, c); rep != byte(handshake.NotAllowed) {
				t.Fatalf("CONNECT secret.denied.test: REP %#02x; want 0x02 not allowed", rep)
			}
			if d := deniedAsked(); len(d) > 0 {
				t.Fatalf("CONNECT looked the denied name up: %q", d)
			}

			// The datagram to the denied name, then one to another name:
			// the association decodes them in order, so once the second
			// is asked, the first one's lookup, had there been one, is in.
			ctl, relayAddr := associateUDP(t, addr)
			u := udpClient(t, "127.0.0.1", relayAddr)
			for _, name := range []string{"secret.denied.test", "probe.test"} {
				if _, err := u.Write(append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{Addr: domainAddr(name, 9)}), "payload"...)); err != nil {
					t.Fatal(err)
				}
			}
			for timeout := time.After(10 * time.Second); ; {
				var q string
				select {
				case q = <-seen:
				case <-timeout:
					t.Fatal("the other name was never looked up")
				}
				if strings.HasPrefix(q, "probe.test.") {
					break
				}
			}
			if d := deniedAsked(); len(d) > 0 {
				t.Fatalf("a UDP datagram to the denied name had it looked up: %q", d)
			}
			ctl.Close()
			if line := udpAccessLine(t, &log); !strings.Contains(line, " denied=1 ") {
				t.Fatalf("access line %q; want the datagram to the denied name counted denied=1", line)
			}
		})
	}
}
