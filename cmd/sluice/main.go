// Command sluice is a zero-copy SOCKS5 relay for Linux.
//
//	go run ./cmd/sluice                    # serves on 127.0.0.1:1080, no auth
//	sluice --listen [::1]:1080 --users users.txt
//
// Run "sluice --help" for every flag.
package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pkg/profile"

	"sluice/relay"
	"sluice/tune"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// earlyHUP holds a SIGHUP that came while the process started, before run
// took the signal over. Go's default for SIGHUP is to exit, and a reload
// can be asked for that early (systemctl reload right after start, with
// Type=exec, or before READY=1 with Type=notify on a systemd that does not
// hold it). Package variables are set before any init function and main
// run, so this is as early as package main can catch it; one that comes
// before, while the runtime starts and the imported packages initialise
// (some milliseconds), still kills.
var earlyHUP = notifyHUP()

// notifyHUP returns a channel that SIGHUP is relayed to.
func notifyHUP() chan os.Signal {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGHUP)
	return c
}

// run is main without os.Exit: it returns the process exit status.
func run(args []string, stderr io.Writer) int {
	// SIGHUP reloads. One that came earlier is passed on, to be applied
	// once sluice serves, as one during the start is: the file it reloads
	// may have changed since the start read it.
	hup := notifyHUP()
	defer signal.Stop(hup)
	select {
	case sig := <-earlyHUP:
		select {
		case hup <- sig:
		default: // the same signal reached hup too
		}
	default:
	}
	signal.Stop(earlyHUP)
	cfg, err := parseFlags(args, os.Stdout) // --help's usage: asked for, so stdout (sluice --help | less)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		workerStarted(err)
		fmt.Fprintf(stderr, "sluice: %v\n", err)
		return 2
	}
	if cfg.printConfig {
		if err := printConfig(os.Stdout, cfg); err != nil {
			fmt.Fprintf(stderr, "sluice: --print-config: %v\n", err)
			return 1
		}
		return 0
	}
	// A stderr whose reader has gone (`sluice 2>&1 | head`, a log collector
	// that died) fails the log's writes with EPIPE, which logWriter counts
	// as lines lost, instead of the runtime's default for fd 2: death by
	// SIGPIPE at the next line. (--print-config, above, keeps the default,
	// as a command in a pipeline should.)
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	defer signal.Stop(pipe)
	level := new(slog.LevelVar)
	level.Set(cfg.logLevel)
	// From here on every line goes through one writer that never blocks
	// (logwriter.go), in order; the exit waits a bounded time for it.
	logCfg := cfg // the log's format, which a reload does not change
	lw := newLogWriter(stderr, logBufferMax, func(n int64) []byte {
		var b bytes.Buffer
		newLogger(logCfg, level, &b).Warn("log lines dropped: stderr fell behind", "count", n)
		return b.Bytes()
	})
	defer lw.close(logFlushWait)
	stderr = lw
	cfg.logWriter = lw
	log := newLogger(cfg, level, stderr)
	if cfg.profile != "" {
		defer startProfile(cfg).Stop()
	}
	ctx, again, stop := notifyStop()
	defer stop()
	sd := newNotifier() // before any worker starts: they must not report as sluice
	if cfg.workers > 0 {
		return runWorkers(ctx, cfg, args, log, level, hup, again, sd)
	}
	// --debug-addr and --metrics bind before the SOCKS listeners, so that a
	// port in use stops the start with one line, before any "sluice
	// listening" line or READY=1.
	web, err := listenHTTP(ctx, cfg)
	if err != nil {
		workerStarted(err)
		fmt.Fprintf(stderr, "sluice: %v\n", err)
		return 1
	}
	inst, err := start(ctx, cfg, log)
	if err != nil {
		web.close()
		workerStarted(err)
		if stoppedStarting(ctx, err) {
			log.Info("stopped while starting")
			return 0
		}
		fmt.Fprintf(stderr, "sluice: %v\n", err)
		return 1
	}
	stopWeb := web.serve(inst.srv.metrics, log)
	workerStarted(nil) // a worker of --workers tells its parent that it serves
	// Each address once: its --listeners sockets are next to each other.
	status := "serving on " + strings.Join(slices.Compact(inst.addrs()), " ")
	notify(log, sd.ready(status))
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-hup:
			notify(log, sd.reloading())
			cfg = inst.reload(args, cfg, level)
			notify(log, sd.ready(status))
		}
	}
	notify(log, sd.stopping())
	log.Info("shutting down", "drain_timeout", cfg.drainTimeout)
	if migrateReq() == "0" {
		log.Info("net.ipv4.tcp_migrate_req is 0: connections still queued on the closing listeners are reset; set it to 1 for zero-downtime restarts")
	}
	inst.shutdownUnless(cfg.drainTimeout, again)
	// /metrics and --debug-addr serve until the drain is over (every
	// session ended, or was closed at the drain timeout or a second
	// signal), so that it can be watched (sluice_sessions_active counts
	// down) and profiled.
	stopWeb()
	return 0
}

