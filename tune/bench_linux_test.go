package tune

import (
	"context"
	"net"
	"testing"
)

// BenchmarkAccept dials, accepts and closes one loopback connection per op,
// through a listener from package net (which sets keepalive on every
// accepted socket) and one from Listen (which set it once on the listener).
func BenchmarkAccept(b *testing.B) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	nl, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer nl.Close()
	ls, err := (&Options{}).Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer closeListeners(ls)
	for _, bc := range []struct {
		name string
		l    *net.TCPListener
	}{{"net", nl.(*net.TCPListener)}, {"tune", ls[0]}} {
		b.Run(bc.name, func(b *testing.B) {
			o, addr := &Options{}, bc.l.Addr().String()
			for b.Loop() {
				c, err := net.Dial("tcp4", addr)
				if err != nil {
					b.Fatal(err)
				}
				a, err := bc.l.AcceptTCP()
				if err != nil {
					b.Fatal(err)
				}
				if err := o.ApplyClient(a); err != nil {
					b.Fatal(err)
				}
				a.Close()
				c.Close()
			}
		})
	}
}
