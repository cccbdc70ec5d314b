package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"sluice/handshake"
)

// ruleSpec is one [[rule]] or [[client-rule]] table of the configuration
// file. A rule matches when every field it sets matches (any one value of a
// list is enough); a rule that sets no field matches everything.
type ruleSpec struct {
	Action   string   `toml:"action"`             // "allow" or "deny"
	Commands []string `toml:"commands,omitempty"` // connect, bind, udp; empty: all
	CIDR     []string `toml:"cidr,omitempty"`     // 10.0.0.0/8, ::1/128, or a bare IP
	Ports    []string `toml:"ports,omitempty"`    // "443" or "6000-6063"
	Domains  []string `toml:"domains,omitempty"`  // "example.com" exact, ".example.com" it and below
}

// cmdMask is a set of SOCKS commands a rule applies to; 0 means all.
type cmdMask uint8

const (
	cmdConnect cmdMask = 1 << iota
	cmdBind
	cmdUDP
)

// portRange is an inclusive range of ports.
type portRange struct{ lo, hi uint16 }

// rule is a compiled ruleSpec.
type rule struct {
	allow   bool
	cmds    cmdMask
	nets    []netip.Prefix
	ports   []portRange
	domains [][]byte // lower case, no trailing dot; a leading '.' matches the name and below
	// embedded also matches an IPv6 address that carries an IPv4 one in
	// nets (embedded4): set on every deny rule with an IPv4 prefix, the
	// deny-private preset's included. An allow rule matches the literal
	// address only, so that translation never widens what it lets through.
	embedded bool
}

// policy is an ordered rule list: the first rule that matches decides, and
// the default decides when none does. A nil *policy allows everything.
// It is immutable once built, so sessions read it without locks.
type policy struct {
	rules []rule
	deny  bool // the default: deny when no rule matches
	// needsIP is true when some rule looks at addresses: a domain target is
	// then resolved and every address it resolves to is checked.
	needsIP bool
}

// privateNets are the destinations the deny-private preset refuses:
// addresses that reach the relay host itself or networks behind it.
var privateNets = []string{
	"0.0.0.0/8",       // "this" network; 0.0.0.0 reaches the host itself
	"127.0.0.0/8",     // loopback
	"10.0.0.0/8",      // RFC 1918
	"172.16.0.0/12",   // RFC 1918
	"192.168.0.0/16",  // RFC 1918
	"100.64.0.0/10",   // CGNAT (RFC 6598)
	"169.254.0.0/16",  // link-local, cloud metadata (169.254.169.254)
	"224.0.0.0/4",     // multicast
	"240.0.0.0/4",     // reserved, broadcast
	"::/128",          // unspecified
	"::1/128",         // loopback
	"fe80::/10",       // link-local
	"fec0::/10",       // site-local (deprecated by RFC 3879, still routed by some)
	"fc00::/7",        // unique local (fd00:ec2::254 is a metadata address)
	"ff00::/8",        // multicast
	"64:ff9b:1::/48",  // local-use NAT64 (RFC 8215)
	"2001:db8::/32",   // documentation
	"100::/64",        // discard-only
	"198.18.0.0/15",   // benchmarking
	"192.0.0.0/24",    // IETF protocol assignments
	"192.0.2.0/24",    // TEST-NET-1
	"198.51.100.0/24", // TEST-NET-2
	"203.0.113.0/24",  // TEST-NET-3
}

var (
	nat64WKP = netip.MustParsePrefix("64:ff9b::/96") // RFC 6052
	sixto4   = netip.MustParsePrefix("2002::/16")    // RFC 3056
)

