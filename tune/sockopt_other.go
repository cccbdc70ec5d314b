//go:build !linux

package tune

import "errors"

// keepAliveBySockopt: outside Linux package net sets keepalive.
const keepAliveBySockopt = false

// setOpt refuses every option but Nagle, which ApplyClient and ApplyUpstream
// set through package net.
func setOpt(_ int, id opt, _ *Options, _ *SockOpts) error {
	if id == optNagle {
		return nil
	}
	return errors.ErrUnsupported
}

func probeOpt(id opt, o *Options, s *SockOpts) error {
	return setOpt(-1, id, o, s)
}

// setNoDelay does nothing: package net sets TCP_NODELAY on each accept.
func setNoDelay(int) error { return nil }

// bindNoPort does nothing: IP_BIND_ADDRESS_NO_PORT is Linux's.
func bindNoPort(int) {}