// endDrain is the signal that the parent of --workers sends a worker, after
// SIGTERM, to end its drain at once: a worker cannot take a second SIGINT or
// SIGTERM to mean it, as one sent to the whole process group (Ctrl-C in a
// terminal, systemd's default KillMode=control-group) reaches it once from
// the sender and once forwarded by its parent.
const endDrain = syscall.SIGQUIT

// notifyStop returns a context that the first SIGINT or SIGTERM ends, the
// channel of the signals that end the drain after it at once (a second
// SIGINT or SIGTERM; in a worker of --workers, endDrain), and a func that
// stops both.
func notifyStop() (context.Context, <-chan os.Signal, func()) {
	first := make(chan os.Signal, 2) // room for the second while the first is read
	signal.Notify(first, syscall.SIGINT, syscall.SIGTERM)
	again := first
	if os.Getenv(workerEnv) != "" {
		again = make(chan os.Signal, 1)
		signal.Notify(again, endDrain)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-first: // the one signal read here: the drain reads the next
		case <-ctx.Done():
		}
		if again != first {
			// An endDrain that reached the worker while it served (an
			// operator asking for a goroutine dump) ends no drain:
			// only one sent after this first signal does.
			for len(again) > 0 {
				<-again
			}
		}
		cancel()
	}()
	return ctx, again, func() {
		signal.Stop(first)
		signal.Stop(again)
		cancel()
	}
}

// stoppedStarting reports whether err, a start's, is only the SIGTERM or
// SIGINT that ended ctx while the start waited (on a --listen host name's
// lookup): sluice then stops as asked, with status 0, as it does once it
// serves, so that a service manager stopping a slow start sees no failure.
func stoppedStarting(ctx context.Context, err error) bool {
	return ctx.Err() != nil && errors.Is(err, context.Canceled)
}

// httpListeners are the listeners of the --debug-addr and --metrics
// servers (nil: not asked for).
type httpListeners struct{ debug, metrics net.Listener }

// listenHTTP binds the listeners of the --debug-addr and --metrics servers
// that cfg asks for; it binds neither when one fails.
func listenHTTP(ctx context.Context, cfg *config) (httpListeners, error) {
	var web httpListeners
	var err error
	if cfg.debugAddr != "" {
		if web.debug, err = net.Listen("tcp", workerAddr(cfg.debugAddr)); err != nil {
			return httpListeners{}, fmt.Errorf("--debug-addr: %w", err)
		}
	}
	if cfg.metricsAddr != "" {
		if web.metrics, err = listenMetrics(ctx, workerAddr(cfg.metricsAddr)); err != nil {
			web.close()
			return httpListeners{}, fmt.Errorf("--metrics %s: %w", cfg.metricsAddr, err)
		}
	}
	return web, nil
}

// serve starts the servers of web's listeners, m's metrics, and returns
// the func that closes them, which run calls once the drain is over.
func (web httpListeners) serve(m *metrics, log *slog.Logger) (stop func()) {
	var srvs []*http.Server
	if web.debug != nil {
		srvs = append(srvs, serveDebugOn(web.debug, 0, log))
	}
	if web.metrics != nil {
		srvs = append(srvs, serveMetricsOn(web.metrics, m, log))
	}
	return func() { closeHTTP(srvs, httpCloseWait) }
}

// httpCloseWait is how long the exit lets a scrape or a profile that is in
// flight when the drain ends go on before its connection is closed.
const httpCloseWait = time.Second

// closeHTTP closes srvs: their listeners at once, their connections once
// idle, and after wait whatever is still busy.
func closeHTTP(srvs []*http.Server, wait time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for _, srv := range srvs {
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	}
}

