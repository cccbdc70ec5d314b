package main

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"sluice/handshake"
)

// TestPolicy checks rule matching: commands, ports, CIDRs, domains and
// suffixes, first match wins, the default, and the deny-private preset.
func TestPolicy(t *testing.T) {
	t.Parallel()
	specs := []ruleSpec{
		{Action: "allow", CIDR: []string{"10.1.2.3"}, Ports: []string{"22"}},
		{Action: "deny", Commands: []string{"connect"}, Ports: []string{"25", "6000-6063"}},
		{Action: "deny", Domains: []string{"blocked.example", ".internal.example"}},
		{Action: "deny", Commands: []string{"udp"}, CIDR: []string{"192.0.2.0/24", "2001:db8::/32"}},
	}
	p, err := compilePolicy(specs, "allow", true, false)
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr
	cases := []struct {
		name string
		cmd  cmdMask
		host string // a name, or "" for an IP target
		ip   string
		port uint16
		want bool
	}{
		{"public", cmdConnect, "", "8.8.8.8", 443, true},
		{"smtp", cmdConnect, "", "8.8.8.8", 25, false},
		{"smtp-udp", cmdUDP, "", "8.8.8.8", 25, true},
		{"x11-range", cmdConnect, "", "8.8.8.8", 6010, false},
		{"past-range", cmdConnect, "", "8.8.8.8", 6064, true},
		{"exact-domain", cmdConnect, "Blocked.Example.", "8.8.8.8", 80, false},
		{"not-a-suffix", cmdConnect, "notblocked.example", "8.8.8.8", 80, true},
		{"suffix-apex", cmdConnect, "internal.example", "8.8.8.8", 80, false},
		{"suffix-below", cmdConnect, "a.b.internal.example", "8.8.8.8", 80, false},
		{"suffix-lookalike", cmdConnect, "evilinternal.example", "8.8.8.8", 80, true},
		{"udp-cidr", cmdUDP, "", "192.0.2.7", 53, false},
		{"udp-cidr-v6", cmdUDP, "", "2001:db8::1", 53, false},
		{"private-exception", cmdConnect, "", "10.1.2.3", 22, true},
		{"private-exception-port", cmdConnect, "", "10.1.2.3", 23, false},
		{"loopback", cmdConnect, "", "127.0.0.1", 80, false},
		{"loopback-v6", cmdBind, "", "::1", 80, false},
		{"mapped-loopback", cmdConnect, "", "::ffff:127.0.0.1", 80, false},
		{"metadata", cmdConnect, "", "169.254.169.254", 80, false},
		{"cgnat", cmdUDP, "", "100.64.1.1", 53, false},
		{"rfc1918", cmdConnect, "", "192.168.1.1", 80, false},
		{"ula", cmdConnect, "", "fd00::1", 80, false},
		{"link-local-v6", cmdConnect, "", "fe80::1", 80, false},
		{"link-local-v6-zone", cmdBind, "", "fe80::1%eth0", 80, false}, // a BIND peer, a client from package net
		{"udp-cidr-v6-zone", cmdUDP, "", "2001:db8::1%eth0", 53, false},
		{"unspecified", cmdConnect, "", "0.0.0.0", 80, false},
		{"public-v6", cmdConnect, "", "2606:4700::1111", 443, true},
		{"name-to-private", cmdConnect, "rebind.example", "127.0.0.1", 80, false},
		// A private IPv4 address inside the NAT64 well-known prefix (RFC
		// 6052) or a 6to4 prefix (RFC 3056), which a translator or relay
		// router on the path turns back into it.
		{"nat64-metadata", cmdConnect, "", "64:ff9b::169.254.169.254", 80, false},
		{"nat64-loopback", cmdConnect, "", "64:ff9b::7f00:1", 80, false},
		{"nat64-rfc1918", cmdUDP, "", "64:ff9b::a01:203", 53, false},
		{"nat64-public", cmdConnect, "", "64:ff9b::808:808", 443, true},
		{"6to4-rfc1918", cmdConnect, "", "2002:c0a8:101::1", 80, false},
		{"6to4-metadata", cmdConnect, "", "2002:a9fe:a9fe:1::5", 80, false},
		{"6to4-public", cmdConnect, "", "2002:808:808::1", 443, true},
		{"site-local-v6", cmdConnect, "", "fec0::1", 80, false},
	}
	for _, c := range cases {
		var name []byte
		if c.host != "" {
			name = []byte(c.host)
		}
		if got := p.allowed(c.cmd, name, ip(c.ip), c.port); got != c.want {
			t.Errorf("%s: allowed = %v, want %v", c.name, got, c.want)
		}
	}
	if !p.needsIP {
		t.Error("needsIP = false with CIDR rules")
	}
	deny, _ := compilePolicy([]ruleSpec{{Action: "allow", Ports: []string{"443"}}}, "deny", false, false)
	if deny.allowed(cmdConnect, nil, ip("8.8.8.8"), 80) || !deny.allowed(cmdConnect, nil, ip("8.8.8.8"), 443) {
		t.Error("default deny: want 443 allowed and 80 denied")
	}
	if none, _ := compilePolicy(nil, "allow", false, false); none != nil {
		t.Error("no rules and default allow: want a nil policy (nothing to check)")
	}
}

