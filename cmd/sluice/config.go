package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"sluice/relay"
	"sluice/tune"
)

// config is everything the flags say. Libraries get their part as option
// structs; nothing below cmd reads flags.
type config struct {
	// resolver, when set (tests only), resolves upstream names and --listen
	// host names instead of the system's resolver.
	resolver *net.Resolver
	// noWaiter (tests only) starts the server as when its waiter could not
	// be made: bare clients that must wait do so in package os's poller.
	noWaiter bool
	// fallbackDelay (tests only), when not 0, replaces defaultFallbackDelay.
	fallbackDelay time.Duration
	// watchAfter (tests only), when not 0, replaces defaultWatchAfter;
	// negative: a pending dial's client is watched at once.
	watchAfter time.Duration
	// acceptBackoff (tests only), when not 0, is every accept back-off's
	// delay, the first included, instead of 5 ms doubling to 1 s.
	acceptBackoff time.Duration
	// sideFlagFrom maps a per-side flag (--client-congestion) to the
	// both-sides flag that set that side's value (--congestion), where one
	// did: a warning about the value names the flag the operator used.
	sideFlagFrom map[string]string
	// logWriter, set by run, is the writer the logger writes through: a
	// log line never waits on stderr, so sessions write theirs where they
	// are, on an accept loop or an event loop, and the lines it drops are
	// sluice_log_lines_dropped_total. nil: a logger handed to start, which
	// may block.
	logWriter        *logWriter
	listen           []string
	usersFile        string
	allowOpenRelay   bool
	handshakeTimeout time.Duration
	drainTimeout     time.Duration
	bind             bool
	bindTimeout      time.Duration
	udp              bool
	udpIdleTimeout   time.Duration
	udpFilter        string
	pin              bool
	workers          int
	logLevel         slog.Level
	logFormat        string
	profile          string
	profileDir       string
	debugAddr        string
	debugPublic      bool
	tune             tune.Options
	relay            relay.Options

	configFile         string
	printConfig        bool
	accessLog          bool
	netSockets         bool
	metricsAddr        string
	maxSessions        int
	maxSessionsPerIP   int
	maxSessionsPerUser int
	denyPrivate        bool
	defaultPolicy      string
	clientPolicy       string
	clientRules        []ruleSpec
	rules              []ruleSpec
	// values is every flag's effective value, as --print-config shows it
	// and as a reload compares it.
	values map[string]flagValue
	// fileLines is the line of each top-level key of configFile.
	fileLines map[string]int
}

// flagValue is one key's effective value and the TOML type it takes.
type flagValue struct {
	val   string
	kind  string // kindBool, kindInt, kindSize, kindDuration, kindString, kindList
	unset bool   // a socket option no flag or key set: the kernel's default
}

const defaultListen = "127.0.0.1:1080"

// testResolver, when set (tests only: a child of the test binary run as
// sluice), is the resolver of every configuration parseFlags returns, as
// config.resolver is for a test that calls start itself.
var testResolver *net.Resolver

// defaultDeferAccept is --defer-accept's default: 1 s on Linux, where the
// greeting is then in the socket when accept returns and a bare client's
// first read needs no poller (bareAccept); off elsewhere.
func defaultDeferAccept() time.Duration {
	if runtime.GOOS == "linux" {
		return time.Second
	}
	return 0
}

