package main

import (
	"io"
	"net/netip"
	"sort"
	"strings"
	"testing"
)

// TestSockFlagSources: the command line overrides the configuration file
// whichever form each uses, and within one source a per-side setting wins
// over the both-sides one. A per-side key in the file used to beat a
// both-sides flag on the command line (the file's client-rcvbuf won over
// --rcvbuf). --print-config then reads back to the same sockets.
func TestSockFlagSources(t *testing.T) {
	t.Parallel()
	const k256, m1 = 256 << 10, 1 << 20
	cases := []struct {
		name             string
		file             string
		args             []string
		client, upstream int
	}{
		{"file-side-cli-both", "client-rcvbuf = \"1M\"\n", []string{"--rcvbuf", "256K"}, k256, k256},
		{"file-both-cli-side", "rcvbuf = \"1M\"\n", []string{"--client-rcvbuf", "256K"}, k256, m1},
		{"file-both-and-side", "rcvbuf = \"1M\"\nclient-rcvbuf = \"256K\"\n", nil, k256, m1},
		{"cli-side-and-both", "", []string{"--client-rcvbuf", "256K", "--rcvbuf", "1M"}, k256, m1},
		{"file-side-cli-both-and-other-side", "client-rcvbuf = \"1M\"\nupstream-rcvbuf = 4096\n", []string{"--rcvbuf", "256K", "--upstream-rcvbuf", "8K"}, k256, 8 << 10},
		{"file-side-cli-same-side", "client-rcvbuf = \"1M\"\nrcvbuf = 4096\n", []string{"--client-rcvbuf", "256K"}, k256, 4096},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := tc.args
			if tc.file != "" {
				args = append([]string{"--config", writeConfig(t, tc.file)}, args...)
			}
			cfg, err := parseFlags(args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c, u := cfg.tune.Client.RecvBufferBytes, cfg.tune.Upstream.RecvBufferBytes; c != tc.client || u != tc.upstream {
				t.Fatalf("%q over %q: rcvbuf client %d, upstream %d; want %d, %d", tc.args, tc.file, c, u, tc.client, tc.upstream)
			}
			cfg2, out, err := printAndLoad(t, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if c, u := cfg2.tune.Client.RecvBufferBytes, cfg2.tune.Upstream.RecvBufferBytes; c != tc.client || u != tc.upstream {
				t.Errorf("--print-config reads back rcvbuf client %d, upstream %d; want %d, %d\n%s", c, u, tc.client, tc.upstream, out)
			}
		})
	}
	// Keepalive's switch and a mark follow the same rule.
	cfg, err := parseFlags([]string{"--config", writeConfig(t, "client-keepalive = false\nupstream-mark = 1\n"), "--keepalive", "--mark", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.tune.Client.KeepAliveIdle < 0 || cfg.tune.Upstream.Mark != 2 || cfg.tune.Client.Mark != 2 {
		t.Errorf("--keepalive --mark 2 over the file's client-keepalive = false, upstream-mark = 1: client idle %v (negative: off), marks %d, %d; want on, 2, 2",
			cfg.tune.Client.KeepAliveIdle, cfg.tune.Client.Mark, cfg.tune.Upstream.Mark)
	}
}

// TestConfigFileRuleLines: every error in a rule names the line the rule
// starts on (or the line of its key), whether the rules are [[rule]] tables
// or an inline array, rule = [{...}], which used to be named as line 0; a
// rule key that is not an array of tables ([[rule.x]], [rule], rule.x = 1)
// names its line, where the error had no line and named Go types. A wrong
// type in the second of several rules names that rule, not the last one
// that sets the key.
func TestConfigFileRuleLines(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, file string
		want       []string
	}{
		{"inline", "bind = true\nrule = [{action = \"maybe\"}]\n", []string{":2:", "[[rule]] #1", "maybe"}},
		{"inline-multiline", "bind = true\nrule = [\n  {action = \"deny\"}, # } ] , {\n  {action = \"deny\", domains = [\"a,}{\"]},\n\n  {action = \"maybe\"},\n]\n", []string{":6:", "[[rule]] #3"}},
		{"inline-string-newlines", "rule = [{action = \"deny\"}, {action = '''\n\n''', cidr = [\"\"\"\nx\"\"\"]},\n {action = \"x\"}]\n", []string{":1:", "[[rule]] #2"}},
		{"inline-unknown-key", "bind = true\nrule = [\n{action = \"deny\"},\n{action = \"deny\", port = [\"1\"]}]\n", []string{":4:", `unknown key "port" in [[rule]] #2`}},
		{"inline-client-rule", "bind = true\nclient-rule = [{action = \"deny\", cidr = [\"1/2\"]}]\n", []string{":2:", "[[client-rule]] #1", `"1/2"`}},
		{"inline-not-table", "rule = [\n{action = \"deny\"},\n 5]\n", []string{":3:", "[[rule]] #2: wrong type integer: want a table"}},
		{"array-of-subtables", "bind = true\n[[rule.x]]\na = 1\n", []string{":2:", "rule: wrong type table: want an array of tables, [[rule]]"}},
		{"table", "bind = true\n[rule]\naction = \"deny\"\n", []string{":2:", "rule: wrong type table"}},
		{"subtable", "bind = true\n\n[client-rule.x]\na = 1\n", []string{":3:", "client-rule: wrong type table"}},
		{"dotted", "bind = true\nrule.x = 1\n", []string{":2:", "rule: wrong type table"}},
		{"integer", "bind = true\nrule = 1\n", []string{":2:", "rule: wrong type integer"}},
		{"subtable-of-rule", "bind = true\n[[rule]]\naction = \"deny\"\n[[rule.x]]\na = 1\n", []string{":4:", `unknown key "x" in [[rule]] #1`}},
		{"dotted-in-rule", "[[rule]]\naction = \"deny\"\n[[rule]]\naction = \"deny\"\nx.y = 1\n", []string{":5:", `unknown key "x" in [[rule]] #2`}},
		{"wrong-type-second", "[[rule]]\naction = \"deny\"\ncidr = [\"1.1.1.1\"]\n[[rule]]\naction = \"deny\"\ncidr = \"x\"\n[[rule]]\naction = \"deny\"\ncidr = \"y\"\n", []string{":6:", "[[rule]] #2: cidr: wrong type string: want an array of strings"}},
		{"wrong-element-type", "[[rule]]\naction = \"deny\"\n[[rule]] # two\nAction = \"deny\"\ncidr = [1]\n", []string{":5:", "[[rule]] #2: cidr: wrong type array: want an array of strings"}},
		{"action-not-string", "rule = [{action = \"deny\"}, {action = 1}]\n", []string{":1:", "[[rule]] #2: action: wrong type integer: want a string"}},
		{"after-client-rule", "[[rule]] # c\naction = \"deny\"\n[[client-rule]]\naction = \"deny\"\n[[rule]]\naction = \"allow\"\nports = [\"99999\"]\n", []string{":5:", "[[rule]] #2", `"99999"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			expectFileError(t, tc.file, tc.want...)
		})
	}
	// Keys in any case, as the decoder matches them, and an empty array
	// still load.
	cfg, err := parseFlags([]string{"--config", writeConfig(t, "client-rule = []\nrule = [{Action = \"deny\", CIDR = [\"10.0.0.0/8\"]}]\n")}, io.Discard)
	if err != nil || len(cfg.rules) != 1 || cfg.rules[0].Action != "deny" || len(cfg.rules[0].CIDR) != 1 {
		t.Errorf("inline rules: %v, %+v; want one deny rule", err, cfg)
	}
}

// TestDurationErrors: a duration without a unit ("10"), in a flag or a
// file's key, says that a unit is missing and shows the form, for every
// duration key, socket options' included. The flag package's durations
// said only "parse error", in the file too.
func TestDurationErrors(t *testing.T) {
	t.Parallel()
	base, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n, v := range base.values {
		if v.kind == kindDuration {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, want := range []string{"dial-timeout", "handshake-timeout", "drain-timeout", "keepalive-idle", "upstream-user-timeout"} {
		if !strings.Contains(" "+strings.Join(names, " ")+" ", " "+want+" ") {
			t.Fatalf("duration keys %q lack %s", names, want)
		}
	}
	const form = `want a duration such as "10s", "1m30s" or "500ms"`
	for _, n := range names {
		_, err := parseFlags([]string{"--" + n, "10"}, io.Discard)
		if want := `invalid value "10" for flag --` + n + `: no unit: ` + form; err == nil || err.Error() != want {
			t.Errorf("--%s 10: %v; want %s", n, err, want)
		}
		_, err = parseFlags([]string{"--" + n, "soon"}, io.Discard)
		if want := `invalid value "soon" for flag --` + n + `: ` + form; err == nil || err.Error() != want {
			t.Errorf("--%s soon: %v; want %s", n, err, want)
		}
		path := writeConfig(t, "bind = true\n"+n+" = \"10\"\n")
		_, err = parseFlags([]string{"--config", path}, io.Discard)
		if want := "--config " + path + ":2: " + n + `: invalid value "10": no unit: ` + form; err == nil || err.Error() != want {
			t.Errorf("%s = \"10\" in a file: %v; want %s", n, err, want)
		}
		if _, err := parseFlags([]string{"--config", writeConfig(t, n+" = \"10s\"\n"), "--" + n + "=2s"}, io.Discard); err != nil {
			t.Errorf("%s = \"10s\", --%s=2s: %v", n, n, err)
		}
	}
}

// TestMarkBases: --mark reads a number as iptables --set-mark and ip rule
// fwmark do (strtoul, base 0): decimal, 0x hex, and octal after a leading
// 0, so 010 is 8 there as here; a file's string does the same and a TOML
// integer keeps its TOML meaning. A bad mark says which forms it takes,
// where it said "invalid syntax", and --help describes them.
func TestMarkBases(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want uint32
	}{
		{[]string{"--mark", "010"}, 8},
		{[]string{"--mark", "0x10"}, 16},
		{[]string{"--mark", "0X1f"}, 31},
		{[]string{"--mark", "10"}, 10},
		{[]string{"--mark", "4294967295"}, 1<<32 - 1},
		{[]string{"--config", writeConfig(t, "mark = \"010\"\n")}, 8},
		{[]string{"--config", writeConfig(t, "mark = 0o10\n")}, 8},
		{[]string{"--config", writeConfig(t, "mark = 0x10\n")}, 16},
		{[]string{"--config", writeConfig(t, "mark = 10\n")}, 10},
	} {
		cfg, err := parseFlags(tc.args, io.Discard)
		if err != nil || cfg.tune.Client.Mark != tc.want || cfg.tune.Upstream.Mark != tc.want {
			t.Errorf("%q: %v; want mark %d on both sides", tc.args, err, tc.want)
		}
	}
	const form = "want a mark of 0 to 0xffffffff: decimal, 0x hex, or octal after a leading 0 (010 is 8)"
	for _, v := range []string{"08", "-1", "mark", "0x"} {
		_, err := parseFlags([]string{"--client-mark", v}, io.Discard)
		if want := `invalid value "` + v + `" for flag --client-mark: ` + form; err == nil || err.Error() != want {
			t.Errorf("--client-mark %s: %v; want %s", v, err, want)
		}
	}
	path := writeConfig(t, "mark = \"08\"\n")
	_, err := parseFlags([]string{"--config", path}, io.Discard)
	if want := "--config " + path + `:1: mark: invalid value "08": ` + form; err == nil || err.Error() != want {
		t.Errorf("mark = \"08\": %v; want %s", err, want)
	}
	var help strings.Builder
	parseFlags([]string{"--help"}, &help)
	if !strings.Contains(help.String(), "octal after a leading 0 (010 is 8)") {
		t.Errorf("--help does not say how --mark reads 010:\n%s", help.String())
	}
}

// TestRuleMappedPrefixes: a rule's prefix inside ::ffff:0:0/96 is the IPv4
// prefix it maps, as a destination written as an IPv4-mapped address is the
// IPv4 address it carries; one written in the mapped form but shorter than
// /96 also holds IPv6 addresses (::ffff:0:0/80 is ::/80) and is refused at
// start, naming it: it used to become 0.0.0.0/0, every IPv4 address, and
// dropped the IPv6 ones it holds, ::1 included. A plain IPv6 prefix (::/64,
// ::/0) matches IPv6 destinations only.
func TestRuleMappedPrefixes(t *testing.T) {
	t.Parallel()
	for _, c := range []string{"::ffff:0:0/80", "::ffff:10.0.0.0/95", "::ffff:0:0/0", "::ffff:127.0.0.1/64"} {
		_, err := compilePolicy([]ruleSpec{{Action: "deny", CIDR: []string{c}}}, "allow", false, false)
		if err == nil || !strings.Contains(err.Error(), `cidr "`+c+`": an IPv4-mapped prefix shorter than /96`) {
			t.Errorf("deny %s: %v; want it refused, naming it", c, err)
		}
	}
	expectFileError(t, "bind = true\n[[client-rule]]\naction = \"allow\"\ncidr = [\"::ffff:0:0/80\"]\n",
		":2:", `[[client-rule]] #1: cidr "::ffff:0:0/80": an IPv4-mapped prefix shorter than /96 also holds IPv6 addresses; write 0.0.0.0/0 (or ::ffff:0:0/96) for IPv4 destinations and ::/80 for IPv6 ones`)

	cases := []struct {
		cidr   string
		denied []string
		passed []string
	}{
		{"::ffff:0:0/96", []string{"1.2.3.4", "::ffff:1.2.3.4", "0.0.0.0"}, []string{"::1", "2001:db8::1", "::1.2.3.4"}},
		{"::ffff:10.0.0.0/104", []string{"10.1.2.3", "::ffff:10.1.2.3", "64:ff9b::a01:203"}, []string{"11.0.0.1", "::a01:203"}},
		{"::ffff:10.1.2.3", []string{"10.1.2.3", "::ffff:10.1.2.3"}, []string{"10.1.2.4"}},
		{"::/64", []string{"::1", "::a01:203", "::"}, []string{"::ffff:127.0.0.1", "127.0.0.1", "1::1"}},
		{"::/0", []string{"2001:db8::1", "::1"}, []string{"::ffff:8.8.8.8", "8.8.8.8"}},
	}
	ip := netip.MustParseAddr
	for _, tc := range cases {
		p, err := compilePolicy([]ruleSpec{{Action: "deny", CIDR: []string{tc.cidr}}}, "allow", false, false)
		if err != nil {
			t.Errorf("deny %s: %v", tc.cidr, err)
			continue
		}
		for _, a := range tc.denied {
			if p.allowed(cmdConnect, nil, ip(a), 443) {
				t.Errorf("deny %s: %s allowed; want denied", tc.cidr, a)
			}
		}
		for _, a := range tc.passed {
			if !p.allowed(cmdConnect, nil, ip(a), 443) {
				t.Errorf("deny %s: %s denied; want allowed", tc.cidr, a)
			}
		}
	}
}
