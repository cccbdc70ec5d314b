package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestTputUpShortCount: an upload whose sink received fewer bytes than
// were written (a relay that lost some) fails with a data error, and its
// figure is what the sink received, as StreamResult.Bytes says, not what
// was written. The build before counted the written bytes, so that the
// lost ones still made Gbit/s and CPU per GiB.
func TestTputUpShortCount(t *testing.T) {
	t.Parallel()
	const lost = 1000
	counted := make(chan uint64, 1)
	sink := serveEach(t, func(c net.Conn) {
		n, err := io.Copy(io.Discard, c)
		if err != nil {
			t.Errorf("sink: %v", err)
			return
		}
		got := uint64(n) - lost
		counted <- got
		c.Write(binary.BigEndian.AppendUint64(nil, got))
	})
	r, err := Tput(context.Background(), TputOptions{Client: Client{Duration: 50 * time.Millisecond}, Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	got := <-counted
	if r.Errors.Data != 1 || len(r.PerStream) != 1 {
		t.Fatalf("errors %+v, %d streams; want one stream with a data error", r.Errors, len(r.PerStream))
	}
	if r.PerStream[0].Bytes != int64(got) || r.Bytes != int64(got) {
		t.Errorf("stream bytes %d, total %d; want the sink's count %d", r.PerStream[0].Bytes, r.Bytes, got)
	}
}

// TestTputBadSourceClosesUploads: a --dir both run whose source address is
// unusable ends with an error before the load and leaves no stream open.
// The build before connected the uploads first, then returned on the
// source's address with their connections open for good. After Tput, the
// test connects once more as a marker: every connection accepted before
// the marker is one of Tput's, and must read EOF at once.
func TestTputBadSourceClosesUploads(t *testing.T) {
	t.Parallel()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Tput(context.Background(), TputOptions{Client: Client{Duration: 50 * time.Millisecond},
		Dir: Both, Streams: 2, Sink: ln.Addr().String(), Source: "no-port"})
	var ae *net.AddrError
	if !errors.As(err, &ae) {
		t.Fatalf("Tput with a source address without a port: %v; want the address's error", err)
	}
	marker, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer marker.Close()
	ln.SetDeadline(time.Now().Add(5 * time.Second)) // a safety net: the marker is queued
	for {
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if c.RemoteAddr().String() == marker.LocalAddr().String() {
			c.Close()
			return
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second)) // a safety net: a closed one reads EOF at once
		_, err = io.Copy(io.Discard, c)
		c.Close()
		if err != nil {
			t.Fatalf("an upload connection Tput made: %v; want it closed", err)
		}
		t.Logf("an upload connection Tput made and closed")
	}
}
