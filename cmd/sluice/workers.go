package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sluice/tune"
)

// workerEnv marks a process started by --workers; its value is the worker's
// index.
const workerEnv = "SLUICE_WORKER"

// workerStatusEnv names, in a worker's environment, the descriptor on which
// it tells its parent how its start went (workerStarted).
const workerStatusEnv = "SLUICE_WORKER_STATUS"

// workerListening is the status line of a worker that serves.
const workerListening = "listening"

// workerExit reports that worker i ended: status is the line it reported
// on its status pipe, workerListening once it served, its start error when
// it had not, "" when it reported none.
type workerExit struct {
	i      int
	err    error
	status string
}

// listened reports whether the worker had told its parent that it serves.
func (e workerExit) listened() bool { return e.status == workerListening }

// runWorkers is the parent of --workers N: it starts N copies of this
// program, each with GOMAXPROCS=1, pinned to its own CPU (of those the
// process may use when the worker starts) and with its own SO_REUSEPORT
// listener per address, forwards SIGINT/SIGTERM to them (as SIGTERM; a
// second one as endDrain, which ends their drains at once), and SIGHUP
// (each worker then reloads on its own; the parent takes the new
// --log-level for its own lines when the workers' reload takes the new
// configuration, keeping its own as they keep theirs when it does not; a
// worker that has not told it that it
// serves gets the signal once it has, as Go's default for SIGHUP would end
// a process still starting), and restarts a worker that dies after it
// served (one stopped by SIGTERM or SIGINT a second later, unless sluice
// stops by then: the signal was most likely sent to the parent too). It
// returns the exit status once every worker has ended after a signal: 0, or
// 1 when the configuration cannot start (checked here before any worker
// starts, with the line sluice without --workers prints), a worker ends
// before it listens (an address only the worker finds it cannot bind),
// which a restart would only repeat, or workers still ran at the drain
// timeout plus 5 s and were killed.
func runWorkers(ctx context.Context, cfg *config, args []string, log *slog.Logger, level *slog.LevelVar, hup, again <-chan os.Signal, sd *notifier) int {
	var stderr io.Writer = os.Stderr
	if cfg.logWriter != nil {
		stderr = cfg.logWriter
	}
	defer logLost(cfg.logWriter, log)
	fail := func(err error) int {
		fmt.Fprintf(stderr, "sluice: %v\n", err)
		return 1
	}
	exe, err := os.Executable()
	if err != nil {
		return fail(fmt.Errorf("--workers: cannot find own executable: %w", err))
	}
	// What start checks before it binds, each worker would fail on alike.
	plan, err := planListen(ctx, cfg)
	if err != nil {
		if stoppedStarting(ctx, err) {
			log.Info("stopped while starting")
			return 0
		}
		return fail(err)
	}
	warnShared(plan, log)
	if _, _, err := buildLive(cfg); err != nil {
		return fail(err)
	}
	// The addresses the workers' listeners are bound to, which a reload
	// does not change: what a worker's reload checks for an open relay.
	var bound []string
	for _, la := range plan {
		bound = append(bound, la.addrs...)
	}
	// reloadOK reports whether a worker's reload would take c, with the
	// checks its reload makes (instance.reload): the open relay, then the
	// users file and the rules. A worker refuses any other and keeps its
	// running configuration, log level included; so does this process.
	reloadOK := func(c *config) bool {
		if refuseOpenRelay(c, bound) != nil {
			return false
		}
		_, _, err := buildLive(c)
		return err == nil
	}
	// A worker gets stdin, stdout, stderr and its status pipe: no
	// descriptor that this process inherited from whatever started it.
	if err := closeInheritedOnExec(); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		log.Warn("workers may inherit descriptors that sluice inherited", "err", err)
	}
	// The drain timeout the workers may be using: the longest of the
	// configuration's at the start and at each reload or restart since (a
	// worker whose reload fails keeps its old one). noteDrain returns the
	// configuration as it reads it now, nil when it does not parse.
	drain := cfg.drainTimeout
	noteDrain := func() *config {
		c, err := parseFlags(args, io.Discard)
		if err != nil {
			return nil
		}
		drain = max(drain, c.drainTimeout)
		return c
	}
	wargs := workerArgs(args)
	procs := make([]*exec.Cmd, cfg.workers)
	serving := make([]bool, cfg.workers) // procs[i] has told that it serves
	hupHeld := make([]bool, cfg.workers) // a SIGHUP waits for procs[i] to serve
	exited := make(chan workerExit, cfg.workers)
	// Each worker's slot once it listens: for the SIGHUP held for it, and
	// the service manager's READY=1 once every slot has served. Its exit
	// is sent after, so that the slot has no other worker yet; quit,
	// closed once the workers are told to stop, lets it go without.
	listening := make(chan int)
	quit := make(chan struct{})
	startWorker := func(i int) error {
		cmd := exec.Command(exe, wargs...)
		cmd.Env = append(os.Environ(), workerEnv+"="+strconv.Itoa(i), "GOMAXPROCS=1")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		// The worker reports its start on a pipe, its descriptor 3 (none
		// past stderr passes on Windows: every worker counts as serving).
		var r *os.File
		if runtime.GOOS != "windows" {
			var w *os.File
			var err error
			if r, w, err = os.Pipe(); err != nil {
				return err
			}
			defer w.Close() // once started: the worker's copy alone is left, EOF when it exits
			cmd.ExtraFiles = []*os.File{w}
			cmd.Env = append(cmd.Env, workerStatusEnv+"=3")
		}
		// The CPUs this process may use now, not at its start: a cpuset
		// shrunk since (docker update --cpuset-cpus, a CPU manager,
		// hotplug) refuses a CPU it no longer holds, with EINVAL.
		cpu := -1
		if cpus, err := tune.CPUs(); err == nil && len(cpus) > 0 {
			cpu = cpus[i%len(cpus)]
		}
		err := startPinned(cmd, cpu)
		if pe := (*pinError)(nil); errors.As(err, &pe) && errors.Is(pe.err, syscall.EINVAL) {
			// The cpuset lost the CPU between the read and the pinning:
			// the worker serves unpinned rather than not at all.
			log.Warn("cannot pin worker to its CPU, no longer allowed to this process; starting it unpinned", "worker", i, "cpu", cpu, "err", pe.err)
			cpu = -1
			err = startPinned(cmd, cpu)
		}
		if ue := (*unpinError)(nil); errors.As(err, &ue) {
			// The worker runs: it is tracked as started.
			log.Warn("worker started, but the thread that started it keeps its CPU pinning: cannot restore its affinity", "worker", i, "cpu", cpu, "err", ue.err)
			err = nil
		}
		if err != nil {
			if r != nil {
				r.Close()
			}
			return err
		}
		procs[i], serving[i], hupHeld[i] = cmd, false, false // it reads the files anew
		log.Info("worker started", "worker", i, "pid", cmd.Process.Pid, "cpu", cpu)
		go func() {
			line := workerListening
			if r != nil {
				line, _ = bufio.NewReader(io.LimitReader(r, 4096)).ReadString('\n')
				r.Close()
				line = strings.TrimSpace(line)
				if line == workerListening {
					log.Info("worker serving", "worker", i, "pid", cmd.Process.Pid)
				}
			}
			if line == workerListening {
				select {
				case listening <- i:
				case <-quit:
				}
			}
			exited <- workerExit{i, cmd.Wait(), line}
		}()
		return nil
	}
	live := 0
	// waitExits waits up to d for every live worker to exit, passing each
	// signal from cut to onCut; it reports whether they all did.
	waitExits := func(d time.Duration, cut <-chan os.Signal, onCut func(os.Signal)) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		for live > 0 {
			select {
			case e := <-exited:
				live--
				procs[e.i] = nil
			case sig := <-cut:
				onCut(sig)
			case <-t.C:
				return false
			}
		}
		return true
	}
	// stopAll stops every worker. It reports whether they all exited
	// within the drain timeout plus 5 s; it kills the others.
	stopAll := func() bool {
		close(quit)
		log.Info("stopping workers", "workers", live, "drain_timeout", drain)
		signalAll(procs, syscall.SIGTERM)
		// A second SIGINT or SIGTERM ends the workers' drains at once.
		cut := func(sig os.Signal) {
			log.Warn("second signal: ending the workers' drains now", "signal", sig.String(), "workers", live)
			signalAll(procs, endDrain)
		}
		grace := drain + 5*time.Second
		if waitExits(grace, again, cut) {
			return true
		}
		var pids []int
		for _, p := range procs {
			if p != nil {
				pids = append(pids, p.Process.Pid)
			}
		}
		log.Error("workers still running at the drain timeout plus 5 s; killing them", "workers", live, "pids", pids, "waited", grace)
		signalAll(procs, syscall.SIGKILL)
		waitExits(5*time.Second, nil, nil) // reaped before this process exits
		return false
	}
	for i := range cfg.workers {
		if err := startWorker(i); err != nil {
			close(quit)
			signalAll(procs, syscall.SIGTERM)
			waitAll(exited, live)
			return fail(fmt.Errorf("--workers: cannot start worker %d: %w", i, err))
		}
		live++
	}
	lastRestart := make([]time.Time, cfg.workers)
	served := make([]bool, cfg.workers) // the slot's worker has listened once
	nServed := 0                        // slots served: READY=1 once all are
	status := fmt.Sprintf("serving with %d workers", cfg.workers)
	markServed := func(i int) {
		if !served[i] {
			served[i] = true
			if nServed++; nServed == cfg.workers {
				notify(log, sd.ready(status))
			}
		}
	}
	// A slot whose restart could not start a process (fork or exec
	// failed) comes back here a second later, to be tried again.
	retry := make(chan int, cfg.workers)
	restart := func(i int) {
		lastRestart[i] = time.Now()
		noteDrain() // the configuration file the worker reads now
		if err := startWorker(i); err != nil {
			log.Error("cannot restart worker; retrying in a second", "worker", i, "err", err)
			time.AfterFunc(time.Second, func() { retry <- i })
			return
		}
		live++
	}
	for {
		select {
		case <-ctx.Done():
			notify(log, sd.stopping())
			if !stopAll() {
				return 1
			}
			return 0
		case i := <-listening:
			markServed(i)
			serving[i] = true
			if hupHeld[i] {
				hupHeld[i] = false
				log.Info("forwarding the SIGHUP held while the worker started", "worker", i)
				procs[i].Process.Signal(syscall.SIGHUP)
			}
		case <-hup:
			// A worker reloads on its own: the manager hears that the
			// reload is done once it is forwarded. One still starting
			// gets it once it serves: until its handler is set up,
			// SIGHUP would end it.
			notify(log, sd.reloading())
			held := 0
			for i, p := range procs {
				switch {
				case p == nil:
				case serving[i]:
					p.Process.Signal(syscall.SIGHUP)
				default:
					hupHeld[i] = true
					held++
				}
			}
			attrs := []any{"workers", live - held}
			if held > 0 {
				attrs = append(attrs, "held_until_serving", held)
			}
			log.Info("forwarding SIGHUP to workers", attrs...)
			// A configuration that a worker's reload refuses (it does not
			// parse, its users file or rules do not load, an open relay)
			// leaves the level as it leaves the worker's.
			if c := noteDrain(); c != nil && reloadOK(c) {
				level.Set(c.logLevel)
				// A worker's --workers=0 wins over its file: only
				// this process sees the key change.
				if run, file := cfg.values["workers"], c.values["workers"]; run != file {
					log.Warn("reload: key changed but needs a restart; keeping the running value", "key", "workers",
						"running", run.val, "file", file.val)
				}
			}
			if nServed == cfg.workers {
				notify(log, sd.ready(status))
			}
		case i := <-retry:
			if ctx.Err() == nil {
				restart(i)
			}
		case e := <-exited:
			live--
			procs[e.i] = nil
			if e.listened() { // its listening may still be queued
				markServed(e.i)
			}
			if ctx.Err() != nil {
				continue // stopping, or told to stop while starting: the next turn stops the others
			}
			if !served[e.i] && !killed(e.err) {
				// A first start that ended before it served, on an error
				// of its own (a port in use, a file gone), would most
				// likely end alike once a second for ever: sluice stops
				// instead. One killed by a signal (a SIGHUP before its
				// handler, the OOM killer) is restarted. So is a slot
				// that served before: its restart failing (a
				// configuration file broken since) must not take the
				// other workers down; it is retried every second, its
				// error logged, until the file is mended.
				why := cmp.Or(e.status, "no start error reported")
				stopAll()
				return fail(fmt.Errorf("--workers: worker %d exited before it listened (%s); stopping rather than restarting it: %s", e.i, exitStatus(e.err), why))
			}
			if stopSignal(e.err) {
				// A worker that stops as SIGTERM or SIGINT tell it to was
				// most likely sent the signal with this process, to the
				// whole group (Ctrl-C in a terminal, systemd's default
				// KillMode=control-group), whose own signal may reach ctx
				// only after the worker's exit: restarted at once, a new
				// worker would serve while sluice stops. It is restarted
				// after a second unless sluice stops by then.
				log.Warn("worker stopped on a signal; restarting in a second unless sluice stops", "worker", e.i, "err", e.err)
				time.AfterFunc(time.Second, func() { retry <- e.i })
				continue
			}
			if e.listened() {
				log.Error("worker died; restarting", "worker", e.i, "err", e.err)
			} else {
				log.Error("worker died; restarting", "worker", e.i, "err", e.err, "start_error", e.status)
			}
			// A worker that dies again within a second is restarted after one.
			if d := time.Until(lastRestart[e.i].Add(time.Second)); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					continue
				}
			}
			restart(e.i)
		}
	}
}