// parseFlags maps the command line onto a config. Errors are one line naming
// the flag; --help prints the usage to w and returns flag.ErrHelp.
func parseFlags(args []string, w io.Writer) (*config, error) {
	cfg := &config{resolver: testResolver}
	fs := flag.NewFlagSet("sluice", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var listen listFlag
	fs.StringVar(&cfg.configFile, "config", "", "read settings from this TOML `file` first; flags given too override it")
	fs.BoolVar(&cfg.printConfig, "print-config", false, "print the effective configuration as TOML and exit")
	fs.Var(&listen, "listen", "`address` to serve SOCKS5 on, host:port; a host name serves on each of its addresses; repeatable (default "+defaultListen+")")
	fs.StringVar(&cfg.usersFile, "users", "", "`file` of name:password lines; makes RFC 1929 username/password mandatory")
	fs.BoolVar(&cfg.allowOpenRelay, "allow-open-relay", false, "allow listening on a non-loopback address without --users")
	durationVar(fs, &cfg.handshakeTimeout, "handshake-timeout", 10*time.Second, "close clients that have not completed the SOCKS handshake in this `duration`")
	durationVar(fs, &cfg.tune.DialTimeout, "dial-timeout", 10*time.Second, "give up connecting to a target after this `duration` (reply 0x06); 0 = 10s; negative = no limit but the kernel's SYN retries")
	durationVar(fs, &cfg.relay.IdleTimeout, "idle-timeout", 0, "end sessions that moved no byte for this `duration`; 0 = never")
	fs.BoolVar(&cfg.bind, "bind", true, "serve the BIND command (false answers it with 0x07)")
	durationVar(fs, &cfg.bindTimeout, "bind-timeout", 60*time.Second, "BIND: wait this `duration` for the peer to connect (then reply 0x06)")
	fs.BoolVar(&cfg.udp, "udp", true, "serve the UDP ASSOCIATE command (false answers it with 0x07)")
	durationVar(fs, &cfg.udpIdleTimeout, "udp-idle-timeout", 60*time.Second, "end a UDP association that relayed no datagram for this `duration`; 0 = only when its control connection closes")
	fs.StringVar(&cfg.udpFilter, "udp-filter", "addr-port", "UDP ASSOCIATE: relay to the client only datagrams from an address and port it sent to (`addr-port`), from any port of such an address (addr), or from anyone (none: full cone)")
	durationVar(fs, &cfg.drainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM/SIGINT, let live sessions finish for up to this `duration`")
	fs.Var(byteSize{&cfg.relay.PipeBytes}, "pipe-size", "splice pipe `size` (e.g. 1M); 0 = 1 MiB; negative = kernel default")
	fs.Var(byteSize{&cfg.relay.CopyBelow}, "copy-below", "relay reads of fewer than `size` bytes (e.g. 16K) with read/write through a buffer that size, splicing once a read fills it; 0 = splice every read (at most 1M)")
	fs.Var(decimal{&cfg.relay.Loops}, "loops", "splice event loops (`N`), each serving many sessions without a goroutine each; 0 = 4 per usable CPU; negative = none (two goroutines per session)")
	fs.BoolVar(&cfg.relay.ForceCopy, "no-splice", false, "relay with read/write instead of splice(2) (for comparison)")
	fs.BoolVar(&cfg.netSockets, "net-sockets", false, "accept and dial through Go's net package instead of bare sockets handed to the relay's event loops (for comparison)")
	fs.Var(decimal{&cfg.tune.Listeners}, "listeners", "`N` SO_REUSEPORT listening sockets per --listen address, each with its own accept loop; 0 = one per usable CPU")
	fs.BoolVar(&cfg.pin, "pin", false, "pin each accept loop's OS thread to one CPU")
	fs.Var(decimal{&cfg.workers}, "workers", "run `N` worker processes, each with GOMAXPROCS=1, pinned to its own CPU, with its own SO_REUSEPORT listeners (every --listen needs a port, not 0); 0 = one process")
	fs.Var(decimal{&cfg.tune.Backlog}, "backlog", "listen backlog of `N` connections; 0 = the kernel's somaxconn")
	fs.Var(decimal{&cfg.tune.FastOpenQueue}, "fastopen", "TCP_FASTOPEN queue `length` on listeners; 0 = off")
	durationVar(fs, &cfg.tune.DeferAccept, "defer-accept", defaultDeferAccept(), "TCP_DEFER_ACCEPT: wake accept only when the client has sent data (a SOCKS5 client speaks first), waiting up to this `duration`; 0 = off")
	fs.BoolVar(&cfg.tune.SmartAccept, "smart-accept", runtime.GOOS == "linux", "TCP_QUICKACK=0 on listeners: the ACK of a client's first data (greeting and request) rides on sluice's answer instead of a segment of its own; --quickack turns it off")
	fs.BoolVar(&cfg.tune.SmartConnect, "smart-connect", false, "TCP_QUICKACK=0 on upstream sockets before connect: the ACK ending the handshake rides on the first bytes sent to the target; for targets whose clients speak first (HTTP, TLS), since a target that speaks first waits up to 200 ms for its connection")
	fs.BoolVar(&cfg.tune.FastOpenConnect, "fastopen-connect", false, "TCP_FASTOPEN_CONNECT on upstream connections")
	fs.Var(addrFlag{&cfg.tune.SourceAddr}, "source-addr", "source `IP` for upstream connections")
	fs.Var(portsFlag{&cfg.tune.SourcePorts}, "source-ports", "local `ports` for upstream connections (IP_LOCAL_PORT_RANGE): off (the kernel's choice), LOW-HIGH, or all; faster connects at high rates to one target, at a cost to bind(port 0) on this host (see README)")
	fs.StringVar(&cfg.tune.Interface, "interface", "", "bind upstream connections to this network `interface` (SO_BINDTODEVICE)")
	sockFlags := registerSockFlags(fs, &cfg.tune.Client, &cfg.tune.Upstream)
	level := fs.String("log-level", "info", "log `level`: debug (adds rejected handshakes, refused BIND peers, socket option errors), info (the access log), warn, error")
	fs.StringVar(&cfg.logFormat, "log-format", "text", "log `format`: text or json")
	fs.StringVar(&cfg.profile, "profile", "", "write a profile of this `kind` while running: cpu, heap, allocs, block, mutex, trace, goroutine")
	fs.StringVar(&cfg.profileDir, "profile-dir", ".", "`directory` for --profile output")
	fs.StringVar(&cfg.debugAddr, "debug-addr", "", "serve /debug/pprof/ on this loopback `address`; off by default")
	fs.BoolVar(&cfg.debugPublic, "debug-allow-public", false, "allow a non-loopback --debug-addr (pprof exposes the process: firewall it)")
	fs.BoolVar(&cfg.accessLog, "access-log", true, "log one info line per session (client, user, command, target, reply, bytes, duration) and per refused client")
	fs.StringVar(&cfg.metricsAddr, "metrics", "", "serve Prometheus metrics at http://`address`/metrics; off by default")
	fs.Var(decimal{&cfg.maxSessions}, "max-sessions", "at most `N` concurrent sessions; clients past it are closed at accept; 0 = no limit")
	fs.Var(decimal{&cfg.maxSessionsPerIP}, "max-sessions-per-ip", "at most `N` concurrent sessions per client IP; clients past it are closed at accept; 0 = no limit")
	fs.Var(decimal{&cfg.maxSessionsPerUser}, "max-sessions-per-user", "at most `N` concurrent sessions per --users user; past it the request gets reply 0x01; 0 = no limit")
	fs.BoolVar(&cfg.denyPrivate, "deny-private", false, "deny destinations on loopback, RFC 1918, link-local (169.254.169.254), CGNAT, unique-local IPv6 and other non-public networks")
	fs.StringVar(&cfg.defaultPolicy, "default-policy", "allow", "destinations no rule matches: `allow` or deny")
	fs.StringVar(&cfg.clientPolicy, "client-default-policy", "allow", "clients no client rule matches: `allow` or deny")
	if cfg.configFile = configArg(args); cfg.configFile != "" {
		if err := loadConfigFile(fs, cfg); err != nil {
			return nil, err
		}
		listen.fromFile = true
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(fs, w)
			return nil, err
		}
		// The flag package names flags -name; sluice writes --name.
		return nil, errors.New(flagDashRE.ReplaceAllString(err.Error(), "$1-"))
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	sockFlags.commandLineWins(fs)
	sockFlags.apply()
	cfg.sideFlagFrom = sockFlags.sideSources()
	cfg.listen = listen.vals
	if len(cfg.listen) == 0 {
		cfg.listen = []string{defaultListen}
	}
	if err := parseLevel(&cfg.logLevel, *level); err != nil {
		return nil, cfg.fileValueError(fs, fmt.Errorf("--log-level %q: want debug, info, warn or error", *level))
	}
	// As given, before check resolves --listeners 0 to this machine's CPU
	// count: --print-config writes what another machine can read.
	cfg.values = flagValues(fs)
	if err := cfg.check(); err != nil {
		return nil, cfg.fileValueError(fs, err)
	}
	return cfg, nil
}

// flagDashRE finds the -name in the flag package's errors; the quoted value
// before it, which may hold "-" too, is matched whole, escapes and all.
var flagDashRE = regexp.MustCompile(`^((?:invalid (?:boolean )?value "(?:[^"\\]|\\.)*" for (?:flag )?|flag provided but not defined: |flag needs an argument: )-)`)

// fileValueError rewrites err, an error of check that starts "--NAME ",
// as "--config FILE:LINE: NAME: ..." when the value of NAME came from the
// configuration file, not the command line.
func (cfg *config) fileValueError(fs *flag.FlagSet, err error) error {
	name, rest, ok := strings.Cut(strings.TrimPrefix(err.Error(), "--"), " ")
	line, inFile := cfg.fileLines[name]
	fs.Visit(func(f *flag.Flag) { inFile = inFile && f.Name != name })
	if !ok || !inFile {
		return err
	}
	return fmt.Errorf("--config %s:%d: %s: %s", quoteOdd(cfg.configFile), line, name, rest)
}

// check validates values that flag types cannot.
func (cfg *config) check() error {
	switch {
	case cfg.logFormat != "text" && cfg.logFormat != "json":
		return fmt.Errorf("--log-format %q: want text or json", cfg.logFormat)
	case cfg.workers < 0:
		return fmt.Errorf("--workers %d: must be 0 or more", cfg.workers)
	case cfg.tune.Listeners < 0:
		return fmt.Errorf("--listeners %d: must be 0 or more", cfg.tune.Listeners)
	case cfg.bindTimeout <= 0:
		return fmt.Errorf("--bind-timeout %v: must be more than 0", cfg.bindTimeout)
	case cfg.udpIdleTimeout < 0:
		return fmt.Errorf("--udp-idle-timeout %v: must be 0 (off) or more", cfg.udpIdleTimeout)
	case !validUDPFilter(cfg.udpFilter):
		return fmt.Errorf("--udp-filter %q: want addr-port, addr or none", cfg.udpFilter)
	case cfg.handshakeTimeout < 0:
		return fmt.Errorf("--handshake-timeout %v: must be 0 (off) or more", cfg.handshakeTimeout)
	case cfg.relay.CopyBelow < 0 || cfg.relay.CopyBelow > relay.MaxCopyBelow:
		return fmt.Errorf("--copy-below %d: must be 0 (splice every read) to %dM", cfg.relay.CopyBelow, relay.MaxCopyBelow>>20)
	case cfg.relay.IdleTimeout < 0:
		return fmt.Errorf("--idle-timeout %v: must be 0 (never) or more", cfg.relay.IdleTimeout)
	case cfg.drainTimeout < 0:
		return fmt.Errorf("--drain-timeout %v: must be 0 or more", cfg.drainTimeout)
	case cfg.tune.Backlog < 0:
		return fmt.Errorf("--backlog %d: must be 0 (the kernel's somaxconn) or more", cfg.tune.Backlog)
	case cfg.tune.FastOpenQueue < 0:
		return fmt.Errorf("--fastopen %d: must be 0 (off) or more", cfg.tune.FastOpenQueue)
	case cfg.tune.DeferAccept < 0:
		return fmt.Errorf("--defer-accept %v: must be 0 (off) or more", cfg.tune.DeferAccept)
	case cfg.maxSessions < 0:
		return fmt.Errorf("--max-sessions %d: must be 0 (no limit) or more", cfg.maxSessions)
	case cfg.maxSessionsPerIP < 0:
		return fmt.Errorf("--max-sessions-per-ip %d: must be 0 (no limit) or more", cfg.maxSessionsPerIP)
	case cfg.maxSessionsPerUser < 0:
		return fmt.Errorf("--max-sessions-per-user %d: must be 0 (no limit) or more", cfg.maxSessionsPerUser)
	case cfg.defaultPolicy != "allow" && cfg.defaultPolicy != "deny":
		return fmt.Errorf("--default-policy %q: want allow or deny", cfg.defaultPolicy)
	case cfg.clientPolicy != "allow" && cfg.clientPolicy != "deny":
		return fmt.Errorf("--client-default-policy %q: want allow or deny", cfg.clientPolicy)
	case cfg.profile != "" && !strings.Contains(" cpu heap allocs block mutex trace goroutine ", " "+cfg.profile+" "):
		return fmt.Errorf("--profile %q: want cpu, heap, allocs, block, mutex, trace or goroutine", cfg.profile)
	case cfg.tune.SourceAddr.Unmap().WithZone("").IsUnspecified():
		// Bound to 0.0.0.0 or ::, a socket reaches one family only, and
		// package net (--net-sockets) would read it as no source at all.
		return fmt.Errorf("--source-addr %v is the unspecified address, not a source: leave --source-addr unset for the kernel's choice", cfg.tune.SourceAddr)
	}
	for _, a := range []struct{ flag, addr string }{{"--debug-addr", cfg.debugAddr}, {"--metrics", cfg.metricsAddr}} {
		if _, ok := listenPort(a.addr); a.addr != "" && !ok {
			return fmt.Errorf("%s %s: want host:port, e.g. 127.0.0.1:9100", a.flag, quoteOdd(a.addr))
		}
	}
	if cfg.debugAddr != "" && !cfg.debugPublic && !isLoopback(cfg.debugAddr) {
		return fmt.Errorf("--debug-addr %s: must be a loopback address (pprof exposes the process); add --debug-allow-public if you mean it", quoteOdd(cfg.debugAddr))
	}
	if cfg.tune.Listeners == 0 {
		cpus, err := tune.CPUs()
		cfg.tune.Listeners = max(len(cpus), 1)
		if err != nil {
			cfg.tune.Listeners = 1
		}
	}
	for _, a := range cfg.listen {
		port, ok := listenPort(a)
		if !ok {
			return fmt.Errorf("--listen %q: want host:port, e.g. 127.0.0.1:1080 or [::1]:1080", a)
		}
		if cfg.workers > 0 && anyPort(port) {
			return fmt.Errorf("--listen %s with --workers: each worker would listen on a port of its own; give a port", quoteOdd(a))
		}
	}
	return nil
}

// refuseOpenRelay refuses addrs (host:port each) when one is reachable from
// other hosts, unless clients must authenticate or the operator explicitly
// allowed it.
func refuseOpenRelay(cfg *config, addrs []string) error {
	if a := openAddr(cfg, addrs); a != "" {
		return openRelayError(a, "")
	}
	return nil
}

// openAddr returns the first of addrs that would serve an open relay under
// cfg: not a loopback address, with neither --users nor --allow-open-relay.
// "" when there is none.
func openAddr(cfg *config, addrs []string) string {
	if cfg.usersFile != "" || cfg.allowOpenRelay {
		return ""
	}
	for _, a := range addrs {
		if !isLoopback(a) {
			return a
		}
	}
	return ""
}

// checkOpenRelay is refuseOpenRelay for a reload to cfg: the listeners stay
// as they are until a restart, so what counts is the addresses they are
// bound to, not what their host names resolve to now (a DNS server down at
// the reload would otherwise fail it).
func (inst *instance) checkOpenRelay(cfg *config) error {
	return refuseOpenRelay(cfg, inst.addrs())
}

func openRelayError(given, resolved string) error {
	given = quoteOdd(given)
	if resolved != "" {
		given += " (" + resolved + ")"
	}
	return fmt.Errorf("--listen %s is not a loopback address: refusing to run an open relay; add --users FILE, or --allow-open-relay if you mean it", given)
}

// listenAddr is one --listen address and what it listens on.
type listenAddr struct {
	given string
	addrs []string // given itself, or for a host name one host:port per address
}

// named reports whether la.given is a host name.
func (la listenAddr) named() bool {
	return len(la.addrs) != 1 || la.addrs[0] != la.given
}

// planListen resolves each --listen address that names a host to all of
// its addresses, once, and refuses an open relay on what they resolved to,
// so that the check and the bind see the same addresses. An IP literal or an
// empty host (":1080", every address) stands for itself. A host name listens
// on every address it has, so that "localhost:1080" serves both 127.0.0.1
// and ::1 where the hosts file lists both: a client that tries only the
// first address of the name finds sluice whichever family it prefers.
func planListen(ctx context.Context, cfg *config) ([]listenAddr, error) {
	r := cmp.Or(cfg.resolver, net.DefaultResolver)
	plan := make([]listenAddr, 0, len(cfg.listen))
	for _, given := range cfg.listen {
		la := listenAddr{given: given, addrs: []string{given}}
		host, port, err := net.SplitHostPort(given)
		if _, perr := netip.ParseAddr(host); err == nil && host != "" && perr != nil {
			ips, err := lookupZoned(ctx, r, host)
			if err == nil && len(ips) == 0 {
				err = errors.New("no address")
			}
			if err != nil {
				return nil, fmt.Errorf("--listen %s: %w", quoteOdd(given), err)
			}
			la.addrs = la.addrs[:0]
			for _, ip := range ips {
				a := net.JoinHostPort(ip.String(), port)
				if !slices.Contains(la.addrs, a) {
					la.addrs = append(la.addrs, a)
				}
			}
		}
		if a := openAddr(cfg, la.addrs); a != "" {
			if !la.named() {
				a = "" // given is the address
			}
			return nil, openRelayError(given, a)
		}
		plan = append(plan, la)
	}
	return plan, nil
}

// isLoopback reports whether every address hostport can bind is a loopback
// one. Unspecified addresses ("0.0.0.0", "[::]", "") are not.
// listenPort returns the port of a, and whether a is host:port with a port
// that a listener can take: 0 to 65535, or a service name this host knows.
func listenPort(a string) (string, bool) {
	_, port, err := net.SplitHostPort(a)
	if err == nil {
		_, err = net.LookupPort("tcp", port)
	}
	return port, err == nil
}

// parseLevel reads a --log-level value: one of the four names, in any
// case. slog's own reading takes offsets too ("info+2", "error+8", above
// which nothing is logged at all), which no flag or file means to give.
func parseLevel(l *slog.Level, v string) error {
	switch strings.ToLower(v) {
	case "debug", "info", "warn", "error":
		return l.UnmarshalText([]byte(v))
	}
	return fmt.Errorf("not a level: %q", v)
}

// anyPort reports whether a listen address's port asks the kernel for one
// of its choosing: empty, or 0 however written ("00" is port 0 as well).
func anyPort(port string) bool {
	n, err := strconv.Atoi(port)
	return port == "" || err == nil && n == 0
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil || host == "" {
		return false
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.IsLoopback()
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return false
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return false
		}
	}
	return true
}

func printUsage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "Usage: sluice [flags]\n\nA zero-copy SOCKS5 relay (RFC 1928 CONNECT, BIND and UDP ASSOCIATE; RFC 1929 auth).\n"+
		"Socket options --X apply to both sides; --client-X and --upstream-X to one.\n\nFlags:\n")
	var b strings.Builder
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	// Flags are written --name, as the README and the error messages do.
	io.WriteString(w, strings.ReplaceAll("\n"+b.String(), "\n  -", "\n  --")[1:])
}

