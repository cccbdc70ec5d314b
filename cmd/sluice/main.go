// Command sluice is a zero-copy SOCKS5 relay for Linux.
//
//	go run ./cmd/sluice                    # serves on 127.0.0.1:1080, no auth
//	sluice --listen [::1]:1080 --users users.txt
//
// Run "sluice --help" for every flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pkg/profile"

	"sluice/handshake"
	"sluice/relay"
	"sluice/tune"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run is main without os.Exit: it returns the process exit status.
func run(args []string, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice: %v\n", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	if cfg.profile != "" {
		defer startProfile(cfg).Stop()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if cfg.workers > 0 {
		return runWorkers(ctx, cfg, args, log)
	}
	inst, err := start(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "sluice: %v\n", err)
		return 1
	}
	if cfg.debugAddr != "" {
		if err := serveDebug(cfg.debugAddr, log); err != nil {
			inst.shutdown(0)
			fmt.Fprintf(stderr, "sluice: --debug-addr: %v\n", err)
			return 1
		}
	}
	<-ctx.Done()
	log.Info("shutting down", "drain_timeout", cfg.drainTimeout)
	inst.shutdown(cfg.drainTimeout)
	return 0
}

// instance is a started server: its listeners and the sessions they feed.
type instance struct {
	srv       *server
	listeners []*net.TCPListener
	accepted  []atomic.Int64     // per listener
	cancel    context.CancelFunc // ends live sessions
	accepting sync.WaitGroup
}

// start checks the configuration, opens every listener and starts one accept
// loop per listener. It logs one line per listen address.
func start(ctx context.Context, cfg *config, log *slog.Logger) (*instance, error) {
	if err := checkOpenRelay(cfg); err != nil {
		return nil, err
	}
	var creds handshake.Credentials
	if cfg.usersFile != "" {
		users, warn, err := loadUsers(cfg.usersFile)
		if err != nil {
			return nil, err
		}
		if warn != "" {
			log.Warn(warn)
		}
		creds = users
	}
	if n, err := tune.RaiseNoFile(); err != nil {
		log.Warn("cannot raise RLIMIT_NOFILE", "err", err)
	} else {
		log.Debug("RLIMIT_NOFILE raised", "soft", n)
	}
	topts, warnings := cfg.tune.Probe()
	for _, w := range warnings {
		log.Warn(w.Error())
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	inst := &instance{cancel: cancel, srv: &server{
		hs:               handshake.Config{Credentials: creds},
		tune:             &topts,
		dialer:           topts.Dialer(),
		relay:            relay.New(cfg.relay),
		log:              log,
		handshakeTimeout: cfg.handshakeTimeout,
		bindTimeout:      cfg.bindTimeout,
		udpIdleTimeout:   cfg.udpIdleTimeout,
	}}
	if !cfg.udp {
		inst.srv.udpIdleTimeout = -1
	}
	if !cfg.bind {
		inst.srv.bindTimeout = -1
	}
	for _, addr := range cfg.listen {
		ls, err := topts.Listen(ctx, addr)
		if err != nil {
			inst.shutdown(0)
			return nil, fmt.Errorf("--listen %s: %w", addr, err)
		}
		inst.listeners = append(inst.listeners, ls...)
		log.Info("sluice listening", "addr", ls[0].Addr().String(), "listeners", len(ls), "auth", creds != nil)
	}
	cpus, _ := tune.CPUs()
	inst.accepted = make([]atomic.Int64, len(inst.listeners))
	for i, l := range inst.listeners {
		cpu := -1
		if cfg.pin && len(cpus) > 0 {
			cpu = cpus[i%len(cpus)]
		}
		inst.accepting.Add(1)
		go func() {
			defer inst.accepting.Done()
			inst.srv.acceptLoop(sctx, l, cpu, &inst.accepted[i])
		}()
	}
	return inst, nil
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
// ends the rest and waits for them.
func (inst *instance) shutdown(drain time.Duration) {
	for _, l := range inst.listeners {
		l.Close()
	}
	inst.accepting.Wait()
	done := make(chan struct{})
	go func() { inst.srv.sessions.Wait(); close(done) }()
	if drain > 0 {
		t := time.NewTimer(drain)
		select {
		case <-done:
		case <-t.C:
			inst.srv.log.Warn("drain timeout: closing live sessions", "drain_timeout", drain)
		}
		t.Stop()
	}
	inst.cancel()
	<-done
	inst.srv.relay.Close()
}

// newLogger builds the process logger from --log-level and --log-format.
func newLogger(cfg *config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.logLevel}
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

// serveDebug serves net/http/pprof on addr in the background.
func serveDebug(addr string, log *slog.Logger) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("debug server listening", "addr", l.Addr().String(), "path", "/debug/pprof/", "gomaxprocs", runtime.GOMAXPROCS(0))
	go http.Serve(l, mux)
	return nil
}