// TestPolicyTranslated: a deny rule's IPv4 prefix also matches that IPv4
// address inside the NAT64 well-known prefix (RFC 6052) or a 6to4 prefix
// (RFC 3056), where it stands in the list (first match still decides); an
// allow rule matches the literal address only, so that an allow list never
// widens by translation; an IPv6 prefix matches as before. Client rules
// share the code: a client deny does the same. A CONNECT or UDP destination
// 0.0.0.0 or :: matches as the loopback address Linux takes it for; BIND's
// (any peer) does not.
func TestPolicyTranslated(t *testing.T) {
	t.Parallel()
	compile := func(def string, client bool, specs ...ruleSpec) *policy {
		t.Helper()
		p, err := compilePolicy(specs, def, false, client)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	deny := func(cidr ...string) ruleSpec { return ruleSpec{Action: "deny", CIDR: cidr} }
	allow := func(cidr ...string) ruleSpec { return ruleSpec{Action: "allow", CIDR: cidr} }
	denyV4 := compile("allow", false, deny("10.0.0.0/8"))
	allowV4 := compile("deny", false, allow("10.0.0.0/8"))
	denyV6 := compile("allow", false, deny("64:ff9b::a00:0/120"), deny("2001:db8::/32"))
	mixed := compile("allow", false, deny("fd00::/8", "10.0.0.0/8"))
	exceptions := compile("allow", false, allow("64:ff9b::a00:5"), allow("10.0.0.6"), deny("10.0.0.0/8"))
	udpOnly := compile("allow", false, ruleSpec{Action: "deny", Commands: []string{"udp"}, CIDR: []string{"10.0.0.0/8"}})
	client := compile("allow", true, deny("10.0.0.0/8"))
	denyLoop := compile("allow", false, deny("127.0.0.0/8", "::1/128"))
	allowLoop := compile("deny", false, allow("127.0.0.0/8"))
	cases := []struct {
		name string
		p    *policy
		cmd  cmdMask
		ip   string
		want bool
	}{
		{"deny-loopback/any4-connect", denyLoop, cmdConnect, "0.0.0.0", false},
		{"deny-loopback/any4-mapped-udp", denyLoop, cmdUDP, "::ffff:0.0.0.0", false},
		{"deny-loopback/any6-connect", denyLoop, cmdConnect, "::", false},
		{"deny-loopback/any4-bind", denyLoop, cmdBind, "0.0.0.0", true}, // BIND's 0.0.0.0: any peer
		{"deny-loopback/0.0.0.1", denyLoop, cmdConnect, "0.0.0.1", true},
		{"allow-loopback/any4", allowLoop, cmdConnect, "0.0.0.0", true},
		{"deny-v4/literal", denyV4, cmdConnect, "10.0.0.1", false},
		{"deny-v4/nat64", denyV4, cmdConnect, "64:ff9b::a00:1", false},
		{"deny-v4/nat64-dotted", denyV4, cmdUDP, "64:ff9b::10.255.255.255", false},
		{"deny-v4/6to4", denyV4, cmdConnect, "2002:0a00:0001::1", false},
		{"deny-v4/mapped", denyV4, cmdConnect, "::ffff:10.0.0.1", false},
		{"deny-v4/nat64-public", denyV4, cmdConnect, "64:ff9b::808:808", true},
		{"deny-v4/6to4-public", denyV4, cmdConnect, "2002:808:808::1", true},
		{"deny-v4/local-use-nat64", denyV4, cmdConnect, "64:ff9b:1::a00:1", true}, // RFC 8215's prefix: the network's own mapping, not known here
		{"deny-v4/v4-compatible", denyV4, cmdConnect, "::a00:1", true},
		{"deny-v4/public-v6", denyV4, cmdConnect, "2606:4700::1111", true},
		{"allow-v4/literal", allowV4, cmdConnect, "10.0.0.1", true},
		{"allow-v4/nat64", allowV4, cmdConnect, "64:ff9b::a00:1", false},
		{"allow-v4/6to4", allowV4, cmdConnect, "2002:0a00:0001::1", false},
		{"deny-v6/nat64-literal", denyV6, cmdConnect, "64:ff9b::a00:1", false},
		{"deny-v6/nat64-outside", denyV6, cmdConnect, "64:ff9b::a00:101", true},
		{"deny-v6/v4-of-it", denyV6, cmdConnect, "10.0.0.1", true},
		{"deny-v6/doc", denyV6, cmdConnect, "2001:db8::1", false},
		{"deny-v6/6to4", denyV6, cmdConnect, "2002:0a00:0001::1", true},
		{"mixed/v6", mixed, cmdConnect, "fd00::1", false},
		{"mixed/nat64", mixed, cmdConnect, "64:ff9b::a00:1", false},
		{"mixed/nat64-public", mixed, cmdConnect, "64:ff9b::808:808", true},
		{"exceptions/allowed-literal-first", exceptions, cmdConnect, "64:ff9b::a00:5", true},
		{"exceptions/v4-allow-not-widened", exceptions, cmdConnect, "64:ff9b::a00:6", false},
		{"exceptions/v4-allow-literal", exceptions, cmdConnect, "10.0.0.6", true},
		{"exceptions/denied", exceptions, cmdConnect, "2002:a00:7::1", false},
		{"udp-only/connect", udpOnly, cmdConnect, "64:ff9b::a00:1", true},
		{"udp-only/udp", udpOnly, cmdUDP, "64:ff9b::a00:1", false},
		{"client/nat64", client, 0, "64:ff9b::a00:1", false},
		{"client/6to4", client, 0, "2002:a00:1::1", false},
		{"client/public", client, 0, "64:ff9b::808:808", true},
	}
	for _, c := range cases {
		if got := c.p.allowed(c.cmd, nil, netip.MustParseAddr(c.ip), 443); got != c.want {
			t.Errorf("%s: %s allowed = %v, want %v", c.name, c.ip, got, c.want)
		}
	}
}

// TestPolicyNoAlloc checks that a rule check on the session path does not
// allocate.
func TestPolicyNoAlloc(t *testing.T) {
	p, err := compilePolicy([]ruleSpec{
		{Action: "deny", Domains: []string{".example"}, Ports: []string{"1-100"}},
		{Action: "deny", CIDR: []string{"10.0.0.0/8"}},
	}, "allow", true, false)
	if err != nil {
		t.Fatal(err)
	}
	name, ip, nat64 := []byte("a.example.org"), netip.MustParseAddr("8.8.4.4"), netip.MustParseAddr("64:ff9b::808:404")
	allocs := testing.AllocsPerRun(200, func() {
		p.allowed(cmdUDP, name, ip, 443)
		p.allowed(cmdConnect, nil, nat64, 443)
	})
	if allocs != 0 {
		t.Fatalf("allowed: %v allocs/op, want 0", allocs)
	}
}

// TestDestinationRules checks rules on real sockets: an IP target, a name
// that resolves to a denied address (no DNS-rebinding bypass), an
// exception, BIND, and UDP datagrams.
func TestDestinationRules(t *testing.T) {
	t.Parallel()
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	port := echo.Addr().(*net.TCPAddr).Port
	other := echoServer(t, "tcp", "127.0.0.1:0")
	otherPort := other.Addr().(*net.TCPAddr).Port
	uecho, _ := udpEcho(t, "udp4", "127.0.0.1:0")
	udenied, udeniedGot := udpEcho(t, "udp4", "127.0.0.1:0")
	cfgFile := writeConfig(t, `
deny-private = true
[[rule]]
action = "allow"
commands = ["connect", "udp"]
cidr = ["127.0.0.1/32"]
ports = ["`+strconv.Itoa(port)+`", "`+strconv.Itoa(uecho.LocalAddr().(*net.UDPAddr).Port)+`"]
`)
	var logBuf syncBuffer
	addr, _ := startSluiceResolver(t, fixedResolver(t, netip.MustParseAddr("127.0.0.1")), &logBuf, "--config", cfgFile)
	lo := netip.MustParseAddr("127.0.0.1")

	t.Run("ip-allowed", func(t *testing.T) {
		c, rep := request(t, addr, handshake.CmdConnect, handshake.AddrFromAddrPort(netip.AddrPortFrom(lo, uint16(port))))
		if rep != 0 {
			t.Fatalf("REP = %#02x, want 0", rep)
		}
		mustWrite(t, c, []byte("ok"))
		expect(t, c, []byte("ok"))
	})
	t.Run("ip-denied", func(t *testing.T) {
		c, rep := request(t, addr, handshake.CmdConnect, handshake.AddrFromAddrPort(netip.AddrPortFrom(lo, uint16(otherPort))))
		if rep != 0x02 {
			t.Fatalf("REP = %#02x, want 0x02", rep)
		}
		expectClosed(t, c)
	})
	t.Run("name-allowed-dials-resolved-ip", func(t *testing.T) {
		c, rep := request(t, addr, handshake.CmdConnect, domainAddr("allowed.test", port))
		if rep != 0 {
			t.Fatalf("REP = %#02x, want 0", rep)
		}
		mustWrite(t, c, []byte("by name"))
		expect(t, c, []byte("by name"))
	})
	t.Run("name-resolving-to-denied", func(t *testing.T) {
		c, rep := request(t, addr, handshake.CmdConnect, domainAddr("rebind.test", otherPort))
		if rep != 0x02 {
			t.Fatalf("REP = %#02x, want 0x02", rep)
		}
		expectClosed(t, c)
	})
	t.Run("bind-denied", func(t *testing.T) {
		c, rep := request(t, addr, handshake.CmdBind, handshake.AddrFromAddrPort(netip.AddrPortFrom(lo, 0)))
		if rep != 0x02 {
			t.Fatalf("REP = %#02x, want 0x02", rep)
		}
		expectClosed(t, c)
	})
	t.Run("udp-datagram-denied", func(t *testing.T) {
		c, relayAddr := associateUDP(t, addr)
		defer c.Close()
		u := udpClient(t, "127.0.0.1", relayAddr)
		denied := handshake.AddrFromAddrPort(udenied.LocalAddr().(*net.UDPAddr).AddrPort())
		if _, err := u.Write(append(handshake.AppendUDPHeader(nil, handshake.UDPHeader{Addr: denied}), "no"...)); err != nil {
			t.Fatal(err)
		}
		allowed := handshake.AddrFromAddrPort(uecho.LocalAddr().(*net.UDPAddr).AddrPort())
		roundTrip(t, u, allowed, []byte("yes"), allowed.AddrPort()) // sent after the denied one
		if n := udeniedGot.Load(); n != 0 {
			t.Fatalf("denied destination got %d datagrams", n)
		}
	})
	if !waitFor(5*time.Second, func() bool { return strings.Contains(logBuf.String(), "reply=not_allowed") }) {
		t.Errorf("no access-log line with reply=not_allowed; log:\n%s", logBuf.String())
	}
}

// TestClientRules checks that a denied client is closed before it is read
// and an allowed one is served.
func TestClientRules(t *testing.T) {
	t.Parallel()
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	denyLo := writeConfig(t, "[[client-rule]]\naction = \"deny\"\ncidr = [\"127.0.0.0/8\"]\n")
	allowLo := writeConfig(t, "client-default-policy = \"deny\"\n[[client-rule]]\naction = \"allow\"\ncidr = [\"127.0.0.1\"]\n")
	denied, _ := startSluice(t, "--config", denyLo)
	allowed, _ := startSluice(t, "--config", allowLo)
	c := dialSluice(t, denied)
	mustWrite(t, c, []byte{5, 1, 0})
	expectClosed(t, c)
	c = connectRaw(t, allowed, echo.Addr().(*net.TCPAddr))
	mustWrite(t, c, []byte("in"))
	expect(t, c, []byte("in"))
}

// BenchmarkDenyPrivate is the deny-private preset's cost for a CONNECT to a
// public address, which every prefix is checked against.
func BenchmarkDenyPrivate(b *testing.B) {
	p, err := compilePolicy(nil, "allow", true, false)
	if err != nil {
		b.Fatal(err)
	}
	for _, ip := range []string{"8.8.8.8", "2606:4700::1111"} {
		b.Run(ip, func(b *testing.B) {
			a := netip.MustParseAddr(ip)
			for b.Loop() {
				if !p.allowed(cmdConnect, nil, a, 443) {
					b.Fatal("denied")
				}
			}
		})
	}
}

// BenchmarkPolicy is a user rule list's cost: deny rules with IPv4 and IPv6
// prefixes and a port rule before an allow, for a CONNECT that none of them
// matches (every rule tried), to IPv4, to IPv6, and to a public IPv4
// address inside the NAT64 prefix (the deny rules' IPv4 prefixes checked
// against it too).
func BenchmarkPolicy(b *testing.B) {
	p, err := compilePolicy([]ruleSpec{
		{Action: "deny", CIDR: []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}},
		{Action: "deny", CIDR: []string{"fd00::/8", "169.254.0.0/16"}},
		{Action: "deny", Commands: []string{"connect"}, Ports: []string{"25"}},
		{Action: "allow", CIDR: []string{"192.0.2.0/24"}},
	}, "allow", false, false)
	if err != nil {
		b.Fatal(err)
	}
	for _, ip := range []string{"8.8.8.8", "2606:4700::1111", "64:ff9b::808:808"} {
		b.Run(ip, func(b *testing.B) {
			a := netip.MustParseAddr(ip)
			for b.Loop() {
				if !p.allowed(cmdConnect, nil, a, 443) {
					b.Fatal("denied")
				}
			}
		})
	}
}

