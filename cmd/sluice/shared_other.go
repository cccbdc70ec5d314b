//go:build !unix

package main

import "net/netip"

// portTaken cannot tell here; listeners do not share ports off Unix.
func portTaken(netip.AddrPort) bool { return false }