// listFlag is a repeatable string flag. Values from the configuration file
// are replaced, not extended, by those on the command line.
type listFlag struct {
	vals     []string
	fromFile bool
}

func (l *listFlag) String() string { return strings.Join(l.vals, ",") }
func (l *listFlag) Set(s string) error {
	if l.fromFile {
		l.vals, l.fromFile = nil, false
	}
	l.vals = append(l.vals, s)
	return nil
}
func (l *listFlag) kind() string { return kindList }

// byteSize is an int flag that takes a size with an optional K, M or G suffix
// (powers of 1024).
type byteSize struct{ p *int }

func (b byteSize) String() string {
	if b.p == nil {
		return "0"
	}
	return strconv.Itoa(*b.p)
}

func (b byteSize) kind() string { return kindSize }

func (b byteSize) Set(s string) error {
	n, err := parseBytes(s)
	if err != nil {
		return err
	}
	*b.p = n
	return nil
}

func parseBytes(s string) (int, error) {
	mult := 1
	switch {
	case strings.HasSuffix(s, "K"), strings.HasSuffix(s, "k"):
		mult = 1 << 10
	case strings.HasSuffix(s, "M"), strings.HasSuffix(s, "m"):
		mult = 1 << 20
	case strings.HasSuffix(s, "G"), strings.HasSuffix(s, "g"):
		mult = 1 << 30
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, errors.New("want a size in bytes, e.g. 262144, 256K or 4M")
	}
	// Every size ends up in a C int (setsockopt, F_SETPIPE_SZ).
	if n > math.MaxInt32/mult || n < -math.MaxInt32/mult {
		return 0, fmt.Errorf("want a size in bytes of at most %d (2G - 1)", math.MaxInt32)
	}
	return n * mult, nil
}