// logLost logs, as the last line of the parent of --workers, how many of
// its log lines lw dropped or lost to failed writes since it started, when
// any were. A worker serves this count as sluice_log_lines_dropped_total;
// the parent serves no metrics, and its writer's notice (logWriter) tells
// only of lines dropped before one it kept, not of those lost to a write
// that failed (a stderr that refused them for a while) or dropped last.
func logLost(lw *logWriter, log *slog.Logger) {
	if n := lw.droppedLines(); n > 0 {
		log.Warn("log lines lost since the start: stderr fell behind or refused them", "count", n)
	}
}

// workerStarted tells the parent of this worker, if this process is one,
// how its start went: err, the error that stops it, or nil once it serves.
// Only the first call reports.
func workerStarted(err error) {
	fd, e := strconv.Atoi(os.Getenv(workerStatusEnv))
	if os.Getenv(workerEnv) == "" || e != nil || fd < 3 {
		return
	}
	os.Unsetenv(workerStatusEnv)
	f := os.NewFile(uintptr(fd), "worker-status")
	line := workerListening
	if err != nil {
		line = strings.ReplaceAll(err.Error(), "\n", " ")
	}
	f.WriteString(line + "\n")
	f.Close()
}

// pinError is startPinned's error when it could not pin the starting
// thread to cpu: no process started.
type pinError struct {
	cpu int
	err error
}

