package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"

	"sluice/tune"
)

// sockOpt describes one per-socket option flag. It is registered three times:
// --NAME sets both sides, --client-NAME and --upstream-NAME one side each.
type sockOpt struct {
	name, usage string
	kind        string // its TOML type in a configuration file
	set         func(o *tune.SockOpts, v string) error
	// get gives the value set wrote into a zeroed SockOpts, written as
	// --print-config writes it and set reads it back: "true" for "1" or
	// "T", 10 for "010", 1048576 for "1M", "1m0s" for "60s".
	get    func(o *tune.SockOpts) string
	isBool bool
}

var sockOpts = []sockOpt{
	{name: "rcvbuf", kind: kindSize, usage: "SO_RCVBUF `size` (e.g. 4M); 0 = kernel autotuning",
		set: func(o *tune.SockOpts, v string) error { return setSize(&o.RecvBufferBytes, v) },
		get: func(o *tune.SockOpts) string { return strconv.Itoa(o.RecvBufferBytes) }},
	{name: "sndbuf", kind: kindSize, usage: "SO_SNDBUF `size` (e.g. 4M); 0 = kernel autotuning",
		set: func(o *tune.SockOpts, v string) error { return setSize(&o.SendBufferBytes, v) },
		get: func(o *tune.SockOpts) string { return strconv.Itoa(o.SendBufferBytes) }},
	{name: "nodelay", kind: kindBool, usage: "TCP_NODELAY (Nagle off), as Go sets by default", isBool: true,
		set: func(o *tune.SockOpts, v string) error {
			b, err := strconv.ParseBool(v)
			o.Nagle = !b
			return err
		},
		get: func(o *tune.SockOpts) string { return strconv.FormatBool(!o.Nagle) }},
	// keepalive is applied after every other option (sockFlagSet.apply),
	// so that false wins over an idle time.
	{name: "keepalive", kind: kindBool, usage: "TCP keepalive; false turns it off, whatever --keepalive-idle says", isBool: true,
		set: func(o *tune.SockOpts, v string) error {
			b, err := strconv.ParseBool(v)
			if err == nil && !b {
				o.KeepAliveIdle = -1
			}
			return err
		},
		get: func(o *tune.SockOpts) string { return strconv.FormatBool(o.KeepAliveIdle >= 0) }},
	{name: "keepalive-idle", kind: kindDuration, usage: "idle `duration` before the first keepalive probe; 0 = Go's 15s",
		set: func(o *tune.SockOpts, v string) error {
			return setDurationAtMost(&o.KeepAliveIdle, v, tune.MaxKeepAliveIdle)
		},
		get: func(o *tune.SockOpts) string { return o.KeepAliveIdle.String() }},
	{name: "keepalive-interval", kind: kindDuration, usage: "`duration` between keepalive probes; 0 = Go's 15s",
		set: func(o *tune.SockOpts, v string) error {
			return setDurationAtMost(&o.KeepAliveInterval, v, tune.MaxKeepAliveInterval)
		},
		get: func(o *tune.SockOpts) string { return o.KeepAliveInterval.String() }},
	{name: "keepalive-count", kind: kindInt, usage: "unanswered keepalive probes before the connection drops; 0 = Go's 9",
		set: func(o *tune.SockOpts, v string) error {
			return setIntAtMost(&o.KeepAliveCount, v, tune.MaxKeepAliveCount)
		},
		get: func(o *tune.SockOpts) string { return strconv.Itoa(o.KeepAliveCount) }},
	{name: "user-timeout", kind: kindDuration, usage: "TCP_USER_TIMEOUT `duration`: drop a connection whose sent data stays unacknowledged this long; 0 = off",
		set: func(o *tune.SockOpts, v string) error { return setDuration(&o.UserTimeout, v) },
		get: func(o *tune.SockOpts) string { return o.UserTimeout.String() }},
	{name: "congestion", kind: kindString, usage: "TCP_CONGESTION `algorithm` (e.g. bbr, cubic); empty = system default",
		set: func(o *tune.SockOpts, v string) error { o.Congestion = v; return nil },
		get: func(o *tune.SockOpts) string { return o.Congestion }},
	{name: "notsent-lowat", kind: kindSize, usage: "TCP_NOTSENT_LOWAT `size`; 0 = system default",
		set: func(o *tune.SockOpts, v string) error { return setSize(&o.NotSentLowatBytes, v) },
		get: func(o *tune.SockOpts) string { return strconv.Itoa(o.NotSentLowatBytes) }},
	{name: "quickack", kind: kindBool, usage: "TCP_QUICKACK", isBool: true,
		set: func(o *tune.SockOpts, v string) error {
			b, err := strconv.ParseBool(v)
			o.QuickAck = b
			return err
		},
		get: func(o *tune.SockOpts) string { return strconv.FormatBool(o.QuickAck) }},
	// A mark is read as iptables (--set-mark, xtables_strtoui) and ip rule
	// (fwmark, get_u32) read the marks it is paired with, base 0: 0x10 is
	// 16 and 010 is 8, not 10 as in the decimal counts.
	{name: "mark", kind: kindInt, usage: "SO_MARK `value` (needs CAP_NET_ADMIN), read as iptables --set-mark and ip rule fwmark read it: decimal, 0x hex, or octal after a leading 0 (010 is 8); 0 = none",
		set: func(o *tune.SockOpts, v string) error {
			n, err := strconv.ParseUint(v, 0, 32)
			if errors.Is(err, strconv.ErrSyntax) {
				err = errors.New("want a mark of 0 to 0xffffffff: decimal, 0x hex, or octal after a leading 0 (010 is 8)")
			}
			o.Mark = uint32(n)
			return err
		},
		get: func(o *tune.SockOpts) string { return strconv.FormatUint(uint64(o.Mark), 10) }},
}

