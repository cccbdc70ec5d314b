package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestIdleFDsUnknown: where the relay's descriptors cannot be counted
// (SampleProc's FDs nil: another user's relay), an idle run still reports
// RSS per session, and fds per session as unknown: absent from the JSON,
// "unknown" in the table. Not parallel: it replaces sampleProc.
func TestIdleFDsUnknown(t *testing.T) {
	calls := 0
	sampleProc = func(int) (ProcSample, error) {
		calls++
		return ProcSample{RSSBytes: int64(calls) << 20, Procs: 1}, nil
	}
	t.Cleanup(func() { sampleProc = SampleProc })
	r, err := Idle(context.Background(), IdleOptions{Client: Client{PID: 1},
		Target: startTarget(t, Echo, 0), Sessions: 2, Openers: 2, Hold: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Open != 2 || r.FDsPerSession != nil || r.RSSPerSession == nil || *r.RSSPerSession != 1<<19 {
		t.Fatalf("%d open, fds per session %v, RSS per session %v; want 2, unknown, %d", r.Open, r.FDsPerSession, r.RSSPerSession, 1<<19)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(b); strings.Contains(s, "fds_per_session") || !strings.Contains(s, `"fds":null`) {
		t.Errorf("JSON %s: want no fds_per_session and fds null", s)
	}
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "unknown") {
		t.Errorf("table:\n%s\nwant fds unknown", text.String())
	}
}

// TestIdleZeroGrowthWritten: an idle run whose relay's RSS and descriptors
// did not move writes both figures as 0: peers.sh takes a missing figure
// for no measurement and leaves the run out of the median, which a 0 RSS
// per session was (omitted as the float's zero value), biasing the median
// up. Not parallel: it replaces sampleProc.
func TestIdleZeroGrowthWritten(t *testing.T) {
	fds := 7
	sampleProc = func(int) (ProcSample, error) {
		return ProcSample{RSSBytes: 1 << 20, FDs: &fds, Procs: 1}, nil
	}
	t.Cleanup(func() { sampleProc = SampleProc })
	r, err := Idle(context.Background(), IdleOptions{Client: Client{PID: 1},
		Target: startTarget(t, Echo, 0), Sessions: 2, Openers: 2, Hold: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"rss_bytes_per_session":0`, `"fds_per_session":0`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON %s: want %s", b, want)
		}
	}
}
