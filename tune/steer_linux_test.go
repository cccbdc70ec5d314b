package tune

import (
	"errors"
	"net"
	"testing"
)

// TestAttachCPUSteering dials from a thread pinned to each CPU in turn and
// checks that the listener at index cpu % n accepts: on loopback the SYN is
// processed on the sending CPU.
func TestAttachCPUSteering(t *testing.T) {
	t.Parallel()
	cpus, err := CPUs()
	if err != nil {
		t.Fatal(err)
	}
	if len(cpus) < 2 {
		t.Skipf("steering needs 2 CPUs, have %v", cpus)
	}
	const perCPU = 10
	n := len(cpus)
	ls := listen(t, &Options{Listeners: n})
	if err := AttachCPUSteering(ls); err != nil {
		t.Fatalf("AttachCPUSteering: %v", err)
	}
	accepted := make(chan accept, n*perCPU)
	for i, l := range ls {
		go acceptPorts(t, l, i, accepted)
	}
	for _, cpu := range cpus {
		ports := make(chan int, perCPU)
		go dialFromCPU(t, cpu, ls[0].Addr().String(), perCPU, ports)
		want := map[int]bool{}
		for p := range ports {
			want[p] = true
		}
		for range len(want) {
			a := <-accepted
			if !want[a.port] {
				t.Fatalf("accepted port %d, not dialled from CPU %d", a.port, cpu)
			}
			if a.listener != cpu%n {
				t.Errorf("connection from CPU %d accepted by listener %d, want %d", cpu, a.listener, cpu%n)
			}
		}
	}
	if err := AttachCPUSteering(nil); err == nil {
		t.Error("AttachCPUSteering(nil) succeeded")
	}
}

type accept struct{ listener, port int }

// acceptPorts reports the client port of each connection l accepts.
func acceptPorts(t *testing.T, l *net.TCPListener, i int, accepted chan<- accept) {
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("accept on listener %d: %v", i, err)
			}
			return
		}
		accepted <- accept{i, c.RemoteAddr().(*net.TCPAddr).Port}
		c.Close()
	}
}

// dialFromCPU pins its thread to cpu, dials addr k times and sends each
// connection's local port once accepted.
func dialFromCPU(t *testing.T, cpu int, addr string, k int, ports chan<- int) {
	defer close(ports)
	if err := PinThread(cpu); err != nil {
		t.Errorf("PinThread(%d): %v", cpu, err)
		return
	}
	d := net.Dialer{Timeout: safety}
	for range k {
		c, err := d.Dial("tcp4", addr)
		if err != nil {
			t.Errorf("dial: %v", err)
			return
		}
		ports <- c.LocalAddr().(*net.TCPAddr).Port
		c.Close()
	}
}
