// Package bench is a load generator for SOCKS5 relays: target servers that
// sink, source or echo bytes, and clients that measure throughput (Tput),
// connection rate and latency (RR), the cost of idle sessions (Idle) and
// datagrams through a UDP association (UDP), through a relay or directly.
//
// The relay is a black box reached by address. The clients speak SOCKS5
// with their own lean client (Dialer): the greeting, any RFC 1929
// credentials and the CONNECT request go out in one write, and exactly the
// reply frames are read back, so that the client is never the bottleneck it
// measures. Every run checks its data (sink byte counts, the source's seeded
// pattern, echo content), so each load run is an interop test as well;
// failures are counted in the result, never hidden. With a PID, runs also
// sample the relay's CPU time, memory and descriptors from /proc.
//
// Bench does not start, configure or stop relays (the scripts beside it do)
// and does not read flags or the environment (cmd/sluice-bench does). UDP
// ASSOCIATE load is a fourth client, UDP, beside Tput, RR and Idle.
//
// A run against a sink already serving on 127.0.0.1:5201:
//
//	o := bench.TputOptions{Client: bench.Client{Proxy: bench.Proxy{Addr: "127.0.0.1:1080"}}, Sink: "127.0.0.1:5201"}
//	res, err := bench.Tput(ctx, o)
//	if err == nil { res.WriteText(os.Stdout) }
package bench
