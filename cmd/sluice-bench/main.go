// Command sluice-bench is a load generator and its own target servers for
// measuring SOCKS5 relays; the logic lives in package bench.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sluice/bench"
)

const usage = `usage: sluice-bench MODE [flags]

Targets (serve until killed, or for --duration when given):
  sink     read and discard; after EOF answer the byte count (uint64, big endian)
  source   write the seeded 64 KiB pattern endlessly
  echo     write back what is read
  udp-echo write back every UDP datagram to its sender
Clients (through a SOCKS5 proxy with --proxy, or --direct):
  tput     -P parallel streams, --dir up (to a sink), down (from a source)
           or both; aggregate and per-stream Gbit/s, byte counts checked
  rr       -c workers each looping connect + handshake + --exchanges echoes
           of --size bytes + close; conn/s and latency p50/p90/p99/p99.9/max
  idle     open -n sessions (handshake + one echo), hold them for --hold,
           echo once more on each (alive), close; with --pid the relay's
           RSS and fds per session
  udp      datagrams through a UDP ASSOCIATE (or --direct) to a udp-echo
           target, --window in flight; datagrams/s, Mbit/s, loss
Reports:
  chart    read bench/peers.sh's results.json on stdin, write an SVG bar
           chart of throughput and conn/s per peer to stdout
With --pid, clients report the relay's CPU seconds (its process and
descendants) per GiB (tput) or per 1,000 connections (rr); tput and rr
always report their own ("client cpu"), which on shared cores the relay
cannot have, and on Linux the whole machine's ("machine cpu": every CPU's
busy time, the kernel's TCP work on loopback included, whichever process
it ran in). A run with any error (connect, SOCKS reply, data mismatch; a
udp run with no datagram back) exits 1, with a line on stderr naming the
first; bad flags exit 2.
SIGINT stops a run early and still prints its results.

Flags:
  --addr HOST:PORT   targets: listen address (default 127.0.0.1:5201); sink,
                     source, echo: several, comma-separated, all served
  --allow-public     targets: allow a non-loopback --addr
  --seed N           source, tput: pattern seed (default 1)
  --buf BYTES        targets, tput: read/write size (default 256 KiB; echo 16 KiB)
  --proxy HOST:PORT  clients: SOCKS5 proxy under test
  --user NAME        clients: RFC 1929 username (with --pass)
  --pass SECRET      clients: RFC 1929 password
  --direct           clients: connect to the target without a proxy
  --lockstep         clients: wait for each SOCKS5 answer before the next
                     message instead of one pipelined write (for servers
                     that drop pipelined bytes, e.g. microsocks)
  --target ADDR      clients: target host:port; tput --dir both takes
                     SINK,SOURCE; rr takes several, comma-separated (worker
                     i uses the i-th, round robin)
  --source IPS       rr: local addresses to connect from, comma-separated or
                     a range (127.0.0.2-127.0.0.9), worker i from the i-th.
                     On loopback one source and one target cap conn/s near
                     half the ephemeral port range per second (TIME_WAIT):
                     each more source and --target address adds a set of
                     ports
  --all-ports        rr, tput, idle: connect from all of the ephemeral port
                     range, odd and even ports alike (IP_LOCAL_PORT_RANGE,
                     Linux 6.3+), not the even ones first: twice the
                     TIME_WAIT ceiling above and a shorter port search. For
                     60 s after a fast rr run every port of the source
                     address may hold a TIME_WAIT, and programs that bind
                     port 0 there (Dante, before each connect) then fail
  --dir DIR          tput: up, down or both (default up)
  -P N               tput: parallel streams per direction (default 1)
  --verify LEVEL     tput: full (default), sample (down: only the first 64
                     bytes of each read) or none (down: count only; up: skip
                     the sink's count, for relays that drop half-close)
  -c N               rr: concurrent workers (default 64); idle: concurrent
                     openers (default 64)
  --size BYTES       rr: echo size (default 1); udp: payload (default 512)
  --exchanges N      rr: echo exchanges per connection, one at a time
                     (default 1: connect, one echo, close; at most 1000000);
                     the connections in progress when --duration ends
                     finish theirs
  --window N         udp: datagrams awaiting their echo (default 32)
  -n N               idle: sessions (default 1000)
  --hold DURATION    idle: how long to hold the sessions (default 2s)
  --duration D       clients: load time (default 5s, at most 10m);
                     targets: serve time (default: until killed)
  --timeout D        clients: connect+handshake bound, and rr echo bound (default 5s)
  --pid PID          clients: the relay's process, sampled from /proc
  --json             clients: print one JSON object instead of a table
  --quiet            no progress line on stderr (printed each second for
                     runs longer than 3s) and no target banner
  -h                 this help
`

