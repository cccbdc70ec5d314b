//go:build !unix

package main

import "net/netip"

// portShared cannot tell here; listeners do not share ports off Unix.
func portShared(netip.AddrPort) bool { return false }
