package bench

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

func TestUDPDirect(t *testing.T) {
	t.Parallel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeUDPEcho(ctx, pc) }()
	res, err := UDP(context.Background(), UDPOptions{
		Client: Client{Duration: 300 * time.Millisecond},
		Target: pc.LocalAddr().String(), SizeBytes: 100, Window: 8,
	})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("ServeUDPEcho: %v", err)
	}
	if res.Errors.Total() != 0 || res.Received == 0 || res.Received > res.Sent || res.Sent-res.Received > 8 {
		t.Fatalf("result %+v: want echoes, no errors, at most a window lost", res)
	}
}

func TestUDPHeaderLen(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want int
	}{
		{[]byte{0, 0, 0, 1, 127, 0, 0, 1, 0, 80, 'x'}, 10},
		{append([]byte{0, 0, 0, 4}, make([]byte, 18)...), 22},
		{[]byte{0, 0, 0, 3, 1, 'a', 0, 80}, 8},
		{[]byte{0, 0, 1, 1, 127, 0, 0, 1, 0, 80}, -1}, // fragment
		{[]byte{0, 0, 0, 1, 127}, -1},                 // short
		{[]byte{0, 0, 0, 9, 0, 0, 0, 0, 0, 0}, -1},    // unknown ATYP
	} {
		if got := udpHeaderLen(tc.in); got != tc.want {
			t.Errorf("udpHeaderLen(%x) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// TestUDPNoEcho: a run that sent datagrams and had none back (a target that
// never answers) has an error, ErrNoEcho: its 0 datagrams/s and 100 % loss
// measured nothing. Before, it had no error, and sluice-bench exited 0.
func TestUDPNoEcho(t *testing.T) {
	t.Parallel()
	silent, err := net.ListenPacket("udp", "127.0.0.1:0") // never read
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	res, err := UDP(context.Background(), UDPOptions{
		Client: Client{Duration: 50 * time.Millisecond},
		Target: silent.LocalAddr().String(), SizeBytes: 100, Window: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent == 0 || res.Received != 0 || res.Lost != res.Sent {
		t.Fatalf("sent %d, received %d, lost %d; want all sent lost", res.Sent, res.Received, res.Lost)
	}
	if res.Errors.Total() != 1 || res.Errors.IO != 1 || len(res.Errors.Samples) != 1 ||
		!strings.HasPrefix(res.Errors.Samples[0], ErrNoEcho.Error()) {
		t.Errorf("errors %+v; want one, %q", res.Errors, ErrNoEcho)
	}
}