// flagsFor lists the flags each mode accepts besides -h.
var flagsFor = map[string]string{
	"sink":   "addr allow-public buf duration quiet",
	"source": "addr allow-public buf duration quiet seed",
	"echo":   "addr allow-public buf duration quiet",
	"tput":   "proxy user pass direct lockstep all-ports timeout duration pid json quiet target dir P seed verify buf",
	"rr":     "proxy user pass direct lockstep all-ports timeout duration pid json quiet target c size exchanges source",
	"idle":   "proxy user pass direct lockstep all-ports timeout pid json quiet target c n hold",
	"udp":    "proxy user pass direct lockstep timeout duration pid json quiet target size window",
	// udp-echo is a target too, served by serveUDP.
	"udp-echo": "addr allow-public duration quiet",
}

// options is every flag's value.
type options struct {
	addr, proxy, user, pass, target, dir, verify          string
	source                                                string
	sources                                               []netip.Addr // parsed --source
	allowPublic, direct, lockstep, json, quiet            bool
	allPorts                                              bool
	seed                                                  uint64
	buf, streams, workers, size, exchanges, sessions, pid int
	window                                                int
	hold, duration, timeout                               time.Duration
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run is main with its exit status returned: 0 ok, 1 run errors, 2 usage.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "sluice-bench: missing mode; try -h")
		return 2
	}
	mode := args[0]
	switch mode {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "chart":
		if len(args) > 1 {
			fmt.Fprintf(stderr, "sluice-bench: chart takes no flags or arguments (got %q); it reads stdin\n", args[1])
			return 2
		}
		if err := bench.Chart(stdout, os.Stdin); err != nil {
			fmt.Fprintf(stderr, "sluice-bench: %v\n", err)
			return 1
		}
		return 0
	}
	if _, ok := flagsFor[mode]; !ok {
		fmt.Fprintf(stderr, "sluice-bench: unknown mode %q; try -h\n", mode)
		return 2
	}
	var o options
	fs := newFlagSet(&o)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "sluice-bench: %v\n", dashes(err))
		return 2
	}
	if err := o.check(fs, mode); err != nil {
		fmt.Fprintf(stderr, "sluice-bench: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // a second signal kills at once
	if t, err := bench.ParseTarget(mode); err == nil {
		return serve(ctx, t, &o, stderr)
	}
	if mode == "udp-echo" {
		return serveUDP(ctx, &o, stderr)
	}
	if mode == "udp" && !isSet(fs, "size") {
		o.size = 0 // the mode's own default
	}
	return runClient(ctx, mode, &o, stdout, stderr)
}

func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("sluice-bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:5201", "")
	fs.BoolVar(&o.allowPublic, "allow-public", false, "")
	fs.Uint64Var(&o.seed, "seed", 1, "")
	fs.IntVar(&o.buf, "buf", 0, "")
	fs.StringVar(&o.proxy, "proxy", "", "")
	fs.StringVar(&o.user, "user", "", "")
	fs.StringVar(&o.pass, "pass", "", "")
	fs.BoolVar(&o.direct, "direct", false, "")
	fs.BoolVar(&o.lockstep, "lockstep", false, "")
	fs.StringVar(&o.target, "target", "", "")
	fs.StringVar(&o.source, "source", "", "")
	fs.BoolVar(&o.allPorts, "all-ports", false, "")
	fs.StringVar(&o.dir, "dir", "up", "")
	fs.IntVar(&o.streams, "P", 1, "")
	fs.StringVar(&o.verify, "verify", "full", "")
	fs.IntVar(&o.workers, "c", 64, "")
	fs.IntVar(&o.size, "size", 1, "")
	fs.IntVar(&o.exchanges, "exchanges", 1, "")
	fs.IntVar(&o.window, "window", 32, "")
	fs.IntVar(&o.sessions, "n", 1000, "")
	fs.DurationVar(&o.hold, "hold", 2*time.Second, "")
	fs.DurationVar(&o.duration, "duration", 0, "")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "")
	fs.IntVar(&o.pid, "pid", 0, "")
	fs.BoolVar(&o.json, "json", false, "")
	fs.BoolVar(&o.quiet, "quiet", false, "")
	return fs
}