// decimal is an int flag that takes base 10 only, leading zeros and all
// (010 is 10), where the flag package's would read 010 as octal (8) and
// take 0x10 too. Operators count in decimal.
type decimal struct{ p *int }

func (d decimal) String() string {
	if d.p == nil {
		return "0"
	}
	return strconv.Itoa(*d.p)
}

func (d decimal) kind() string { return kindInt }

func (d decimal) Set(s string) error {
	n, err := strconv.Atoi(s)
	if errors.Is(err, strconv.ErrRange) {
		return errors.New("value out of range")
	}
	if err != nil {
		return errors.New("want a decimal integer")
	}
	*d.p = n
	return nil
}

// duration is a time.Duration flag whose errors say what a duration is:
// the flag package's say only "parse error", and "10" (a unit left out, as
// in a file written for another tool) most needs saying.
type duration struct{ p *time.Duration }

// durationVar registers a duration flag, as fs.DurationVar does.
func durationVar(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var(duration{p}, name, usage)
}

func (d duration) String() string {
	if d.p == nil {
		return time.Duration(0).String()
	}
	return d.p.String()
}

func (d duration) kind() string { return kindDuration }

func (d duration) Set(s string) error {
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d.p = v
	return nil
}

// parseDuration is time.ParseDuration with an error that shows the form:
// a number with a unit, such as "10s", "1m30s" or "500ms" (0 alone too).
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err == nil {
		return d, nil
	}
	if _, ferr := strconv.ParseFloat(s, 64); ferr == nil {
		return 0, errors.New(`no unit: want a duration such as "10s", "1m30s" or "500ms"`)
	}
	return 0, errors.New(`want a duration such as "10s", "1m30s" or "500ms"`)
}