// sideFlag is the flag.Value of one registration. Set only validates and
// keeps the value, normalised by opt.get so that --print-config writes what
// --config reads back; sockFlagSet.apply writes it into each SockOpts in
// sides.
type sideFlag struct {
	opt    *sockOpt
	sides  []*tune.SockOpts
	val    string
	isSet  bool
	weight int // 0 = both sides, 1 = one side: applied later, so it wins
}

func (f *sideFlag) String() string   { return f.val }
func (f *sideFlag) IsBoolFlag() bool { return f.opt != nil && f.opt.isBool }
func (f *sideFlag) kind() string     { return f.opt.kind }
func (f *sideFlag) wasSet() bool     { return f.isSet }
func (f *sideFlag) Set(v string) error {
	var probe tune.SockOpts
	if err := f.opt.set(&probe, v); err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) {
			err = ne.Err
		}
		return err
	}
	f.val, f.isSet = f.opt.get(&probe), true
	return nil
}

// sockFlagSet holds every registration so that, after parsing, both-sides
// values are applied before per-side ones whatever their order on the line.
type sockFlagSet []*sideFlag

// registerSockFlags registers --NAME, --client-NAME and --upstream-NAME for
// every socket option and returns the set to apply after fs.Parse.
func registerSockFlags(fs *flag.FlagSet, client, upstream *tune.SockOpts) sockFlagSet {
	var set sockFlagSet
	for i := range sockOpts {
		o := &sockOpts[i]
		both := &sideFlag{opt: o, sides: []*tune.SockOpts{client, upstream}}
		cl := &sideFlag{opt: o, sides: []*tune.SockOpts{client}, weight: 1}
		up := &sideFlag{opt: o, sides: []*tune.SockOpts{upstream}, weight: 1}
		fs.Var(both, o.name, o.usage)
		fs.Var(cl, "client-"+o.name, "like --"+o.name+", for accepted client sockets only")
		fs.Var(up, "upstream-"+o.name, "like --"+o.name+", for upstream sockets only")
		set = append(set, both, cl, up)
	}
	return set
}