func (e *pinError) Error() string { return fmt.Sprintf("pin to CPU %d: %v", e.cpu, e.err) }
func (e *pinError) Unwrap() error { return e.err }

// unpinError is startPinned's error when the process started but the
// thread that started it could not get its CPU affinity back: the worker
// runs, and counts as started.
type unpinError struct{ err error }

func (e *unpinError) Error() string { return "restore CPU affinity after start: " + e.err.Error() }
func (e *unpinError) Unwrap() error { return e.err }

// killed reports whether a worker's Wait error says that a signal ended it.
func killed(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && ee.ExitCode() == -1
}

// stopSignal reports whether a worker's Wait error says that it stopped as
// SIGTERM or SIGINT ask: it drained and exited 0, or the signal came before
// its handler and ended it.
func stopSignal(err error) bool {
	var ee *exec.ExitError
	if err == nil {
		return true
	}
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(interface {
		Signaled() bool
		Signal() syscall.Signal
	})
	return ok && ws.Signaled() && (ws.Signal() == syscall.SIGTERM || ws.Signal() == syscall.SIGINT)
}

// exitStatus describes how a worker ended from its Wait error.
func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// signalAll sends sig to every running worker.
func signalAll(procs []*exec.Cmd, sig os.Signal) {
	for _, p := range procs {
		if p != nil && p.Process != nil {
			p.Process.Signal(sig)
		}
	}
}