// embedded4 returns the IPv4 address that an IPv6 address carries where a
// translator or relay router on the path turns it back into that address:
// the NAT64 well-known prefix's last 32 bits, 6to4's bits 16 to 47. Deny
// rules with IPv4 prefixes check it too (rule.embedded): without it `deny
// 10.0.0.0/8` would let 64:ff9b::a00:1 reach 10.0.0.1, and deny-private
// 64:ff9b::169.254.169.254 the metadata address, wherever a NAT64
// translator serves the relay host.
func embedded4(ip netip.Addr) (netip.Addr, bool) {
	switch {
	case !ip.Is6():
	case nat64WKP.Contains(ip):
		b := ip.As16()
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixto4.Contains(ip):
		b := ip.As16()
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// compilePolicy builds a destination (client == false) or client policy from
// the configured rules. The deny-private preset comes after the rules, so an
// explicit allow can make an exception to it. It returns nil, meaning allow
// all, when there is nothing to check.
func compilePolicy(specs []ruleSpec, defaultPolicy string, denyPrivate, client bool) (*policy, error) {
	p := &policy{}
	switch defaultPolicy {
	case "", "allow":
	case "deny":
		p.deny = true
	default:
		return nil, fmt.Errorf("default policy %q: want allow or deny", defaultPolicy)
	}
	for i, s := range specs {
		r, err := compileRule(s, client)
		if err != nil {
			return nil, &ruleError{index: i, err: err}
		}
		p.rules = append(p.rules, r)
	}
	if denyPrivate {
		r := rule{embedded: true}
		for _, n := range privateNets {
			r.nets = append(r.nets, netip.MustParsePrefix(n))
		}
		p.rules = append(p.rules, r)
	}
	if len(p.rules) == 0 && !p.deny {
		return nil, nil
	}
	for _, r := range p.rules {
		p.needsIP = p.needsIP || len(r.nets) > 0
	}
	return p, nil
}

// ruleError is an invalid rule; index counts from 0 in the order of the file.
type ruleError struct {
	index int
	err   error
}

func (e *ruleError) Error() string { return fmt.Sprintf("rule #%d: %v", e.index+1, e.err) }
func (e *ruleError) Unwrap() error { return e.err }

func compileRule(s ruleSpec, client bool) (rule, error) {
	var r rule
	switch s.Action {
	case "allow":
		r.allow = true
	case "deny":
	default:
		return r, fmt.Errorf("action %q: want allow or deny", s.Action)
	}
	if client && (len(s.Commands) > 0 || len(s.Ports) > 0 || len(s.Domains) > 0) {
		return r, errors.New("a client rule takes action and cidr only")
	}
	for _, c := range s.Commands {
		switch strings.ToLower(c) {
		case "connect":
			r.cmds |= cmdConnect
		case "bind":
			r.cmds |= cmdBind
		case "udp", "udp-associate", "udp_associate":
			r.cmds |= cmdUDP
		default:
			return r, fmt.Errorf("command %q: want connect, bind or udp", c)
		}
	}
	for _, c := range s.CIDR {
		p, err := parsePrefix(c)
		if err != nil {
			return r, err
		}
		r.nets = append(r.nets, p)
		r.embedded = r.embedded || (!r.allow && p.Addr().Is4())
	}
	for _, ps := range s.Ports {
		pr, err := parsePortRange(ps)
		if err != nil {
			return r, err
		}
		r.ports = append(r.ports, pr)
	}
	for _, d := range s.Domains {
		d = strings.TrimSuffix(strings.ToLower(d), ".")
		if err := checkDomain(d); err != nil {
			return r, err
		}
		r.domains = append(r.domains, []byte(d))
	}
	return r, nil
}

// checkDomain refuses a domain pattern that could never match a name a
// client sends: an empty label ("..example.com", "a..b"), blanks, or a
// wildcard, which a first dot already is.
func checkDomain(d string) error {
	body := strings.TrimPrefix(d, ".")
	switch {
	case strings.HasPrefix(d, "*."):
		return fmt.Errorf("domain %q: write %q (a first dot matches the name and every name below it)", d, d[1:])
	case body == "" || len(d) > 255:
		return fmt.Errorf("domain %q: want a name such as example.com or .example.com", d)
	case strings.HasPrefix(body, ".") || strings.Contains(body, ".."):
		return fmt.Errorf("domain %q: empty label; want a name such as example.com or .example.com", d)
	case strings.ContainsAny(d, "* \t/:@"):
		return fmt.Errorf("domain %q: want a name such as example.com or .example.com (no wildcards, blanks, ports or paths)", d)
	}
	return nil
}

// parsePrefix parses a CIDR or a bare IP (a /32 or /128).
func parsePrefix(s string) (netip.Prefix, error) {
	if addr, zone, ok := strings.Cut(s, "%"); ok {
		// netip would drop the zone, and rules never see one (allowed
		// strips it): say so rather than widen the rule silently.
		return netip.Prefix{}, fmt.Errorf("cidr %q: zones (%%%s) are not matched; write %s, which holds on every link", s, zone, addr)
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		ip = ip.Unmap()
		return netip.PrefixFrom(ip, ip.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, fmt.Errorf("cidr %q: want an address or prefix such as 10.0.0.0/8 or fd00::/8", s)
	}
	if p.Addr().Is4In6() {
		// Rules see an IPv4-mapped destination as the IPv4 address it
		// carries (allowed unmaps it), so a prefix inside ::ffff:0:0/96
		// is the IPv4 prefix it maps. A shorter one also holds IPv6
		// addresses outside that range (::ffff:0:0/80 is ::/80, ::1
		// included), which no IPv4 prefix can say, and the same prefix
		// written ::/80 matches IPv6 destinations only: refuse it rather
		// than pick one of the two meanings.
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("cidr %q: an IPv4-mapped prefix shorter than /96 also holds IPv6 addresses; write 0.0.0.0/0 (or ::ffff:0:0/96) for IPv4 destinations and %v for IPv6 ones", s, p.Masked())
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// parsePortRange parses "443" or "6000-6063".
func parsePortRange(s string) (portRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	b, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if err1 != nil || err2 != nil || a > b {
		return portRange{}, fmt.Errorf("port %q: want a port such as 443 or a range such as 6000-6063", s)
	}
	return portRange{uint16(a), uint16(b)}, nil
}

// allowed reports whether the policy lets cmd reach ip:port, where name is
// the domain name the client asked for (nil for an IP target). ip may be
// invalid only when the policy does not need addresses. It does not
// allocate.
func (p *policy) allowed(cmd cmdMask, name []byte, ip netip.Addr, port uint16) bool {
	if p == nil {
		return true
	}
	// A zone (a link-local address from package net) would keep every
	// prefix from containing ip.
	ip = ip.Unmap().WithZone("")
	if cmd != cmdBind && ip.IsUnspecified() {
		// Linux connects and sends to 0.0.0.0 and :: as to this host:
		// matched as the loopback address they reach, `deny
		// 127.0.0.0/8` holds for them too. (BIND's 0.0.0.0 means any
		// peer.)
		ip = unspecifiedReaches(ip)
	}
	v4, _ := embedded4(ip) // invalid when ip carries none
	for i := range p.rules {
		if p.rules[i].matches(cmd, name, ip, v4, port) {
			return p.rules[i].allow
		}
	}
	return !p.deny
}

// mayAllow reports whether some destination of cmd could be allowed: false
// when, in order, a rule for cmd that looks at nothing else denies before
// any allow rule for cmd, or when no rule for cmd allows and the default
// denies. BIND asks it before it listens for a peer it does not know yet.
func (p *policy) mayAllow(cmd cmdMask) bool { return p.mayPass(cmd, false, nil, 0) }

// mayAllowTo is mayAllow for a destination whose port and name (nil for an
// address) are known and whose address is not: false when every address
// would be denied, as when a rule denies the name whatever it resolves to.
// BIND asks it for a DST.ADDR that is a name or 0.0.0.0.
func (p *policy) mayAllowTo(cmd cmdMask, name []byte, port uint16) bool {
	return p.mayPass(cmd, true, name, port)
}

// mayPass walks the rules for mayAllow (known false: port and name unknown)
// and mayAllowTo. A rule that may match allows something if it allows; if
// it denies, it denies every address only when it looks at no address and
// at nothing else unknown.
func (p *policy) mayPass(cmd cmdMask, known bool, name []byte, port uint16) bool {
	if p == nil {
		return true
	}
	for i := range p.rules {
		r := &p.rules[i]
		if r.cmds != 0 && r.cmds&cmd == 0 {
			continue
		}
		if known && (len(r.ports) > 0 && !matchPort(r.ports, port) || len(r.domains) > 0 && !matchDomain(r.domains, name)) {
			continue
		}
		if r.allow {
			return true
		}
		if len(r.nets) == 0 && (known || len(r.ports) == 0 && len(r.domains) == 0) {
			return false // denies every address
		}
	}
	return !p.deny
}

// unspecifiedReaches is the loopback address that a connect or a send to
// ip, 0.0.0.0 or ::, reaches on Linux.
func unspecifiedReaches(ip netip.Addr) netip.Addr {
	if ip.Is4() {
		return netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	return netip.IPv6Loopback()
}

// matches reports whether r matches; v4 is the IPv4 address ip carries
// (embedded4), invalid when none, which a rule with embedded set matches
// as it would ip.
func (r *rule) matches(cmd cmdMask, name []byte, ip, v4 netip.Addr, port uint16) bool {
	if r.cmds != 0 && r.cmds&cmd == 0 {
		return false
	}
	if len(r.ports) > 0 && !matchPort(r.ports, port) {
		return false
	}
	if len(r.nets) > 0 && !matchNet(r.nets, ip) && (!r.embedded || !matchNet(r.nets, v4)) {
		return false
	}
	return len(r.domains) == 0 || matchDomain(r.domains, name)
}

func matchPort(ranges []portRange, port uint16) bool {
	for _, pr := range ranges {
		if port >= pr.lo && port <= pr.hi {
			return true
		}
	}
	return false
}

func matchNet(nets []netip.Prefix, ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	for _, n := range nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// matchDomain compares case-insensitively; a trailing dot on name is ignored.
func matchDomain(pats [][]byte, name []byte) bool {
	if len(name) == 0 {
		return false
	}
	name = bytes.TrimSuffix(name, []byte("."))
	for _, d := range pats {
		if d[0] != '.' {
			if bytes.EqualFold(name, d) {
				return true
			}
			continue
		}
		if bytes.EqualFold(name, d[1:]) ||
			(len(name) > len(d) && bytes.EqualFold(name[len(name)-len(d):], d)) {
			return true
		}
	}
	return false
}

// errDenied is the error of a request the destination rules refuse; it maps
// to reply 0x02.
type errDenied struct {
	ip netip.Addr // the refused address; invalid when the name was refused
}

func (e errDenied) Error() string {
	if e.ip.IsValid() {
		return "rules: destination " + e.ip.String() + " denied: connection not allowed by ruleset"
	}
	return "rules: destination denied: connection not allowed by ruleset"
}

func (e errDenied) Unwrap() error { return handshake.ErrNotAllowed }