// check rejects flags the mode does not take and values out of range.
func (o *options) check(fs *flag.FlagSet, mode string) error {
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	allowed := " " + flagsFor[mode] + " "
	var bad error
	fs.Visit(func(f *flag.Flag) {
		if bad == nil && !strings.Contains(allowed, " "+f.Name+" ") {
			bad = fmt.Errorf("flag %s does not apply to mode %s", flagName(f.Name), mode)
		}
	})
	if bad != nil {
		return bad
	}
	positive := map[string]int{"buf": o.buf + 1, "P": o.streams, "c": o.workers, "size": o.size, "exchanges": o.exchanges, "n": o.sessions, "window": o.window}
	for name, v := range positive {
		if v < 1 {
			return fmt.Errorf("invalid value for flag %s: must be positive", flagName(name))
		}
	}
	// Upper bounds: past them a run would not fail cleanly but exhaust
	// memory or descriptors before its first connection.
	for name, v := range map[string][2]int{"buf": {o.buf, maxBytes}, "size": {o.size, maxBytes},
		"P": {o.streams, maxStreams}, "c": {o.workers, maxWorkers}, "n": {o.sessions, maxSessions}, "window": {o.window, maxWindow}} {
		if v[0] > v[1] {
			return fmt.Errorf("invalid value %d for flag %s: at most %d", v[0], flagName(name), v[1])
		}
	}
	if mode == "udp" && isSet(fs, "size") && (o.size < minDatagram || o.size > maxDatagram) {
		return fmt.Errorf("invalid value %d for flag --size: a datagram of %d to %d bytes", o.size, minDatagram, maxDatagram)
	}
	switch {
	case o.duration < 0:
		return errors.New("invalid value for flag --duration: negative")
	case o.hold <= 0 || o.hold > bench.MaxDuration:
		return fmt.Errorf("invalid value for flag --hold: must be positive, at most %v", bench.MaxDuration)
	case o.exchanges > bench.MaxExchanges:
		return fmt.Errorf("invalid value for flag --exchanges: at most %d", bench.MaxExchanges)
	case o.timeout <= 0:
		return errors.New("invalid value for flag --timeout: must be positive")
	case o.pid < 0:
		return errors.New("invalid value for flag --pid: negative")
	}
	if _, err := bench.ParseTarget(mode); err == nil {
		for _, a := range strings.Split(o.addr, ",") {
			if err := checkListen(a, o.allowPublic); err != nil {
				return err
			}
		}
		return nil
	}
	if mode == "udp-echo" {
		return checkListen(o.addr, o.allowPublic)
	}
	if o.source != "" {
		var err error
		if o.sources, err = parseSources(o.source); err != nil {
			return fmt.Errorf("invalid value %q for flag --source: %v", o.source, err)
		}
	}
	if o.duration > bench.MaxDuration {
		return fmt.Errorf("invalid value for flag --duration: at most %v", bench.MaxDuration)
	}
	switch {
	case o.direct == (o.proxy != ""):
		return errors.New("clients need exactly one of --proxy or --direct")
	case o.direct && o.user != "":
		return errors.New("flag --user needs --proxy: --direct makes no SOCKS5 handshake")
	case o.direct && o.lockstep:
		return errors.New("flag --lockstep needs --proxy: --direct makes no SOCKS5 handshake")
	}
	if o.pid > 0 && runtime.GOOS == "linux" {
		// Sampling would fail only once the run started, without
		// naming the flag.
		if _, err := os.Stat("/proc/" + strconv.Itoa(o.pid)); err != nil {
			return fmt.Errorf("invalid value %d for flag --pid: no such process", o.pid)
		}
	}
	if o.target == "" {
		return errors.New("clients need --target")
	}
	dir, err := bench.ParseDirection(o.dir)
	if err != nil {
		return fmt.Errorf("invalid value %q for flag --dir", o.dir)
	}
	if _, err := bench.ParseVerify(o.verify); err != nil {
		return fmt.Errorf("invalid value %q for flag --verify", o.verify)
	}
	return o.checkPeers(mode, dir)
}