// close closes web's listeners, for a start that failed.
func (web httpListeners) close() {
	for _, l := range []net.Listener{web.debug, web.metrics} {
		if l != nil {
			l.Close()
		}
	}
}

// warnShared logs one warning for each address of plan that another socket
// already listens on: with SO_REUSEPORT sluice binds beside it and shares
// its connections, which a restart means to do (see README) and a second
// sluice started by mistake does silently. Workers do not check: each
// binds beside its siblings.
func warnShared(plan []listenAddr, log *slog.Logger) {
	for _, la := range plan {
		for _, a := range la.addrs {
			ap, err := netip.ParseAddrPort(a)
			if err != nil || ap.Port() == 0 || !portShared(ap) {
				continue
			}
			log.Warn("another socket already listens on this address: sluice shares its connections with it (SO_REUSEPORT), as a restart means to; stop the other if that is not meant", "addr", a)
		}
	}
}

// migrateReq reads net.ipv4.tcp_migrate_req: "1" when the kernel moves the
// connections queued on a closing SO_REUSEPORT listener to another one of
// its group; "" when it cannot be read (not Linux, or before 5.14).
func migrateReq() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// instance is a started server: its listeners and the sessions they feed.
type instance struct {
	srv       *server
	listeners []*net.TCPListener
	bare      []*os.File           // per listener, its bare accept loop's duplicate (nil: none)
	accepted  []atomic.Int64       // per listener
	acceptors []*acceptor          // per listener
	closed    chan struct{}        // closed by shutdown once it has closed the listeners
	cancel    context.CancelFunc   // ends live sessions
	cancels   []context.CancelFunc // of each listener's context, below cancel's
	accepting sync.WaitGroup       // a count for each goroutine running an accept loop
}

