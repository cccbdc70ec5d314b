package tune

import (
	"errors"
	"net"
	"testing"
)

// TestAttachCPUSteering dials from a thread pinned to each CPU in turn and
// checks that the listener whose loop the CPU runs accepts: on loopback the
// SYN is processed on the sending CPU. "reversed" gives listener i the CPU
// at the other end of the set, as a cpuset that is not 0 to n-1 does: a
// steering by CPU number modulo n sends each connection elsewhere.
func TestAttachCPUSteering(t *testing.T) {
	t.Parallel()
	cpus, err := CPUs()
	if err != nil {
		t.Fatal(err)
	}
	if len(cpus) < 2 {
		t.Skipf("steering needs 2 CPUs, have %v", cpus)
	}
	n := len(cpus)
	identity := make([]int, n) // listener i on CPU i, for the nil mapping
	reversed := make([]int, n)
	for i := range n {
		identity[i] = i
		reversed[i] = cpus[n-1-i]
	}
	t.Run("nil", func(t *testing.T) { steerCase(t, cpus, nil, identity) })
	t.Run("reversed", func(t *testing.T) { steerCase(t, cpus, reversed, reversed) })
	l := listen(t, &Options{Listeners: 2})
	for _, bad := range [][]int{{0}, {0, -1}} {
		if err := AttachCPUSteering(l, bad); err == nil {
			t.Errorf("AttachCPUSteering(2 listeners, %v) succeeded", bad)
		}
	}
	if err := AttachCPUSteering(nil, nil); err == nil {
		t.Error("AttachCPUSteering(nil, nil) succeeded")
	}
}

// steerCase attaches steering with mapping and checks that connections
// dialled from each CPU in cpus go to the listener i with loopCPU[i] == cpu
// (or, for a CPU in no entry, cpu modulo the listener count).
func steerCase(t *testing.T, cpus, mapping, loopCPU []int) {
	const perCPU = 10
	n := len(loopCPU)
	ls := listen(t, &Options{Listeners: n})
	if err := AttachCPUSteering(ls, mapping); err != nil {
		t.Fatalf("AttachCPUSteering: %v", err)
	}
	accepted := make(chan accept, n*perCPU)
	for i, l := range ls {
		go acceptPorts(t, l, i, accepted)
	}
	for _, cpu := range cpus {
		want := cpu % n
		for i, c := range loopCPU {
			if c == cpu {
				want = i
			}
		}
		ports := make(chan int, perCPU)
		go dialFromCPU(t, cpu, ls[0].Addr().String(), perCPU, ports)
		dialled := map[int]bool{}
		for p := range ports {
			dialled[p] = true
		}
		for range len(dialled) {
			a := <-accepted
			if !dialled[a.port] {
				t.Fatalf("accepted port %d, not dialled from CPU %d", a.port, cpu)
			}
			if a.listener != want {
				t.Errorf("connection from CPU %d accepted by listener %d, want %d", cpu, a.listener, want)
			}
		}
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