// checkPeers checks --proxy, the credentials and --target as the client
// will use them, so that a run does not start only to fail on them.
func (o *options) checkPeers(mode string, dir bench.Direction) error {
	if o.proxy != "" {
		if err := checkHostPort(o.proxy); err != nil {
			return fmt.Errorf("invalid value %q for flag --proxy: %v", o.proxy, err)
		}
	}
	switch {
	case o.pass != "" && o.user == "":
		return errors.New("flag --pass needs --user")
	case len(o.user) > 255 || len(o.pass) > 255:
		return errors.New("invalid value for flag --user or --pass: at most 255 bytes each")
	}
	targets := strings.Split(o.target, ",")
	switch {
	case mode == "tput" && dir == bench.Both && len(targets) != 2:
		return fmt.Errorf("invalid value %q for flag --target: SINK,SOURCE with --dir both", o.target)
	case mode != "rr" && !(mode == "tput" && dir == bench.Both) && len(targets) != 1:
		return fmt.Errorf("invalid value %q for flag --target: one host:port in mode %s", o.target, mode)
	}
	p := bench.Proxy{Addr: o.proxy}
	for _, t := range targets {
		err := checkHostPort(t)
		if err == nil {
			_, err = bench.NewDialer(p, t) // a name the proxy resolves: 1 to 255 bytes
		}
		if err != nil {
			return fmt.Errorf("invalid value %q for flag --target: %v", o.target, err)
		}
	}
	return nil
}

// checkHostPort checks a host:port to connect to.
func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("port %q: want 1 to 65535", port)
	}
	return nil
}

// Bounds on counts and sizes (check).
const (
	maxBytes    = 64 << 20   // --buf, --size
	maxStreams  = 4096       // -P
	maxWorkers  = 1 << 16    // -c
	maxSessions = 1 << 20    // -n
	maxWindow   = 1 << 16    // --window
	minDatagram = 16         // udp --size: sequence number and send time
	maxDatagram = 65507 - 22 // udp --size: an IPv4 datagram's largest payload, less an IPv6 SOCKS header
)

// maxSources bounds a --source range.
const maxSources = 1024

// parseSources reads a comma-separated list of IP addresses, or one range
// FIRST-LAST of addresses of one family.
func parseSources(s string) ([]netip.Addr, error) {
	if first, last, ok := strings.Cut(s, "-"); ok && !strings.Contains(s, ",") {
		a, err := netip.ParseAddr(first)
		if err != nil {
			return nil, err
		}
		b, err := netip.ParseAddr(last)
		if err != nil {
			return nil, err
		}
		if a.Is4() != b.Is4() || b.Less(a) {
			return nil, errors.New("a range runs from a lower to a higher address of one family")
		}
		var out []netip.Addr
		for ip := a; ip.IsValid() && !b.Less(ip); ip = ip.Next() {
			if len(out) == maxSources {
				return nil, fmt.Errorf("more than %d addresses", maxSources)
			}
			out = append(out, ip)
		}
		return out, nil
	}
	var out []netip.Addr
	for _, f := range strings.Split(s, ",") {
		ip, err := netip.ParseAddr(f)
		if err != nil {
			return nil, err
		}
		out = append(out, ip)
	}
	return out, nil
}

// checkListen allows only loopback listen addresses unless allowPublic.
func checkListen(addr string, allowPublic bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("invalid value %q for flag --addr: %v", addr, err)
	}
	if allowPublic || host == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
		return fmt.Errorf("invalid value %q for flag --addr: not loopback (use --allow-public)", addr)
	}
	return nil
}

// serve runs a target until ctx ends or the duration passes.
func serve(ctx context.Context, t bench.Target, o *options, stderr io.Writer) int {
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	lns, err := listenAll(o.addr)
	if err != nil {
		fmt.Fprintf(stderr, "sluice-bench: %v\n", err)
		return 1
	}
	if !o.quiet {
		for _, ln := range lns {
			fmt.Fprintf(stderr, "sluice-bench: %v serving on %v\n", t, ln.Addr())
		}
	}
	return serveOn(ctx, &bench.Server{Kind: t, Seed: o.seed, BufBytes: o.buf}, lns, stderr)
}