// start checks the configuration, opens every listener and starts one accept
// loop per listener. It logs one line per listen address.
func start(ctx context.Context, cfg *config, log *slog.Logger) (*instance, error) {
	plan, err := planListen(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if os.Getenv(workerEnv) == "" {
		warnShared(plan, log)
	}
	lv, warn, err := buildLive(cfg)
	if err != nil {
		return nil, err
	}
	if warn != "" {
		log.Warn(warn)
	}
	topts, warnings := cfg.tune.Probe()
	for _, w := range warnings {
		var oe *tune.OptionError
		if errors.As(w, &oe) && cfg.sideFlagFrom[oe.Flag] != "" {
			oe.Flag = cfg.sideFlagFrom[oe.Flag]
		}
		log.Warn(w.Error())
	}
	warnPipeSize(cfg, log)
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	srv, err := newServer(cfg, &topts, relayOptions(cfg, &topts, log), log)
	if err != nil {
		cancel()
		return nil, err
	}
	if cfg.relay.CopyBelow > 0 && srv.relay.Loops() == 0 {
		// Only the event loops split reads by size: on the goroutine
		// path (--loops -1, --no-splice, no loops on this system) the
		// flag would do nothing, silently.
		log.Warn("--copy-below has no effect without the relay's event loops (--loops -1, --no-splice, or none on this system)")
	}
	inst := &instance{cancel: cancel, srv: srv, closed: make(chan struct{})}
	inst.srv.live.Store(lv)
	for _, la := range plan {
		if err := inst.listen(ctx, &topts, la, lv, log); err != nil {
			inst.shutdown(0)
			return nil, err
		}
	}
	inst.startAccepting(sctx, cfg.pin, log)
	return inst, nil
}

// warnPipeSize logs one warning when the kernel refuses the splice pipe size
// (--pipe-size; 1 MiB when 0): the relay's pipes then keep the kernel's
// default size, not the largest it allows, as a refused socket option is
// left unset.
func warnPipeSize(cfg *config, log *slog.Logger) {
	if cfg.relay.ForceCopy {
		return
	}
	want, kept, err := relay.PipeSizeRefused(cfg.relay)
	if err == nil {
		return
	}
	limit, _ := os.ReadFile("/proc/sys/fs/pipe-max-size")
	log.Warn(fmt.Sprintf("--pipe-size %d (F_SETPIPE_SZ): %v: splice pipes keep the kernel's %d bytes "+
		"(fs.pipe-max-size is %s; past it, or past fs.pipe-user-pages-soft, a pipe needs CAP_SYS_RESOURCE)",
		want, err, kept, strings.TrimSpace(string(limit))))
}

// listen opens the listeners of one --listen address: of each of its
// addresses, for a host name, all on the port the first one got (so that
// port 0 means one port). An address of a name that this host cannot bind
// (EADDRNOTAVAIL: IPv6 turned off, say, with ::1 still in /etc/hosts;
// EAFNOSUPPORT) is skipped with a warning, as long as another one binds;
// any other error, EADDRINUSE included, stops the start. One exception:
// given port 0, the port the first address got may be in use on another
// address of the name (a connected socket's local port, say); the
// listeners bound on it are then held, so that the first address gets
// another port, and closed once one port serves every address.
func (inst *instance) listen(ctx context.Context, topts *tune.Options, la listenAddr, lv *live, log *slog.Logger) error {
	var held []boundAddr
	defer func() {
		for _, b := range held {
			b.close()
		}
	}()
	for try := 1; ; try++ {
		bound, clash, err := inst.bindName(ctx, topts, la, log)
		if err == nil {
			for _, b := range bound {
				inst.listeners = append(inst.listeners, b.ls...)
				inst.bare = append(inst.bare, b.bare...)
				log.Info("sluice listening", "addr", b.ls[0].Addr().String(), "listeners", len(b.ls), "auth", lv.hs.Credentials != nil, "relay_loops", inst.srv.relay.Loops())
			}
			return nil
		}
		if !clash || try == maxPortTries {
			for _, b := range bound {
				b.close()
			}
			return fmt.Errorf("--listen %s: %w", la.given, err)
		}
		log.Debug("--listen: the port of the name's first address is in use on another; trying another port", "listen", la.given, "err", err)
		held = append(held, bound...)
	}
}

// maxPortTries bounds the ports listen tries for a host name given port 0.
const maxPortTries = 8

// boundAddr is the listeners of one address of a --listen address, and
// their descriptors for the bare accept path (nil on package net's).
type boundAddr struct {
	ls   []*net.TCPListener
	bare []*os.File
}

func (b boundAddr) close() {
	for i, l := range b.ls {
		l.Close()
		if f := b.bare[i]; f != nil {
			f.Close()
		}
	}
}

// bindName binds every address of la, as listen says, and returns what it
// bound, also when it fails; clash reports an address that could not bind
// the port that port 0 gave the first one.
func (inst *instance) bindName(ctx context.Context, topts *tune.Options, la listenAddr, log *slog.Logger) (bound []boundAddr, clash bool, err error) {
	port := ""
	var skipped error
	for _, a := range la.addrs {
		_, given, _ := net.SplitHostPort(a)
		if port != "" {
			host, _, _ := net.SplitHostPort(a)
			a = net.JoinHostPort(host, port)
		}
		ls, err := topts.Listen(ctx, a)
		if err != nil {
			if la.named() && (errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT)) {
				log.Warn("--listen: an address of the name cannot be bound on this host; skipped", "listen", la.given, "addr", a, "err", err)
				skipped = err
				continue
			}
			return bound, port != "" && anyPort(given) && errors.Is(err, syscall.EADDRINUSE), err
		}
		_, port, _ = net.SplitHostPort(ls[0].Addr().String())
		b := boundAddr{ls: ls, bare: make([]*os.File, len(ls))}
		if inst.srv.bareSockets {
			for i, l := range ls {
				b.bare[i] = bareListener(l, log) // before the line that says sluice listens
			}
		}
		bound = append(bound, b)
	}
	if port == "" {
		return nil, false, fmt.Errorf("no address of the name can be bound: %w", skipped)
	}
	return bound, false, nil
}

// idlePipes bounds the relay's pooled pipes for a process that may open
// nofile descriptors: a pipe holds two, so nofile/32 pipes hold 1/16 of
// them; at least one pipe, at most relay's default of 1024.
func idlePipes(nofile uint64) int {
	return int(min(max(nofile/32, 1), 1024))
}