// waitAll waits for n workers to exit.
func waitAll(exited <-chan workerExit, n int) {
	for range n {
		<-exited
	}
}

// workerAttr is the log attribute of a worker process, if this is one.
func workerAttr() []any {
	if w := os.Getenv(workerEnv); w != "" {
		return []any{"worker", w}
	}
	return nil
}

// workerAddr is the --metrics or --debug-addr address of this process:
// worker i of --workers serves on the given port plus i, so that each can
// be scraped or profiled, where one port would let only the first bind (or,
// with SO_REUSEPORT, let every scrape reach one of them at random). A port
// given as a service name counts as its number, as --listen's does.
func workerAddr(addr string) string {
	w := os.Getenv(workerEnv)
	host, port, err := net.SplitHostPort(addr)
	if w == "" || err != nil {
		return addr
	}
	i, err1 := strconv.Atoi(w)
	p, err2 := net.LookupPort("tcp", port) // a service name as its number
	if err1 != nil || err2 != nil || p == 0 {
		return addr
	}
	return net.JoinHostPort(host, strconv.Itoa(p+i))
}

// workerArgs are a worker's arguments: the parent's, then flags that make
// it serve with one listener per address, pinned as a whole process, not
// per accept loop (later flags win). A "--" that ends the parent's flags
// is left out: the flags after it would be arguments.
func workerArgs(args []string) []string {
	if n := len(args); n > 0 && args[n-1] == "--" {
		// The last argument is a flag's value where the rest misses it.
		if _, err := parseFlags(args[:n-1], io.Discard); err == nil {
			args = args[:n-1]
		}
	}
	return append(slices.Clip(args), "--workers=0", "--listeners=1", "--pin=false")
}