// listenAll listens on every address of the comma-separated list addrs.
func listenAll(addrs string) ([]net.Listener, error) {
	var lns []net.Listener
	for _, a := range strings.Split(addrs, ",") {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, err
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// serveOn runs s on every listener until ctx ends.
func serveOn(ctx context.Context, s *bench.Server, lns []net.Listener, stderr io.Writer) int {
	errs := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { errs <- s.Serve(ctx, ln) }()
	}
	rc := 0
	for range lns {
		if err := <-errs; err != nil {
			fmt.Fprintf(stderr, "sluice-bench: %v\n", err)
			rc = 1
		}
	}
	return rc
}

// serveUDP runs the udp-echo target until ctx ends or the duration passes.
func serveUDP(ctx context.Context, o *options, stderr io.Writer) int {
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	pc, err := net.ListenPacket("udp", o.addr)
	if err != nil {
		fmt.Fprintf(stderr, "sluice-bench: %v\n", err)
		return 1
	}
	if !o.quiet {
		fmt.Fprintf(stderr, "sluice-bench: udp-echo serving on %v\n", pc.LocalAddr())
	}
	if err := bench.ServeUDPEcho(ctx, pc); err != nil {
		fmt.Fprintf(stderr, "sluice-bench: %v\n", err)
		return 1
	}
	return 0
}

// isSet reports whether the flag name was given on the command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// result is what every client run returns.
type result interface{ WriteText(io.Writer) error }

// runClient maps the flags to the mode's options, runs it and prints the result.
func runClient(ctx context.Context, mode string, o *options, stdout, stderr io.Writer) int {
	c := bench.Client{
		Proxy:    bench.Proxy{Addr: o.proxy, User: o.user, Pass: o.pass, Lockstep: o.lockstep, Timeout: o.timeout, AllPorts: o.allPorts},
		Duration: o.duration,
		PID:      o.pid,
	}
	if !o.quiet {
		c.Progress = stderr
	}
	var (
		res    result
		errs   *bench.Errors
		runErr error
	)
	switch mode {
	case "tput":
		dir, _ := bench.ParseDirection(o.dir)
		verify, _ := bench.ParseVerify(o.verify)
		to := bench.TputOptions{Client: c, Dir: dir, Streams: o.streams, Seed: o.seed, Verify: verify, BufBytes: o.buf}
		to.Sink, to.Source = o.target, o.target
		if sink, source, ok := strings.Cut(o.target, ","); ok {
			to.Sink, to.Source = sink, source
		}
		r, err := bench.Tput(ctx, to)
		res, runErr = r, err
		if err == nil {
			errs = &r.Errors
		}
	case "rr":
		r, err := bench.RR(ctx, bench.RROptions{Client: c, Target: o.target, Sources: o.sources,
			Workers: o.workers, SizeBytes: o.size, Exchanges: o.exchanges, Timeout: o.timeout})
		res, runErr = r, err
		if err == nil {
			errs = &r.Errors
		}
	case "udp":
		r, err := bench.UDP(ctx, bench.UDPOptions{Client: c, Target: o.target, SizeBytes: o.size, Window: o.window})
		res, runErr = r, err
		if err == nil {
			errs = &r.Errors
		}
	case "idle":
		r, err := bench.Idle(ctx, bench.IdleOptions{Client: c, Target: o.target, Sessions: o.sessions,
			Hold: o.hold, Openers: o.workers})
		res, runErr = r, err
		if err == nil {
			errs = &r.Errors
		}
	}
	if runErr != nil {
		fmt.Fprintf(stderr, "sluice-bench: %v\n", runErr)
		return 1
	}
	var err error
	if o.json {
		err = json.NewEncoder(stdout).Encode(res)
	} else {
		err = res.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice-bench: %v\n", err)
		return 1
	}
	if n := errs.Total(); n > 0 {
		// One line on stderr says why, whatever the format on stdout.
		first := ""
		if len(errs.Samples) > 0 {
			first = "; the first: " + errs.Samples[0]
		}
		fmt.Fprintf(stderr, "sluice-bench: %s failed: %d error(s)%s\n", mode, n, first)
		return 1
	}
	return 0
}

// flagName writes a flag as the usage does: -P and -c with one dash, every
// longer name with two.
func flagName(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// dashes rewrites the flag package's -name in a parse error as flagName
// writes it.
func dashes(err error) error {
	msg := err.Error()
	for _, marker := range []string{"flag: -", "flag -", "argument: -", "defined: -"} {
		if i := strings.Index(msg, marker); i >= 0 {
			j := i + len(marker)
			k := j
			for k < len(msg) && msg[k] != ' ' && msg[k] != ':' {
				k++
			}
			name := strings.TrimPrefix(msg[j:k], "-")
			return errors.New(msg[:j-1] + flagName(name) + msg[k:])
		}
	}
	return err
}
