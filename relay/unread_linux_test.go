package relay

import (
	"syscall"
	"testing"
)

// TestUnreadPastTheMark: unread, which decides whether a session that the
// idle timeout or the context ends drops bytes acknowledged for a peer (and
// so resets it), counts the bytes behind an urgent mark too. SIOCINQ stops
// at the mark, 0 there though bytes came after it; the urgent byte alone,
// which the relay never forwards, is no byte left unread.
func TestUnreadPastTheMark(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		sends []string // odd places go with MSG_OOB
		want  bool
	}{
		{"nothing", nil, false},
		{"plain bytes", []string{"abc"}, true},
		{"the urgent byte alone", []string{"", "!"}, false},
		{"bytes behind the mark", []string{"", "!", "xyz"}, true},
		{"bytes before and behind the mark", []string{"abc", "!", "xyz"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sender, receiver := tcpPair(t)
			for i, b := range tc.sends {
				if b != "" {
					send(t, sender, b, map[bool]int{true: syscall.MSG_OOB}[i%2 == 1])
				}
			}
			waitAcked(t, sender) // all of it in receiver's queue
			rc, err := receiver.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var got bool
			rc.Control(func(fd uintptr) { got = unread(int(fd)) })
			if got != tc.want {
				t.Fatalf("unread after %q: %v, want %v", tc.sends, got, tc.want)
			}
		})
	}
}