// commandLineWins drops each per-side value that came from the
// configuration file where the command line gives the both-sides flag of
// its option: the command line overrides the file whatever the form, so
// --rcvbuf beats the file's client-rcvbuf as it beats the file's rcvbuf
// (within one source a per-side value still wins, in apply). fs holds the
// flags as parsed: fs.Visit sees only those given on the command line, since
// a file's keys set their flags' values directly. A dropped value is unset,
// as --print-config then shows it, so that its output reads back the same.
func (set sockFlagSet) commandLineWins(fs *flag.FlagSet) {
	onLine := make(map[*sideFlag]bool)
	fs.Visit(func(f *flag.Flag) {
		if sf, ok := f.Value.(*sideFlag); ok {
			onLine[sf] = true
		}
	})
	for _, both := range set {
		if both.weight != 0 || !onLine[both] {
			continue
		}
		for _, f := range set {
			if f.opt == both.opt && f.weight == 1 && !onLine[f] {
				f.val, f.isSet = "", false
			}
		}
	}
}

// sideSources maps "--client-NAME" and "--upstream-NAME" to "--NAME" for
// each side whose value came from --NAME (or the file's NAME), not from its
// own flag: tune.Probe names a value refused on one side by that side's
// flag, and with --congestion bad --upstream-congestion cubic the client's
// bad value was typed as --congestion.
func (set sockFlagSet) sideSources() map[string]string {
	from := make(map[string]string)
	for _, both := range set {
		if both.weight != 0 || !both.isSet {
			continue
		}
		for _, f := range set {
			if f.opt != both.opt || f.weight != 1 || f.isSet {
				continue
			}
			side := "--client-"
			if f.sides[0] != both.sides[0] {
				side = "--upstream-"
			}
			from[side+both.opt.name] = "--" + both.opt.name
		}
	}
	return from
}

// apply writes the parsed values into the SockOpts: both-sides first. The
// keepalive switch of each side, decided as any option's is (a per-side flag
// wins), goes in last: --keepalive=false turns keepalive off whatever
// --keepalive-idle says, 0 included (an idle time would otherwise overwrite
// the -1 that means off), and --client-keepalive over it turns it back on
// with that idle time.
func (set sockFlagSet) apply() {
	var keepalive []*sideFlag
	for weight := 0; weight <= 1; weight++ {
		for _, f := range set {
			if !f.isSet || f.weight != weight {
				continue
			}
			if f.opt.name == "keepalive" {
				keepalive = append(keepalive, f)
				continue
			}
			for _, s := range f.sides {
				f.opt.set(s, f.val) // validated in Set
			}
		}
	}
	off := make(map[*tune.SockOpts]bool)
	for _, f := range keepalive { // both-sides first, as above
		for _, s := range f.sides {
			off[s] = f.val == "false"
		}
	}
	for s, isOff := range off {
		if isOff {
			s.KeepAliveIdle = -1
		}
	}
}

// setSize parses a socket option's size: 0 (the kernel's default) or more.
func setSize(p *int, v string) error {
	n, err := parseBytes(v)
	if err == nil && n < 0 {
		err = errors.New("must be 0 (the kernel's default) or more")
	}
	*p = n
	return err
}

// setInt parses a count: 0 (the default) or more.
func setInt(p *int, v string) error {
	n, err := strconv.Atoi(v)
	if err == nil && n < 0 {
		err = errors.New("must be 0 or more")
	}
	*p = n
	return err
}

// setDuration parses a duration: 0 (the default, or off) or more.
func setDuration(p *time.Duration, v string) error {
	d, err := parseDuration(v)
	if err == nil && d < 0 {
		err = errors.New("must be 0 or more")
	}
	*p = d
	return err
}

// setIntAtMost is setInt for a count the kernel takes up to most
// (--keepalive-count): a larger one is refused here, naming the flag,
// where setsockopt would refuse it at start and sluice run with the default.
func setIntAtMost(p *int, v string, most int) error {
	err := setInt(p, v)
	if err == nil && *p > most {
		err = fmt.Errorf("must be %d or less, the most the kernel takes", most)
	}
	return err
}

// setDurationAtMost is setDuration for a time the kernel takes in whole
// seconds, rounded up, up to most (--keepalive-idle, --keepalive-interval),
// refused here past it, as setIntAtMost.
func setDurationAtMost(p *time.Duration, v string, most time.Duration) error {
	err := setDuration(p, v)
	if err == nil && *p > most {
		err = fmt.Errorf("must be %ds or less, the most the kernel takes", most/time.Second)
	}
	return err
}
