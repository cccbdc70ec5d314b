package main

import (
	"cmp"
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-reuseport"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"sluice/handshake"
	"sluice/relay"
)

// Command labels of the session metrics and the access log;
// cmdLabelHandshake is a session that ended before its request was read (or
// on one too broken to answer), cmdLabelUnknown one whose request named a
// command SOCKS5 does not define.
const (
	cmdLabelConnect = iota
	cmdLabelBind
	cmdLabelUDP
	cmdLabelHandshake
	cmdLabelUnknown
	numCmdLabels
)

var cmdLabels = [numCmdLabels]string{"connect", "bind", "udp_associate", "none", "unknown"}

// replyLabels names each reply code; the last is "none", for a session closed
// without a reply.
var replyLabels = [...]string{
	handshake.Succeeded:            "succeeded",
	handshake.GeneralFailure:       "general_failure",
	handshake.NotAllowed:           "not_allowed",
	handshake.NetworkUnreachable:   "network_unreachable",
	handshake.HostUnreachable:      "host_unreachable",
	handshake.ConnectionRefused:    "connection_refused",
	handshake.TTLExpired:           "ttl_expired",
	handshake.CommandNotSupported:  "command_not_supported",
	handshake.AddrTypeNotSupported: "address_type_not_supported",
	9:                              "none",
}

const replyNone = 9

// Relay path labels.
const (
	pathSplice   = iota // at least one byte moved through splice
	pathFallback        // splice refused by the kernel; read/write instead
	pathCopy            // read/write by choice (--no-splice, or --copy-below with no read large enough to splice), or nothing moved
	numPaths
)

// metrics are the Prometheus collectors, resolved to their label values once
// so that updating them takes no map lookup and no lock. They are updated
// when a session or association ends, never per read, but for the bytes and
// datagrams relayed, which the relay counts as they move and a scrape reads
// (relay.Relayed, relay.RelayedDatagrams), and the datagrams dropped, which
// the relay and socksCodec count as each is dropped (relay.DroppedDatagrams,
// udpUnresolved). A nil *metrics ignores every update.
type metrics struct {
	reg         *prometheus.Registry
	active      [numCmdLabels]prometheus.Gauge
	sessions    [numCmdLabels][len(replyLabels)]prometheus.Counter
	ahead       atomic.Int64 // bytes clients pipelined behind their requests, written upstream before the relay started
	paths       [numPaths]prometheus.Counter
	handshake   prometheus.Observer
	dial        prometheus.Observer
	acceptErrs  prometheus.Counter
	refused     [numRefusals]prometheus.Counter
	reloads     [2]prometheus.Counter // ok, failed
	connections prometheus.Counter

	// UDP datagrams socksCodec dropped for a name that did not resolve,
	// and for a destination the rules refused: both are DropUnresolved
	// to the relay, which counts every other reason (DroppedDatagrams).
	unresolved, notAllowed atomic.Int64

	// scrapeLimit, when not 0 (tests only), replaces metricsIdleTimeout and
	// metricsReadTimeout.
	scrapeLimit time.Duration
}

// Timeouts of the --metrics and --debug-addr HTTP servers, so that no client holds a
// connection, and its descriptor, for ever. A scraper keeps its connection
// alive between scrapes, 15 to 60 s apart as a rule: one that has sent no
// request for metricsIdleTimeout has gone away (or will open a new one). A
// request, a bodiless GET in one segment, has metricsReadTimeout to arrive
// whole: without it, one that announces a body and never sends it holds its
// connection unanswered, whatever the idle timeout. The response, a few KiB
// gathered in microseconds, has metricsWriteTimeout to leave.
const (
	metricsIdleTimeout  = 2 * time.Minute
	metricsReadTimeout  = 30 * time.Second
	metricsWriteTimeout = time.Minute
)

// limitedServer is an HTTP server for h with the read and idle timeouts
// above; limit, when not 0 (tests only), replaces both.
func limitedServer(h http.Handler, limit time.Duration) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: cmp.Or(limit, metricsReadTimeout), IdleTimeout: cmp.Or(limit, metricsIdleTimeout)}
}

