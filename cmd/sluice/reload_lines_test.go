package main

import "testing"

// TestReloadFileErrorLines: an error in a configuration file names
// the line that holds it where a [[rule]] header carries a comment, where
// the file starts with a UTF-8 byte order mark, and where a header has
// blanks or quotes inside its brackets; these used to be named as line 0,
// or as the line of another rule.
func TestReloadFileErrorLines(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, file string
		want       []string
	}{
		{"header-comment", "[[rule]] # no SMTP\naction = \"maybe\"\n", []string{":1:", "[[rule]] #1", "maybe"}},
		{"second-after-comment", "[[rule]] # first\naction = \"deny\"\n[[rule]]\naction = \"maybe\"\n", []string{":3:", "[[rule]] #2"}},
		{"client-rule-comment", "[[client-rule]]\t# office\naction = \"allow\"\n[[client-rule]]#x\naction = \"allow\"\ncidr = [\"10.0.0.0/33\"]\n", []string{":3:", "[[client-rule]] #2"}},
		{"blanks-and-quotes", "[[\trule ]]\naction = \"deny\"\n[[ \"rule\" ]]\naction = \"maybe\"\n", []string{":3:", "[[rule]] #2"}},
		{"byte-order-mark", "\ufeffmax-sessions = -1\n", []string{":1:", "max-sessions", "-1"}},
		{"byte-order-mark-rule", "\ufeff[[rule]]\naction = \"maybe\"\n", []string{":1:", "[[rule]] #1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			expectFileError(t, tc.file, tc.want...)
		})
	}
}
