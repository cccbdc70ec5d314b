package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
)

// TestRefusedOptionNamesFlagTyped: a value refused on one side is named by
// the flag that set it. With --congestion nosuchcc --upstream-congestion
// reno, the client side's nosuchcc came from --congestion: the warning
// names --congestion, not --client-congestion, which was never typed.
func TestRefusedOptionNamesFlagTyped(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--congestion", "nosuchcc", "--upstream-congestion", "reno"}, "--congestion (TCP_CONGESTION)"},
		{[]string{"--congestion", "reno", "--upstream-congestion", "nosuchcc"}, "--upstream-congestion (TCP_CONGESTION)"},
		{[]string{"--client-congestion", "nosuchcc"}, "--client-congestion (TCP_CONGESTION)"},
	} {
		cfg, err := parseFlags(append([]string{"--listeners", "1", "--listen", "127.0.0.1:0"}, tc.args...), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		var log bytes.Buffer
		inst, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelWarn})))
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		inst.shutdown(0)
		var warnings []string
		for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
			if strings.Contains(line, "TCP_CONGESTION") {
				warnings = append(warnings, line)
			}
		}
		if len(warnings) != 1 || !strings.Contains(warnings[0], tc.want) {
			t.Errorf("%q: warnings %q, want one naming %s", tc.args, warnings, tc.want)
		}
	}
}
