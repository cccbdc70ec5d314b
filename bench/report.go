package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// WriteText writes the result as a readable table.
func (r *TputResult) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "tput %s via %s, %d stream(s), verify %s, %.2f s\n", r.Dir, via(r.Proxy), r.Streams, r.Verify, r.Seconds)
	fmt.Fprintln(tw, "stream\tdir\tbytes\tGbit/s\tstatus\t")
	for i, s := range r.PerStream {
		status := "ok"
		if s.Error != "" {
			status = "failed"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%.2f\t%s\t\n", i, s.Dir, s.Bytes, s.Gbps, status)
	}
	fmt.Fprintf(tw, "total\t%s\t%d\t%.2f\t\t\n", r.Dir, r.Bytes, r.Gbps)
	if r.UpCounted == "written" {
		fmt.Fprintln(tw, "(up: bytes written, not delivered: no sink count with --verify none)")
	}
	if r.CPU != nil {
		fmt.Fprintf(tw, "relay cpu\t%.2f s\t%.2f cores\t%.3f s/GiB\t\n", r.CPU.Seconds, r.CPU.Cores, r.CPU.PerGiB)
	}
	if c := r.ClientCPU; c != nil {
		fmt.Fprintf(tw, "client cpu\t%.2f s\t%.2f cores\t%.3f s/GiB\t\n", c.Seconds, c.Cores, c.PerGiB)
	}
	if c := r.MachineCPU; c != nil {
		fmt.Fprintf(tw, "machine cpu\t%.2f s\t%.2f cores\t%.3f s/GiB\t\n", c.Seconds, c.Cores, c.PerGiB)
	}
	return flushWithErrors(tw, w, &r.Errors)
}

// WriteText writes the result as a readable table.
func (r *RRResult) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "rr via %s, %d workers, %d-byte echo x %d per connection, %.2f s\n", via(r.Proxy), r.Workers, r.SizeBytes, r.Exchanges, r.Seconds)
	fmt.Fprintf(tw, "conns\t%d\t\nconn/s\t%.0f\t\n", r.Conns, r.ConnsPerSec)
	if r.Exchanges > 1 {
		fmt.Fprintf(tw, "exchanges/s\t%.0f\t\n", r.ExchangesPerSec)
	}
	l := r.Latency
	fmt.Fprintln(tw, "latency µs\tmin\tp50\tp90\tp99\tp99.9\tmax\t")
	fmt.Fprintf(tw, "\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t\n", l.Min, l.P50, l.P90, l.P99, l.P999, l.Max)
	if r.CPU != nil {
		fmt.Fprintf(tw, "relay cpu\t%.2f s\t%.2f cores\t%.3f s/1k conns\t\n", r.CPU.Seconds, r.CPU.Cores, r.CPU.Per1kConns)
	}
	if c := r.ClientCPU; c != nil {
		fmt.Fprintf(tw, "client cpu\t%.2f s\t%.2f cores\t%.3f s/1k conns\t\n", c.Seconds, c.Cores, c.Per1kConns)
	}
	if c := r.MachineCPU; c != nil {
		fmt.Fprintf(tw, "machine cpu\t%.2f s\t%.2f cores\t%.3f s/1k conns\t\n", c.Seconds, c.Cores, c.Per1kConns)
	}
	return flushWithErrors(tw, w, &r.Errors)
}

// WriteText writes the result as a readable table.
func (r *IdleResult) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "idle via %s, %d/%d sessions open in %.2f s, held %.2f s, %d alive after\n",
		via(r.Proxy), r.Open, r.Sessions, r.OpenSeconds, r.HoldSeconds, r.Alive)
	if r.Before != nil && r.Held != nil {
		fmt.Fprintln(tw, "relay\tbefore\theld\tper session\t")
		rss := 0.0 // no session open
		if r.RSSPerSession != nil {
			rss = *r.RSSPerSession
		}
		fmt.Fprintf(tw, "RSS KiB\t%d\t%d\t%.1f\t\n", r.Before.RSSBytes>>10, r.Held.RSSBytes>>10, rss/1024)
		if r.Before.FDs != nil && r.Held.FDs != nil {
			per := 0.0 // no session open
			if r.FDsPerSession != nil {
				per = *r.FDsPerSession
			}
			fmt.Fprintf(tw, "fds\t%d\t%d\t%.2f\t\n", *r.Before.FDs, *r.Held.FDs, per)
		} else {
			fmt.Fprintln(tw, "fds\tunknown\tunknown\tunknown\t(/proc/PID/fd unreadable)")
		}
		fmt.Fprintf(tw, "processes\t%d\t%d\t\t\n", r.Before.Procs, r.Held.Procs)
	}
	if r.CPU != nil {
		fmt.Fprintf(tw, "relay cpu\t%.2f s\t\t\t\n", r.CPU.Seconds)
	}
	return flushWithErrors(tw, w, &r.Errors)
}

func via(proxy string) string {
	if proxy == "" {
		return "direct"
	}
	return "socks5 " + proxy
}

// flushWithErrors flushes the table, then writes the error counts and samples.
func flushWithErrors(tw *tabwriter.Writer, w io.Writer, e *Errors) error {
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "errors: %d (connect %d, socks %d, data %d, io %d)\n",
		e.Total(), e.Connect, e.Socks, e.Data, e.IO)
	for _, s := range e.Samples {
		if err == nil {
			_, err = fmt.Fprintf(w, "  %s\n", s)
		}
	}
	return err
}
