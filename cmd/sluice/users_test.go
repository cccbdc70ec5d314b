package main

import (
	"strings"
	"testing"
)

// TestUsersFileErrors: a users file that cannot be read as lines is an
// error that names the file and, for a line past the scanner's 64 KiB, the
// line, without repeating the path.
func TestUsersFileErrors(t *testing.T) {
	t.Parallel()
	long := writeUsers(t, "alice:a\n# next\nbob:"+strings.Repeat("x", 70000)+"\n")
	dir := t.TempDir()
	for _, tc := range []struct {
		path, want string
	}{
		{long, "--users " + long + ":3: line too long"},
		{dir, "--users " + dir + ": is a directory"},
	} {
		_, _, err := loadUsers(tc.path)
		if err == nil || err.Error() != tc.want {
			t.Errorf("loadUsers(%s): %v, want %q", tc.path, err, tc.want)
		}
	}
}