// relayOptions are cfg's relay options as this process runs them: its
// descriptor limit raised, and the sockets handed over to the relay.
func relayOptions(cfg *config, topts *tune.Options, log *slog.Logger) relay.Options {
	ropts := cfg.relay
	if n, raised, err := tune.RaiseNoFile(); err != nil {
		log.Warn("cannot raise RLIMIT_NOFILE", "err", err)
	} else {
		if raised { // Go raised it at start-up already, as a rule
			log.Debug("RLIMIT_NOFILE raised", "soft", n)
		}
		if ropts.MaxIdlePipes == 0 {
			ropts.MaxIdlePipes = idlePipes(n)
		}
	}
	// The relay takes a session's sockets over on its event loops (out of
	// package net's poller: 0.69x the RSS per idle session) and closes them
	// itself. Where it does not (the goroutine path, or no descriptor left
	// to duplicate), serveConn closes them first thing in done.
	ropts.TakeSockets = true
	ropts.CallerCloses = true
	if topts.UpstreamKeepAlive() {
		// A CONNECT's bare upstream (tune.DialFdLate) gets its keepalive
		// once the session has lived a second: four system calls that
		// most short sessions never need. Probe has tried the options
		// already, so an error here would be the socket's own (reset).
		ropts.Mature = func(fd int) { topts.ArmKeepAlive(fd) }
	}
	return ropts
}

// newServer builds the server that every session of this process shares,
// before any accept loop runs. It fails when the relay could not make the
// event loops asked for.
func newServer(cfg *config, topts *tune.Options, ropts relay.Options, log *slog.Logger) (*server, error) {
	r := relay.New(ropts)
	if err := r.LoopsErr(); err != nil {
		r.Close()
		return nil, fmt.Errorf("--loops %d: %w", cfg.relay.Loops, err)
	}
	s := &server{
		tune:        topts,
		dialer:      topts.Dialer(),
		relay:       r,
		log:         log,
		limits:      newLimiter(),
		forceCopy:   cfg.relay.ForceCopy,
		dialTimeout: dialTimeout(cfg.tune.DialTimeout),
		logBlocks:   cfg.logWriter == nil,
	}
	s.fallbackDelay = cmp.Or(cfg.fallbackDelay, defaultFallbackDelay)
	s.backoffMin, s.backoffMax = 5*time.Millisecond, time.Second
	if cfg.acceptBackoff != 0 {
		s.backoffMin, s.backoffMax = cfg.acceptBackoff, cfg.acceptBackoff
	}
	s.started = time.Now()
	if s.logBlocks {
		s.refusals = newRefusals(log)
	}
	if cfg.resolver != nil {
		s.dialer.Resolver = cfg.resolver
	}
	// CONNECT to an address dials a bare socket that the relay's loops take
	// as it is: no poller registration, no net.Dialer. Without loops the
	// relay would wrap it in a *net.TCPConn after all, so net.Dialer dials.
	s.bareSockets = !cfg.netSockets && s.relay.Loops() > 0
	// The waiter parks bare clients that must wait, and watches every
	// client's pending dial, package net's too (--net-sockets).
	if !cfg.noWaiter {
		w, err := newWaiter()
		if err != nil {
			log.Warn("no waiter: bare clients wait in package os's poller, pending dials go unwatched", "err", err)
		} else if w != nil && cfg.watchAfter != 0 {
			w.watchAfter = cfg.watchAfter
		}
		s.waiter = w
	}
	if cfg.metricsAddr != "" {
		s.metrics = newMetrics(cfg.logWriter, s.relay)
	}
	return s, nil
}

// startAccepting starts an accept loop per listener, the i-th pinned to
// the i-th usable CPU (round robin) when pin is set.
func (inst *instance) startAccepting(sctx context.Context, pin bool, log *slog.Logger) {
	cpus, _ := tune.CPUs()
	inst.accepted = make([]atomic.Int64, len(inst.listeners))
	for i, l := range inst.listeners {
		cpu := -1
		if pin && len(cpus) > 0 {
			cpu = cpus[i%len(cpus)]
		}
		// Each listener's sessions hang their cancellation (relay, dial) on
		// a context of its own, so that listeners share no context's lock;
		// canceling sctx still reaches them all.
		lctx, lcancel := context.WithCancel(sctx)
		inst.cancels = append(inst.cancels, lcancel)
		a := &acceptor{s: inst.srv, ctx: lctx, l: l, closed: inst.closed, bare: newBareAccept(bareConn(inst.bare[i], l, log)), cpu: cpu,
			accepted: &inst.accepted[i], running: &inst.accepting}
		inst.acceptors = append(inst.acceptors, a)
		inst.accepting.Add(1)
		go a.acceptLoop()
	}
}

// bareConn returns the RawConn that l's accept loop accepts bare sockets
// through, from f, l's duplicate (bareListener), or nil when there is none.
func bareConn(f *os.File, l *net.TCPListener, log *slog.Logger) syscall.RawConn {
	if f == nil {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		log.Warn("accepting through package net", "listener", l.Addr().String(), "err", err)
		return nil
	}
	return rc
}