// newMetrics registers every metric; lw (nil: none) is the log's writer,
// whose dropped lines are read at each scrape, and r the relay, whose bytes
// are.
func newMetrics(lw *logWriter, r *relay.Relay) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	logLost := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_log_lines_dropped_total", Help: "Log lines dropped because stderr fell behind, or lost to a failed write (the access log's included)."},
		func() float64 { return float64(lw.droppedLines()) })
	const bytesHelp = "TCP payload bytes relayed, counted as they move (running sessions' included); up is client to target."
	up := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_relayed_bytes_total", Help: bytesHelp, ConstLabels: prometheus.Labels{"direction": "up"}},
		func() float64 { n, _ := r.Relayed(); return float64(n + m.ahead.Load()) })
	down := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_relayed_bytes_total", Help: bytesHelp, ConstLabels: prometheus.Labels{"direction": "down"}},
		func() float64 { _, n := r.Relayed(); return float64(n) })
	active := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_sessions_active", Help: "Sessions past their request, by command."}, []string{"command"})
	sessions := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_sessions_total", Help: "Sessions ended, by command and SOCKS reply code (command none: ended before a request; unknown: a command SOCKS5 does not define)."}, []string{"command", "reply"})
	paths := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_relay_sessions_total", Help: "Relayed TCP sessions by data path: splice, fallback (splice refused by the kernel) or copy."}, []string{"path"})
	hs := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sluice_handshake_duration_seconds", Help: "Time from accept to a parsed request.", Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10)})
	dial := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sluice_dial_duration_seconds", Help: "Time to connect to the target, name resolution included (successful dials).", Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10)})
	acceptErrs := prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_accept_errors_total", Help: "Failed accept calls (EMFILE and the like)."})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_refused_total", Help: "Clients or requests refused by rules or limits, by reason."}, []string{"reason"})
	// UDP: each family's two directions read r's four counts, each load
	// made once per scrape.
	udp := func(i int) func() float64 {
		return func() float64 {
			var v [4]int64
			v[0], v[1], v[2], v[3] = r.RelayedDatagrams()
			return float64(v[i])
		}
	}
	var udpFams [4]prometheus.Collector
	for i, d := range [2]string{"up", "down"} {
		udpFams[i] = prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_udp_datagrams_total", Help: "UDP datagrams relayed, counted as they leave (running associations' included); up is client to destination.", ConstLabels: prometheus.Labels{"direction": d}}, udp(i))
		udpFams[2+i] = prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_udp_relayed_bytes_total", Help: "UDP payload bytes relayed, counted as they leave (running associations' included).", ConstLabels: prometheus.Labels{"direction": d}}, udp(2+i))
	}
	// Drops: each reason read from one count, which only grows: the
	// relay's, but for the two that it sees as one, DropUnresolved.
	var dropFams []prometheus.Collector
	drop := func(reason string, f func() float64) {
		dropFams = append(dropFams, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_udp_datagrams_dropped_total",
			Help: "UDP datagrams dropped, by reason, counted as they are dropped (running associations' included).", ConstLabels: prometheus.Labels{"reason": reason}}, f))
	}
	for d := relay.DropStranger; d < relay.NumDrops; d++ {
		if d == relay.DropUnresolved {
			drop(d.String(), func() float64 { return float64(m.unresolved.Load()) })
		} else {
			drop(d.String(), func() float64 { return float64(r.DroppedDatagrams()[d]) })
		}
	}
	drop("not_allowed", func() float64 { return float64(m.notAllowed.Load()) })
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_config_reloads_total", Help: "SIGHUP reloads, by result."}, []string{"result"})
	conns := prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_connections_accepted_total", Help: "TCP connections accepted, refused ones included."})
	m.reg.MustRegister(active, sessions, up, down, paths, hs, dial, acceptErrs, refused, reloads, conns, logLost)
	m.reg.MustRegister(udpFams[:]...)
	m.reg.MustRegister(dropFams...)
	// The process's own figures, as every Prometheus exporter serves them:
	// open and maximum descriptors, RSS, CPU seconds, start time
	// (process_*), and the Go runtime's goroutines, threads and heap
	// (go_*). Read at each scrape, never per session.
	m.reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	for c := range numCmdLabels {
		m.active[c] = active.WithLabelValues(cmdLabels[c])
		for r := range replyLabels {
			if replyLabels[r] != "" {
				m.sessions[c][r] = sessions.WithLabelValues(cmdLabels[c], replyLabels[r])
			}
		}
	}
	for i, p := range [numPaths]string{"splice", "fallback", "copy"} {
		m.paths[i] = paths.WithLabelValues(p)
	}
	for r := refClientRule; r < numRefusals; r++ {
		m.refused[r] = refused.WithLabelValues(r.String())
	}
	m.reloads[0], m.reloads[1] = reloads.WithLabelValues("ok"), reloads.WithLabelValues("failed")
	m.handshake, m.dial, m.acceptErrs, m.connections = hs, dial, acceptErrs, conns
	return m
}

