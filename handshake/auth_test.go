package handshake

import (
	"strings"
	"testing"
)

func TestUsersValid(t *testing.T) {
	long := strings.Repeat("p", 255)
	users := Users{"alice": "secret", "bob": long, "": "empty-name", "nopass": ""}
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
