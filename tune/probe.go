package tune

import "errors"

// The options Probe tries, per side, in the order of its errors.
var (
	clientProbe = concat(listenerSockOpts, connOpts, []opt{optReusePort}, listenerOpts, afterListen)
	dialProbe   = concat(dialSockOpts, connOpts, dialOpts, []opt{optSourceAddr})
)

// Probe tries every configured option once, each on a throwaway socket that
// is at most bound to loopback, and returns a copy of o with the options the
// kernel, its settings or the process's privileges refuse turned off (back to
// their default), plus one *OptionError per refused option, naming its flag:
// "tune: --mark (SO_MARK): operation not permitted". An option that Client
// and Upstream set to the same value is tried and reported once, under the
// flag that sets both (--congestion); one that only one side sets, or each
// side to its own value, under that side's flag (--client-congestion,
// --upstream-congestion). A value the kernel lowers (socket buffers,
// backlog, fast open queue, defer accept past 29,887 s) is reported with
// ErrClamped and kept. An option whose throwaway socket cannot be bound to
// loopback or listen (every ephemeral port of loopback in use) is kept
// untried, without an error: Listen reports a refusal. SourceAddr is bound
// as the dial binds it, without reserving a port, so that an address whose
// ephemeral ports are all in use is kept.
// Probe neither dials out nor checks that SourceAddr and Interface reach
// anywhere.
func (o Options) Probe() (Options, []error) {
	p := o
	var errs []error
	var clientErr [optCount]error
	for _, id := range clientProbe {
		if !o.set(id, &o.Client) {
			continue
		}
		if err := probeOpt(id, &o, &o.Client); err != nil {
			clientErr[id] = err
			errs = append(errs, o.optError(id, false, err))
			if !errors.Is(err, ErrClamped) {
				p.clear(id, &p.Client)
			}
		}
	}
	for _, id := range dialProbe {
		if !o.set(id, &o.Upstream) {
			continue
		}
		err := clientErr[id]
		tried := id.perSide() && o.set(id, &o.Client) && sameValue(id, &o.Client, &o.Upstream)
		if !tried {
			err = probeOpt(id, &o, &o.Upstream)
			if err != nil {
				errs = append(errs, o.optError(id, true, err))
			}
		}
		if err != nil && !errors.Is(err, ErrClamped) {
			p.clear(id, &p.Upstream)
		}
	}
	return p, errs
}

func concat(lists ...[]opt) []opt {
	var all []opt
	for _, l := range lists {
		all = append(all, l...)
	}
	return all
}
