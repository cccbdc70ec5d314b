package tune_test

import (
	"context"
	"log/slog"
	"net"
	"time"

	"sluice/tune"
)

// The caller probes its options once, warns about each refused one, then
// runs one accept loop per listener.
func ExampleOptions_Listen() {
	o := tune.Options{
		Listeners: 4,
		Client:    tune.SockOpts{Congestion: "bbr", KeepAliveIdle: time.Minute},
		Upstream:  tune.SockOpts{NotSentLowatBytes: 128 << 10},
	}
	o, errs := o.Probe()
	for _, err := range errs {
		slog.Warn("option off", "err", err)
	}
	ls, err := o.Listen(context.Background(), "127.0.0.1:1080")
	if err != nil {
		slog.Error("listen", "err", err)
		return
	}
	dialer := o.Dialer()
	for _, l := range ls {
		go acceptLoop(l, &o, dialer)
	}
}

func acceptLoop(l *net.TCPListener, o *tune.Options, dialer *net.Dialer) {
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			return // net.ErrClosed once the owner closes l
		}
		if err := o.ApplyClient(c); err != nil {
			c.Close()
			continue
		}
		go serveConn(c, o, dialer)
	}
}

func serveConn(c *net.TCPConn, o *tune.Options, dialer *net.Dialer) {
	defer c.Close()
	up, err := dialer.Dial("tcp", "192.0.2.1:80") // the target from the handshake
	if err != nil {
		return
	}
	defer up.Close()
	if o.ApplyUpstream(up.(*net.TCPConn)) != nil {
		return
	}
	// relay c <-> up
}