// bareListener returns a duplicate of l's descriptor for its accept loop to
// accept bare sockets from (package net refuses RawConn.Read on a
// listener), or nil, logged, when none can be made.
func bareListener(l *net.TCPListener, log *slog.Logger) *os.File {
	f, err := l.File() // shares the socket and its non-blocking mode: pollable
	if err != nil {
		log.Warn("accepting through package net", "listener", l.Addr().String(), "err", err)
		return nil
	}
	return f
}

// addrs returns the bound address of each listener.
func (inst *instance) addrs() []string {
	out := make([]string, len(inst.listeners))
	for i, l := range inst.listeners {
		out[i] = l.Addr().String()
	}
	return out
}

// shutdown stops accepting, lets live sessions finish for up to drain, then
// ends the rest and waits for them. It is called once.
func (inst *instance) shutdown(drain time.Duration) { inst.shutdownUnless(drain, nil) }

// shutdownUnless is shutdown whose drain a signal from cut (the operator's
// second SIGINT or SIGTERM) also ends, as its timeout does.
func (inst *instance) shutdownUnless(drain time.Duration, cut <-chan os.Signal) {
	for i, l := range inst.listeners {
		l.Close()
		if f := inst.bare[i]; f != nil {
			f.Close() // the socket's last descriptor: it stops listening
		}
	}
	// An accept loop backing off after failed accepts (EMFILE) ends now,
	// not when its delay (up to 1 s) is out. Its context cannot say so:
	// the sessions it started hang on it until the drain is over.
	close(inst.closed)
	inst.accepting.Wait()
	done := make(chan struct{})
	go func() { inst.srv.sessions.Wait(); close(done) }()
	if drain > 0 {
		t := time.NewTimer(drain)
		select {
		case <-done:
		case <-t.C:
			inst.srv.log.Warn("drain timeout: closing live sessions", "drain_timeout", drain)
		case sig := <-cut:
			inst.srv.log.Warn("second signal: ending the drain now, closing live sessions", "signal", sig.String())
		}
		t.Stop()
	}
	inst.cancel()
	for _, cancel := range inst.cancels {
		cancel()
	}
	inst.srv.waiter.close() // clients still in their handshake end too
	<-done
	inst.srv.relay.Close()
	inst.srv.refusals.close() // after the accept loops, the only callers of refuse
}

// dialTimeout resolves --dial-timeout as tune does: 0 means 10 s, negative
// means none (0 returned).
func dialTimeout(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return 10 * time.Second
	case d < 0:
		return 0
	}
	return d
}

// newLogger builds the process logger from --log-format; level is
// --log-level, which a reload may change.
func newLogger(cfg *config, level slog.Leveler, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.logFormat == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h).With(workerAttr()...)
}

// startProfile starts the pkg/profile run asked for by --profile. Its own
// signal hook is off: sluice stops the profile itself on SIGINT/SIGTERM.
func startProfile(cfg *config) interface{ Stop() } {
	mode := map[string]func(*profile.Profile){
		"cpu": profile.CPUProfile, "heap": profile.MemProfileHeap, "allocs": profile.MemProfileAllocs,
		"block": profile.BlockProfile, "mutex": profile.MutexProfile, "trace": profile.TraceProfile,
		"goroutine": profile.GoroutineProfile,
	}[cfg.profile]
	return profile.Start(mode, profile.ProfilePath(cfg.profileDir), profile.NoShutdownHook, profile.Quiet)
}

// serveDebug serves net/http/pprof on addr in the background, with the
// read and idle timeouts of limitedServer (limit: as there), and returns the
// bound address.
func serveDebug(addr string, limit time.Duration, log *slog.Logger) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	serveDebugOn(l, limit, log)
	return l.Addr().String(), nil
}

// serveDebugOn is serveDebug on a bound listener, l; it returns the server,
// for its owner to close.
func serveDebugOn(l net.Listener, limit time.Duration, log *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("debug server listening", "addr", l.Addr().String(), "path", "/debug/pprof/", "gomaxprocs", runtime.GOMAXPROCS(0))
	// No write timeout: /debug/pprof/profile?seconds=N answers after N s.
	srv := limitedServer(mux, limit)
	go srv.Serve(l)
	return srv
}