// TestPolicyMayAllow: whether any BIND peer could pass, in rule order.
func TestPolicyMayAllow(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		def   string
		rules []ruleSpec
		want  bool
	}{
		{"no rules, allow", "allow", nil, true},
		{"no rules, deny", "deny", nil, false},
		{"deny with allow for connect only", "deny", []ruleSpec{{Action: "allow", Commands: []string{"connect"}}}, false},
		{"deny with allow for some peers", "deny", []ruleSpec{{Action: "allow", CIDR: []string{"192.0.2.0/24"}}}, true},
		{"deny-all bind first", "allow", []ruleSpec{{Action: "deny", Commands: []string{"bind"}}, {Action: "allow"}}, false},
		{"narrow deny, then default allow", "allow", []ruleSpec{{Action: "deny", CIDR: []string{"10.0.0.0/8"}}}, true},
		{"narrow deny, then default deny", "deny", []ruleSpec{{Action: "deny", Ports: []string{"25"}}}, false},
		{"allow before deny-all", "deny", []ruleSpec{{Action: "allow", Commands: []string{"bind"}, Ports: []string{"20"}}, {Action: "deny"}}, true},
	} {
		p, err := compilePolicy(tc.rules, tc.def, false, false)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.mayAllow(cmdBind); got != tc.want {
			t.Errorf("%s: mayAllow(bind) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestPolicyMayAllowTo: whether any BIND peer could pass once DST.PORT and
// the name in DST.ADDR (nil for 0.0.0.0) are known.
func TestPolicyMayAllowTo(t *testing.T) {
	t.Parallel()
	denyName := ruleSpec{Action: "deny", Domains: []string{".bad.test"}}
	allowNet := ruleSpec{Action: "allow", CIDR: []string{"192.0.2.0/24"}}
	for _, tc := range []struct {
		name  string
		def   string
		rules []ruleSpec
		host  string
		port  uint16
		want  bool
	}{
		{"denied name, address rules after", "deny", []ruleSpec{denyName, allowNet}, "ftp.bad.test", 21, false},
		{"other name, address rules after", "deny", []ruleSpec{denyName, allowNet}, "ftp.good.test", 21, true},
		{"address rule before the name's deny", "deny", []ruleSpec{allowNet, denyName}, "ftp.bad.test", 21, true},
		{"denied port", "allow", []ruleSpec{{Action: "deny", Ports: []string{"20-21"}}, allowNet}, "", 21, false},
		{"other port", "allow", []ruleSpec{{Action: "deny", Ports: []string{"20-21"}}, allowNet}, "", 2121, true},
		{"narrow deny, then default deny", "deny", []ruleSpec{{Action: "deny", CIDR: []string{"10.0.0.0/8"}}}, "x.test", 21, false},
		{"narrow deny, then default allow", "allow", []ruleSpec{{Action: "deny", CIDR: []string{"10.0.0.0/8"}}}, "x.test", 21, true},
		{"domain allow for another name", "deny", []ruleSpec{{Action: "allow", Domains: []string{"ftp.good.test"}}, {Action: "deny", CIDR: []string{"10.0.0.0/8"}}}, "ftp.bad.test", 21, false},
		{"no name: domain rules never match", "deny", []ruleSpec{{Action: "allow", Domains: []string{".test"}}, allowNet}, "", 21, true},
	} {
		p, err := compilePolicy(tc.rules, tc.def, false, false)
		if err != nil {
			t.Fatal(err)
		}
		var name []byte
		if tc.host != "" {
			name = []byte(tc.host)
		}
		if got := p.mayAllowTo(cmdBind, name, tc.port); got != tc.want {
			t.Errorf("%s: mayAllowTo(bind, %q, %d) = %v, want %v", tc.name, tc.host, tc.port, got, tc.want)
		}
	}
}