// addrFlag is a netip.Addr flag.
type addrFlag struct{ p *netip.Addr }

func (a addrFlag) String() string {
	if a.p == nil || !a.p.IsValid() {
		return ""
	}
	return a.p.String()
}

func (a addrFlag) kind() string { return kindString }

func (a addrFlag) Set(s string) error {
	if s == "" {
		*a.p = netip.Addr{} // the default: the kernel chooses
		return nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return errors.New("want an IP address")
	}
	*a.p = ip
	return nil
}

// portsFlag is a tune.PortRange flag: all, off or LOW-HIGH.
type portsFlag struct{ p *tune.PortRange }

func (f portsFlag) String() string {
	switch {
	case f.p == nil || *f.p == tune.PortRange{}:
		return "off"
	case *f.p == tune.AllPorts:
		return "all"
	}
	return fmt.Sprintf("%d-%d", f.p.Low, f.p.High)
}

func (f portsFlag) kind() string { return kindString }

func (f portsFlag) Set(s string) error {
	switch s {
	case "all":
		*f.p = tune.AllPorts
		return nil
	case "off":
		*f.p = tune.PortRange{}
		return nil
	}
	lo, hi, ok := strings.Cut(s, "-")
	l, err1 := strconv.ParseUint(lo, 10, 16)
	h, err2 := strconv.ParseUint(hi, 10, 16)
	if !ok || err1 != nil || err2 != nil || l == 0 || l > h {
		return errors.New("want all, off or LOW-HIGH (ports 1 to 65535, LOW <= HIGH)")
	}
	*f.p = tune.PortRange{Low: uint16(l), High: uint16(h)}
	return nil
}
