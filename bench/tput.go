package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Direction is which way a throughput stream moves data.
type Direction int

// The directions: Up writes to a sink, Down reads from a source, Both runs
// one of each per stream.
const (
	Up Direction = iota + 1
	Down
	Both
)

var directionNames = map[Direction]string{Up: "up", Down: "down", Both: "both"}

// String returns the direction's name as the command line spells it.
func (d Direction) String() string {
	if s, ok := directionNames[d]; ok {
		return s
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// ParseDirection returns the direction named s ("up", "down" or "both").
func ParseDirection(s string) (Direction, error) {
	for d, name := range directionNames {
		if name == s {
			return d, nil
		}
	}
	return 0, fmt.Errorf("bench: unknown direction %q", s)
}

// TputOptions configures a throughput run.
type TputOptions struct {
	Client
	// Dir is the direction of the streams; 0 means Up.
	Dir Direction
	// Sink is the sink target's host:port, used by Up and Both.
	Sink string
	// Source is the source target's host:port, used by Down and Both.
	Source string
	// Streams is the number of parallel streams per direction; 0 means 1.
	Streams int
	// Seed must match the source's seed.
	Seed uint64
	// Verify is how much of the downloaded data is compared with the
	// pattern; VerifyNone also skips the sink's count after an upload, for
	// relays that do not forward a half-close.
	Verify Verify
	// BufBytes is the size of each write and read; 0 means 256 KiB.
	BufBytes int
	// CountTimeout bounds the wait for the sink's byte count after an
	// upload, and for each stream's first transfer (a stream that moves no
	// byte in it has an error); 0 means 5 s.
	CountTimeout time.Duration
}

func (o *TputOptions) dir() Direction {
	if o.Dir == 0 {
		return Up
	}
	return o.Dir
}

func (o *TputOptions) streams() int { return max(o.Streams, 1) }

func (o *TputOptions) bufBytes() int {
	if o.BufBytes > 0 {
		return o.BufBytes
	}
	return 256 << 10
}

func (o *TputOptions) countTimeout() time.Duration {
	if o.CountTimeout > 0 {
		return o.CountTimeout
	}
	return 5 * time.Second
}

// StreamResult is one stream's share of a throughput run.
type StreamResult struct {
	// Dir is "up" or "down".
	Dir string `json:"dir"`
	// Bytes is what the stream moved: for up the sink's count of what it
	// received, which must equal what was written (where it does not, an
	// error, the smaller of the two; with VerifyNone, what was written),
	// for down what was read (and verified).
	Bytes int64 `json:"bytes"`
	// Gbps is Bytes over its direction's wall time (TputResult's UpGbps
	// and DownGbps), in Gbit/s.
	Gbps float64 `json:"gbps"`
	// Error is why the stream failed, if it did.
	Error string `json:"error,omitempty"`
}

// TputResult is the outcome of a throughput run.
type TputResult struct {
	// Mode is "tput".
	Mode string `json:"mode"`
	// Proxy is the relay's address, empty for direct runs.
	Proxy string `json:"proxy,omitempty"`
	// Dir is the direction asked for.
	Dir string `json:"dir"`
	// Streams is the number of streams per direction.
	Streams int `json:"streams"`
	// Verify is the verification level.
	Verify string `json:"verify"`
	// Seconds is the wall time of the transfer, connection setup excluded:
	// from the start until the last stream's bytes were in, for an upload
	// until the sink's count came back after the half-close (the sink
	// sends it on EOF, when it has read every byte; with VerifyNone, until
	// the writes stopped), for a download until its last read ended. The
	// CPU figures are over this time too.
	Seconds float64 `json:"seconds"`
	// Bytes is the sum over all streams.
	Bytes int64 `json:"bytes"`
	// Gbps is the aggregate rate in Gbit/s, UpGbps plus DownGbps.
	Gbps float64 `json:"gbps"`
	// UpGbps and DownGbps split Gbps by direction, each the direction's
	// bytes over its own time: up until the last sink count came back,
	// down until the last read ended.
	UpGbps   float64 `json:"up_gbps"`
	DownGbps float64 `json:"down_gbps"`
	// UpCounted says what an upload's bytes are, for runs with uploads:
	// "delivered", the sink's count, over the time until it came back; or
	// "written" (VerifyNone, no sink count): what the local kernel took by
	// the end of the duration, over the time until then, bytes still in
	// buffers on the way to the sink (the client's send buffer, the
	// relay's, the sink's receive buffer) included, so that the figure is
	// above the delivered rate by what those buffers hold.
	UpCounted string `json:"up_counted,omitempty"`
	// PerStream lists every stream that connected.
	PerStream []StreamResult `json:"per_stream"`
	// CPU is the relay's processor time, when a PID was given.
	CPU *CPU `json:"cpu,omitempty"`
	// ClientCPU is the load generator's own processor time (this process).
	ClientCPU *CPU `json:"client_cpu,omitempty"`
	// MachineCPU is the busy time of every CPU over the run (Linux): relay,
	// load generator, targets, anything else running, and the kernel's
	// interrupt work, which no process's figure holds whole.
	MachineCPU *CPU `json:"machine_cpu,omitempty"`
	// Errors counts the failures.
	Errors Errors `json:"errors"`
}

// stream is one connected throughput stream.
type stream struct {
	dir   Direction
	c     *net.TCPConn
	bytes counter
	end   time.Time // when its transfer stopped
	err   error
}

// Tput runs a throughput test: it connects every stream, starts them
// together, and stops them after the duration or when ctx ends. The
// returned error is for unusable options or a failed process sample;
// failures of the load itself are counted in the result.
func Tput(ctx context.Context, o TputOptions) (*TputResult, error) {
	dirs, err := o.directions()
	if err != nil {
		return nil, err
	}
	res := &TputResult{Mode: "tput", Proxy: o.Proxy.Addr, Dir: o.dir().String(),
		Streams: o.streams(), Verify: o.Verify.String()}
	if _, ok := dirs[Up]; ok {
		res.UpCounted = "delivered"
		if o.Verify == VerifyNone {
			res.UpCounted = "written"
		}
	}
	streams, err := o.connect(ctx, dirs, &res.Errors)
	if err != nil {
		return nil, err
	}
	defer closeStreams(streams)
	smp := sampler{o.PID}
	before, err := smp.sample()
	if err != nil {
		return nil, err
	}
	clock, machine := startCPUClock(selfCPU), startCPUClock(machineCPU)
	start := time.Now()
	end := start.Add(o.duration())
	var pat *pattern
	if o.dir() != Up {
		pat = newPattern(o.Seed)
	}
	done := make(chan struct{})
	shown := progress(o.Progress, o.duration(), done, func(el time.Duration) string {
		var n int64
		for _, s := range streams {
			n += s.bytes.n.Load()
		}
		return fmt.Sprintf("tput %4.0fs %8.2f Gbit/s", el.Seconds(), gbps(n, el))
	})
	var wg sync.WaitGroup
	for _, s := range streams {
		wg.Add(1)
		go o.runStream(ctx, &wg, s, end, pat)
	}
	wg.Wait()
	res.summarize(streams, start)
	elapsed := time.Duration(res.Seconds * float64(time.Second))
	// The load generator's and the machine's CPU end with the load, before
	// the relay's sample, whose scan of /proc is not the load's work (the
	// sample before the load is outside their window too).
	res.ClientCPU, res.MachineCPU = clock.stop(elapsed), machine.stop(elapsed)
	close(done)
	<-shown
	after, err := smp.sample()
	if err != nil {
		return nil, err
	}
	if o.PID != 0 {
		res.CPU = cpuBetween(o.PID, before, after, elapsed)
	}
	for _, c := range []*CPU{res.CPU, res.ClientCPU, res.MachineCPU} {
		if c != nil && res.Bytes > 0 {
			c.PerGiB = c.Seconds / (float64(res.Bytes) / (1 << 30))
		}
	}
	return res, nil
}

// directions returns the target of each direction the run uses.
func (o *TputOptions) directions() (map[Direction]string, error) {
	dirs := make(map[Direction]string)
	switch o.dir() {
	case Up:
		dirs[Up] = o.Sink
	case Down:
		dirs[Down] = o.Source
	case Both:
		dirs[Up], dirs[Down] = o.Sink, o.Source
	default:
		return nil, fmt.Errorf("bench: tput: %v", o.Dir)
	}
	for d, addr := range dirs {
		if addr == "" {
			return nil, fmt.Errorf("bench: tput %v: no target address", d)
		}
	}
	return dirs, nil
}

// connect dials every stream concurrently; failures are counted in errs and
// leave the stream out, but for connects that ctx's end cut short (SIGINT
// during the setup), which leave it out uncounted. Bad addresses end the
// run before any stream connects.
func (o *TputOptions) connect(ctx context.Context, dirs map[Direction]string, errs *Errors) ([]*stream, error) {
	dialers := make(map[Direction]*Dialer, len(dirs))
	for d, addr := range dirs {
		dl, err := NewDialer(o.Proxy, addr)
		if err != nil {
			return nil, err
		}
		dialers[d] = dl
	}
	var all []*stream
	for _, d := range []Direction{Up, Down} {
		dl, ok := dialers[d]
		if !ok {
			continue
		}
		for range o.streams() {
			all = append(all, &stream{dir: d})
		}
		var wg sync.WaitGroup
		for _, s := range all[len(all)-o.streams():] {
			wg.Add(1)
			go dialStream(ctx, &wg, dl, s)
		}
		wg.Wait()
	}
	ok := all[:0]
	for _, s := range all {
		if s.err != nil {
			if !stopped(ctx, s.err) {
				errs.add(s.err)
			}
			continue
		}
		ok = append(ok, s)
	}
	return ok, nil
}

// dialStream connects one stream.
func dialStream(ctx context.Context, wg *sync.WaitGroup, d *Dialer, s *stream) {
	defer wg.Done()
	s.c, s.err = d.Dial(ctx)
}

func closeStreams(streams []*stream) {
	for _, s := range streams {
		s.c.Close()
	}
}

// runStream moves data on one stream until end or ctx; it records the time
// the transfer stopped and any failure in s.
func (o *TputOptions) runStream(ctx context.Context, wg *sync.WaitGroup, s *stream, end time.Time, pat *pattern) {
	defer wg.Done()
	buf := make([]byte, o.bufBytes())
	if s.dir == Up {
		s.err = o.upload(ctx, s, buf, end)
	} else {
		s.err = o.download(ctx, s, buf, end, pat)
	}
}

// upload writes until the deadline, then half-closes and checks the sink's
// count of what it received against what was written. Its first buffer
// goes whatever the clock says (within countTimeout, else an error): a
// stream that a busy machine starts late still shows it moves bytes.
//
// The stream's transfer ends when the count comes back, not when the
// writes stop: what the kernel accepted by then may still be in the
// client's send buffer, the relay's buffers and the sink's receive buffer,
// and is delivered only later; the sink answers after its EOF, when every
// byte is in. With VerifyNone there is no count, and the transfer ends
// with the writes.
func (o *TputOptions) upload(ctx context.Context, s *stream, buf []byte, end time.Time) error {
	release := watch(ctx, s.c)
	err := s.c.SetWriteDeadline(time.Now().Add(o.countTimeout()))
	var sent int64
	// Invariant: sent is what the kernel accepted; the deadline ends the loop.
	for err == nil {
		var n int
		n, err = s.c.Write(buf)
		sent += int64(n)
		s.bytes.n.Store(sent)
		if err == nil && sent == int64(n) {
			err = s.c.SetWriteDeadline(end) // the first buffer is out
		}
	}
	s.end = time.Now()
	release()
	if !isTimeout(err) {
		return fmt.Errorf("bench: tput up: %w", err)
	}
	if sent == 0 && ctx.Err() == nil {
		return fmt.Errorf("bench: tput up: not one byte written in %v", o.countTimeout())
	}
	if o.Verify == VerifyNone {
		return nil
	}
	if err := s.c.SetDeadline(time.Now().Add(o.countTimeout())); err != nil {
		return err
	}
	if err := s.c.CloseWrite(); err != nil {
		return fmt.Errorf("bench: tput up: half-close: %w", err)
	}
	var b [8]byte
	if _, err := io.ReadFull(s.c, b[:]); err != nil {
		return fmt.Errorf("bench: tput up: reading the sink's count (does the relay forward half-close?): %w", err)
	}
	s.end = time.Now() // the sink has read everything
	if got := binary.BigEndian.Uint64(b[:]); got != uint64(sent) {
		// The figure is what was delivered, not what was written; a count
		// above it (bytes the relay made up, or no count at all) is not.
		s.bytes.n.Store(int64(min(got, uint64(sent))))
		return fmt.Errorf("%w: tput up: sink received %d bytes, %d were sent", ErrMismatch, got, sent)
	}
	return nil
}

// download reads until the deadline, comparing the data with the pattern.
// Its first read waits whatever the clock says (within countTimeout, else
// an error), as upload's first write does.
func (o *TputOptions) download(ctx context.Context, s *stream, buf []byte, end time.Time, pat *pattern) error {
	release := watch(ctx, s.c)
	defer release()
	err := s.c.SetReadDeadline(time.Now().Add(o.countTimeout()))
	var got uint64
	// Invariant: got bytes were read and matched the pattern from offset 0.
	for err == nil {
		var n int
		n, err = s.c.Read(buf)
		if !pat.check(buf[:n], got, o.Verify) {
			s.end = time.Now()
			return fmt.Errorf("%w: tput down: bytes %d..%d differ from the source pattern", ErrMismatch, got, got+uint64(n))
		}
		if err == nil && got == 0 && n > 0 {
			err = s.c.SetReadDeadline(end) // the first bytes are in
		}
		got += uint64(n)
		s.bytes.n.Store(int64(got))
	}
	s.end = time.Now()
	if !isTimeout(err) {
		return fmt.Errorf("bench: tput down: %w", err)
	}
	if got == 0 && ctx.Err() == nil {
		return fmt.Errorf("bench: tput down: not one byte read in %v", o.countTimeout())
	}
	return nil
}

// summarize fills the totals from the streams: each direction's bytes
// over the time from start until its last stream ended.
func (r *TputResult) summarize(streams []*stream, start time.Time) {
	last := map[Direction]time.Time{}
	for _, s := range streams {
		if s.end.After(last[s.dir]) {
			last[s.dir] = s.end
		}
	}
	elapsed := map[Direction]time.Duration{}
	for d, t := range last {
		elapsed[d] = max(t.Sub(start), 0)
	}
	r.Seconds = max(elapsed[Up], elapsed[Down]).Seconds()
	var up, down int64
	for _, s := range streams {
		n := s.bytes.n.Load()
		sr := StreamResult{Dir: s.dir.String(), Bytes: n, Gbps: gbps(n, elapsed[s.dir])}
		if s.err != nil {
			sr.Error = s.err.Error()
			r.Errors.add(s.err)
		}
		r.PerStream = append(r.PerStream, sr)
		if s.dir == Up {
			up += n
		} else {
			down += n
		}
	}
	r.Bytes = up + down
	r.UpGbps, r.DownGbps = gbps(up, elapsed[Up]), gbps(down, elapsed[Down])
	r.Gbps = r.UpGbps + r.DownGbps
}
