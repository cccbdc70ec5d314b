package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"sluice/tune"
)

// workerEnv marks a process started by --workers; its value is the worker's
// index.
const workerEnv = "SLUICE_WORKER"

// workerExit reports that worker i ended.
type workerExit struct {
	i   int
	err error
}

// runWorkers is the parent of --workers N: it starts N copies of this
// program, each with GOMAXPROCS=1, pinned to its own CPU and with its own
// SO_REUSEPORT listener per address, forwards SIGINT/SIGTERM to them, and
// SIGHUP (each worker then reloads on its own), and restarts a worker that
// dies. It returns the exit status once every worker has ended after a
// signal.
func runWorkers(ctx context.Context, cfg *config, args []string, log *slog.Logger, hup <-chan os.Signal) int {
	exe, err := os.Executable()
	if err != nil {
		log.Error("--workers: cannot find own executable", "err", err)
		return 1
	}
	if err := checkOpenRelay(cfg); err != nil {
		log.Error(err.Error())
		return 1
	}
	cpus, err := tune.CPUs()
	if err != nil || len(cpus) == 0 {
		cpus = nil
	}
	// Later flags win: each worker serves with one listener per address and
	// is pinned as a whole process, not per accept loop.
	wargs := append(append([]string{}, args...), "--workers=0", "--listeners=1", "--pin=false")
	procs := make([]*exec.Cmd, cfg.workers)
	exited := make(chan workerExit, cfg.workers)
	startWorker := func(i int) error {
		cmd := exec.Command(exe, wargs...)
		cmd.Env = append(os.Environ(), workerEnv+"="+strconv.Itoa(i), "GOMAXPROCS=1")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cpu := -1
		if len(cpus) > 0 {
			cpu = cpus[i%len(cpus)]
		}
		if err := startPinned(cmd, cpu); err != nil {
			return err
		}
		procs[i] = cmd
		log.Info("worker started", "worker", i, "pid", cmd.Process.Pid, "cpu", cpu)
		go func() { exited <- workerExit{i, cmd.Wait()} }()
		return nil
	}
	live := 0
	for i := range cfg.workers {
		if err := startWorker(i); err != nil {
			log.Error("--workers: cannot start worker", "worker", i, "err", err)
			signalAll(procs, syscall.SIGTERM)
			waitAll(exited, live)
			return 1
		}
		live++
	}
	lastRestart := make([]time.Time, cfg.workers)
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping workers", "workers", live)
			signalAll(procs, syscall.SIGTERM)
			if !waitAllTimeout(exited, live, cfg.drainTimeout+5*time.Second) {
				signalAll(procs, syscall.SIGKILL)
			}
			return 0
		case <-hup:
			log.Info("forwarding SIGHUP to workers", "workers", live)
			signalAll(procs, syscall.SIGHUP)
		case e := <-exited:
			live--
			procs[e.i] = nil
			log.Error("worker died; restarting", "worker", e.i, "err", e.err)
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
			lastRestart[e.i] = time.Now()
			if err := startWorker(e.i); err != nil {
				log.Error("cannot restart worker", "worker", e.i, "err", err)
				continue
			}
			live++
		}
	}
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

// waitAllTimeout waits for n workers to exit, up to d; it reports whether
// they all did.
func waitAllTimeout(exited <-chan workerExit, n int, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for range n {
		select {
		case <-exited:
		case <-t.C:
			return false
		}
	}
	return true
}

// workerAttr is the log attribute of a worker process, if this is one.
func workerAttr() []any {
	if w := os.Getenv(workerEnv); w != "" {
		return []any{"worker", w}
	}
	return nil
}

// workerMetricsAddr is the --metrics address of this process: worker i of
// --workers serves on the given port plus i, so that each can be scraped.
func workerMetricsAddr(addr string) string {
	w := os.Getenv(workerEnv)
	host, port, err := net.SplitHostPort(addr)
	if w == "" || err != nil {
		return addr
	}
	i, err1 := strconv.Atoi(w)
	p, err2 := strconv.Atoi(port)
	if err1 != nil || err2 != nil || p == 0 {
		return addr
	}
	return net.JoinHostPort(host, strconv.Itoa(p+i))
}