func (m *metrics) accepted() {
	if m != nil {
		m.connections.Inc()
	}
}

func (m *metrics) acceptError() {
	if m != nil {
		m.acceptErrs.Inc()
	}
}

func (m *metrics) refuse(r refusal) {
	if m != nil {
		m.refused[r].Inc()
	}
}

func (m *metrics) reload(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.reloads[0].Inc()
	} else {
		m.reloads[1].Inc()
	}
}

func (m *metrics) handshakeDone(d time.Duration) {
	if m != nil {
		m.handshake.Observe(d.Seconds())
	}
}

func (m *metrics) dialDone(d time.Duration) {
	if m != nil {
		m.dial.Observe(d.Seconds())
	}
}

// begin counts a session that has read its request, one of the three
// commands.
func (m *metrics) begin(cmd int) {
	if m != nil {
		m.active[cmd].Inc()
	}
}

// end counts a session that began and ended with reply rep (replyNone:
// closed without one).
func (m *metrics) end(cmd int, rep int) {
	if m == nil {
		return
	}
	m.active[cmd].Dec()
	m.sessions[cmd][rep].Inc()
}

// endEarly counts a session that ended in its handshake, never active:
// before its request (cmdLabelHandshake), or with its request refused
// there, labelled with the command it read.
func (m *metrics) endEarly(cmd int, rep int) {
	if m != nil {
		m.sessions[cmd][rep].Inc()
	}
}

// pipelined counts n bytes a client sent behind its request, which the
// server wrote upstream itself before the relay started.
func (m *metrics) pipelined(n int) {
	if m != nil {
		m.ahead.Add(int64(n))
	}
}

// relayed counts the data path of one TCP relay that ended (its bytes were
// counted as they moved).
func (m *metrics) relayed(st relay.Stats, forceCopy bool) {
	if m == nil {
		return
	}
	switch {
	case st.Fallback && !forceCopy:
		m.paths[pathFallback].Inc()
	case st.Spliced:
		m.paths[pathSplice].Inc()
	default:
		m.paths[pathCopy].Inc()
	}
}

// udpUnresolved counts a datagram that socksCodec dropped as
// DropUnresolved, as it drops it: denied, when the destination rules
// refused it; else its name did not resolve.
func (m *metrics) udpUnresolved(denied bool) {
	switch {
	case m == nil:
	case denied:
		m.notAllowed.Add(1)
	default:
		m.unresolved.Add(1)
	}
}

// serveMetrics serves m at http://addr/metrics until ctx ends, on a
// listener of listenMetrics, and returns the bound address.
func serveMetrics(ctx context.Context, addr string, m *metrics, log *slog.Logger) (string, error) {
	l, err := listenMetrics(ctx, addr)
	if err != nil {
		return "", err
	}
	srv := serveMetricsOn(l, m, log)
	context.AfterFunc(ctx, func() { srv.Close() })
	return l.Addr().String(), nil
}

// listenMetrics binds the metrics server's listener to addr. It sets
// SO_REUSEPORT, so that a second sluice started for a restart can open the
// same address.
func listenMetrics(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: reuseport.Control}
	return lc.Listen(ctx, "tcp", addr)
}

// serveMetricsOn serves m at /metrics on l and returns the server, for its
// owner to close: run closes it once the drain is over, not at SIGTERM, so
// that a drain can be scraped.
func serveMetricsOn(l net.Listener, m *metrics, log *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := limitedServer(mux, m.scrapeLimit)
	srv.WriteTimeout = metricsWriteTimeout
	go srv.Serve(l)
	log.Info("metrics listening", "addr", l.Addr().String(), "path", "/metrics")
	return srv
}
