package main

import (
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	"sluice/handshake"
	"sluice/relay"
)

// live is the part of the configuration that SIGHUP can change. It is built
// whole and swapped atomically; each session loads it once at accept and
// keeps that copy to its end, so a reload never changes a session midway,
// with one exception: whether a client may use the relay at all is decided
// by the configuration in force when its handshake checks it (liveConfig,
// serveConn), so that a reload that removes a user, changes a password or
// turns authentication on holds for handshakes already under way too.
type live struct {
	hs               handshake.Config
	clients          *policy // nil: every client
	rules            *policy // nil: every destination
	maxSessions      int
	maxPerIP         int
	maxPerUser       int
	handshakeTimeout time.Duration
	bindTimeout      time.Duration // negative: BIND off
	udpIdleTimeout   time.Duration // negative: UDP ASSOCIATE off; 0: no idle timeout
	udpFilter        relay.Filter
	accessLog        bool
}

// liveConfig holds the live configuration in force, which a reload swaps.
type liveConfig struct{ atomic.Pointer[live] }

// Valid makes liveConfig the handshake.Credentials of every session whose
// greeting chose RFC 1929: it checks user and pass against the users in
// force when the client sends them, not those at its accept. With no users
// file in force (a reload turned authentication off after the greeting
// chose it) nothing is valid, after the same work as for an unknown user.
// It does not allocate.
func (p *liveConfig) Valid(user, pass []byte) bool {
	users := p.Load().hs.Credentials // a handshake.Users (buildLive), never p
	if users == nil {
		users = handshake.Users(nil)
	}
	return users.Valid(user, pass)
}

// liveKeys are the keys a reload applies; a change to any other key is
// logged as needing a restart.
var liveKeys = map[string]bool{
	"users": true, "handshake-timeout": true, "bind": true, "bind-timeout": true, "udp": true,
	"udp-idle-timeout": true, "udp-filter": true, "drain-timeout": true, "access-log": true, "log-level": true,
	"max-sessions": true, "max-sessions-per-ip": true, "max-sessions-per-user": true,
	"deny-private": true, "default-policy": true, "client-default-policy": true,
	"allow-open-relay": true,
}

// buildLive loads the users file and compiles the rules of cfg. warn is a
// warning to log (a users file readable by others).
func buildLive(cfg *config) (lv *live, warn string, err error) {
	lv = &live{
		maxSessions:      cfg.maxSessions,
		maxPerIP:         cfg.maxSessionsPerIP,
		maxPerUser:       cfg.maxSessionsPerUser,
		handshakeTimeout: cfg.handshakeTimeout,
		bindTimeout:      cfg.bindTimeout,
		udpIdleTimeout:   cfg.udpIdleTimeout,
		udpFilter:        udpFilters[cfg.udpFilter],
		accessLog:        cfg.accessLog,
	}
	// Pipelining clients get their method (and auth) answers together with
	// the reply: one write and one wake-up instead of two or three.
	lv.hs.Coalesce = true
	if !cfg.udp {
		lv.udpIdleTimeout = -1
	}
	if !cfg.bind {
		lv.bindTimeout = -1
	}
	if cfg.usersFile != "" {
		users, w, err := loadUsers(cfg.usersFile)
		if err != nil {
			return nil, "", err
		}
		lv.hs.Credentials, warn = users, w
	}
	if lv.clients, err = compilePolicy(cfg.clientRules, cfg.clientPolicy, false, true); err != nil {
		return nil, "", fmt.Errorf("client rules: %w", err)
	}
	if lv.rules, err = compilePolicy(cfg.rules, cfg.defaultPolicy, cfg.denyPrivate, false); err != nil {
		return nil, "", fmt.Errorf("rules: %w", err)
	}
	return lv, warn, nil
}

// reload re-reads the command line args (and the configuration file it
// names) and swaps in the new live configuration. On any error the old one
// stays and one error line says why. Keys that cannot change while running
// are logged as needing a restart. It returns the configuration now in
// force.
func (inst *instance) reload(args []string, old *config, level *slog.LevelVar) *config {
	log := inst.srv.log
	cfg, err := parseFlags(args, io.Discard)
	if err == nil {
		err = inst.checkOpenRelay(cfg)
	}
	var lv *live
	var warn string
	if err == nil {
		lv, warn, err = buildLive(cfg)
	}
	if err != nil {
		inst.srv.metrics.reload(false)
		log.Error("reload failed; keeping the running configuration", "err", err)
		return old
	}
	if warn != "" {
		log.Warn(warn)
	}
	var restart []string
	for k, v := range cfg.values {
		if !liveKeys[k] && old.values[k] != v {
			restart = append(restart, k)
		}
	}
	sort.Strings(restart)
	for _, k := range restart {
		log.Warn("reload: key changed but needs a restart; keeping the running value", "key", k,
			"running", old.values[k].val, "file", cfg.values[k].val)
		cfg.values[k] = old.values[k] // report it as unchanged next time too
	}
	inst.srv.live.Store(lv)
	if level != nil {
		level.Set(cfg.logLevel)
	}
	inst.srv.metrics.reload(true)
	log.Info("configuration reloaded", "users", lv.hs.Credentials != nil, "client_rules", len(cfg.clientRules),
		"rules", len(cfg.rules), "deny_private", cfg.denyPrivate, "needs_restart", len(restart))
	return cfg
}
