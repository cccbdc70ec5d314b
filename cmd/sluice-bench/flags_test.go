package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

// TestRunFlagErrors: flags that cannot work are refused before the run,
// with exit 2 and one line naming the flag. The build before ran with each
// of these: a bad --target or --proxy failed only when the run began (exit
// 1, as for a relay's failure, a line naming no flag); --dir both with one
// address sent the uploads and the downloads to it, whose downloads failed
// after 5 s; a --pass without --user was silently not used; --hold 0 held
// the sessions for the default 2 s.
func TestRunFlagErrors(t *testing.T) {
	t.Parallel()
	const d, tg = "--direct", "--target"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"rr", d, tg, "127.0.0.1"}, "flag --target"},
		{[]string{"rr", d, tg, "127.0.0.1:99999"}, "flag --target"},
		{[]string{"rr", d, tg, "127.0.0.1:0"}, "flag --target"},
		{[]string{"rr", d, tg, "127.0.0.1:1,"}, "flag --target"},
		{[]string{"idle", d, tg, "127.0.0.1:1,127.0.0.1:2"}, "flag --target"},
		{[]string{"udp", d, tg, "127.0.0.1:1,127.0.0.1:2"}, "flag --target"},
		{[]string{"tput", d, tg, "127.0.0.1:1", "--dir", "both"}, "flag --target"},
		{[]string{"tput", d, tg, "127.0.0.1:1,127.0.0.1:2"}, "flag --target"},
		{[]string{"tput", d, tg, "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", "--dir", "both"}, "flag --target"},
		{[]string{"rr", "--proxy", "127.0.0.1", tg, "127.0.0.1:1"}, "flag --proxy"},
		{[]string{"rr", "--proxy", "127.0.0.1:1", tg, "127.0.0.1:1", "--pass", "x"}, "flag --pass"},
		{[]string{"rr", "--proxy", "127.0.0.1:1", tg, "127.0.0.1:1", "--user", strings.Repeat("u", 256)}, "flag --user"},
		{[]string{"rr", "--proxy", "127.0.0.1:1", tg, strings.Repeat("h", 256) + ":1"}, "flag --target"},
		{[]string{"idle", d, tg, "127.0.0.1:1", "--hold", "0"}, "flag --hold"},
		{[]string{"rr", d, tg, "127.0.0.1:1", "--user", "u"}, "flag --user"},
		{[]string{"tput", d, tg, "127.0.0.1:1", "--lockstep"}, "flag --lockstep"},
		// Counts and sizes past their bounds: the run used to die of
		// "out of memory" (a runtime dump) or fail at the first send.
		{[]string{"rr", d, tg, "127.0.0.1:1", "--size", "2000000000"}, "flag --size"},
		{[]string{"rr", d, tg, "127.0.0.1:1", "-c", "2000000000"}, "flag -c"},
		{[]string{"idle", d, tg, "127.0.0.1:1", "-n", "2000000000"}, "flag -n"},
		{[]string{"tput", d, tg, "127.0.0.1:1", "-P", "2000000000"}, "flag -P"},
		{[]string{"tput", d, tg, "127.0.0.1:1", "--buf", "2000000000"}, "flag --buf"},
		{[]string{"udp", d, tg, "127.0.0.1:1", "--window", "2000000000"}, "flag --window"},
		{[]string{"udp", d, tg, "127.0.0.1:1", "--size", "70000"}, "flag --size"},
		{[]string{"udp", d, tg, "127.0.0.1:1", "--size", "8"}, "flag --size"},
		{[]string{"echo", "--buf", "2000000000"}, "flag --buf"},
	} {
		var out, errOut bytes.Buffer
		code := run(tc.args, &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), tc.want) || strings.Count(errOut.String(), "\n") != 1 {
			t.Errorf("run(%q) = %d, stderr %q; want 2 and one line naming %s", tc.args, code, errOut.String(), tc.want)
		}
	}
}

// TestRunMissingPid: --pid of a process that does not exist fails before
// the run, naming the flag, where sampling failed once the load ran.
func TestRunMissingPid(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("--pid samples /proc, Linux only")
	}
	t.Parallel()
	// A PID above the kernel's pid_max: never a process.
	var out, errOut bytes.Buffer
	code := run([]string{"rr", "--direct", "--target", "127.0.0.1:1", "--pid", "2147483647", "--duration", "1s"}, &out, &errOut)
	if code != 2 || !strings.Contains(errOut.String(), "flag --pid") || strings.Count(errOut.String(), "\n") != 1 {
		t.Errorf("run(--pid 2147483647) = %d, stderr %q; want 2 and one line naming --pid", code, errOut.String())
	}
}
