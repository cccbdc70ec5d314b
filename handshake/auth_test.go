package handshake

import (
	"crypto/sha256"
	"strings"
	"testing"
)

func TestUsersValid(t *testing.T) {
	long := strings.Repeat("p", 255)
	over := strings.Repeat("q", 300) // more than RFC 1929 can carry
	users := Users{"alice": "secret", "bob": long, "": "empty-name", "nopass": "", "carol": over}
	for _, tt := range []struct {
		name, user, pass string
		want             bool
	}{
		{"right", "alice", "secret", true},
		{"right-long", "bob", long, true},
		{"wrong", "alice", "secreT", false},
		{"prefix", "alice", "secre", false},
		{"longer", "alice", "secret!", false},
		{"other-users-password", "bob", "secret", false},
		{"unknown-user", "mallory", "secret", false},
		{"unknown-user-dummy-password", "mallory", dummyPassword, false},
		{"empty-password", "alice", "", false},
		{"empty-user-in-table", "", "empty-name", false},
		{"empty-password-in-table", "nopass", "", false},
		{"both-empty", "", "", false},
		{"over-long-stored-prefix", "carol", over[:255], false},
		{"over-long-stored-whole", "carol", over, false},
		{"over-long-given", "bob", long + "p", false},
	} {
		if got := users.Valid([]byte(tt.user), []byte(tt.pass)); got != tt.want {
			t.Errorf("%s: Valid(%q, %q) = %v; want %v", tt.name, tt.user, tt.pass, got, tt.want)
		}
	}
	if (Users{}).Valid([]byte("alice"), []byte("secret")) {
		t.Error("empty table: Valid = true")
	}
	var nilUsers Users
	if nilUsers.Valid([]byte("alice"), []byte("secret")) {
		t.Error("nil table: Valid = true")
	}
}

func TestUsersValidAllocs(t *testing.T) {
	long := strings.Repeat("p", 255)
	users := Users{"alice": long}
	user, right, wrong, unknown := []byte("alice"), []byte(long), []byte("nope"), []byte("mallory")
	ok := true
	allocs := testing.AllocsPerRun(200, func() {
		ok = users.Valid(user, right) && !users.Valid(user, wrong) && !users.Valid(unknown, right)
	})
	if !ok || allocs != 0 {
		t.Fatalf("Valid: results ok=%v, %v allocs/run; want true, 0", ok, allocs)
	}
}

// TestBlockSumFixedBlock checks what makes Valid's time independent of the
// stored password's length without timing it: every password, of any length,
// is digested as one 256-byte block (its length, then its bytes, then zeros),
// so SHA-256 runs the same five compressions for each. A digest of the
// password itself, which took one compression for a short password and five
// for a 255-byte one (220 against 390 ns, telling known user names from
// unknown ones), fails here. Timing is left to BenchmarkUsersValid.
func TestBlockSumFixedBlock(t *testing.T) {
	for n := 0; n <= 300; n++ {
		p := []byte(strings.Repeat("p", n))
		var block [256]byte
		if n <= maxField {
			block[0] = byte(n)
		}
		copy(block[1:], p)
		if got, want := blockSum(p), sha256.Sum256(block[:]); got != want {
			t.Fatalf("blockSum of a %d-byte password is not the digest of its 256-byte block", n)
		}
	}
	// The length goes into the block, so zero padding cannot make two
	// passwords equal.
	if blockSum([]byte("a")) == blockSum([]byte("a\x00")) {
		t.Error(`blockSum("a") equals blockSum("a\x00")`)
	}
	// The unknown user's stand-in goes through the same block.
	if len(dummyPassword) > maxField {
		t.Errorf("dummyPassword is %d bytes, over RFC 1929's %d", len(dummyPassword), maxField)
	}
}

// BenchmarkUsersValid: the cost of one RFC 1929 check, once per
// authenticated session, for a known user (short and 255-byte passwords)
// and an unknown one.
func BenchmarkUsersValid(b *testing.B) {
	users := Users{"alice": "s3cret", "bob": strings.Repeat("p", 255)}
	for _, bc := range []struct{ name, user, pass string }{
		{"known-short", "alice", "s3cret"},
		{"known-255", "bob", strings.Repeat("p", 255)},
		{"unknown", "mallory", "s3cret"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			user, pass := []byte(bc.user), []byte(bc.pass)
			b.ReportAllocs()
			for b.Loop() {
				users.Valid(user, pass)
			}
		})
	}
}
