package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// needClient returns the path of an external client program, or skips the
// test when it is absent. With SLUICE_REQUIRE_CLIENTS=1 (set by CI, which
// installs the clients) a missing client fails the test instead.
func needClient(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("SLUICE_REQUIRE_CLIENTS") == "1" {
			t.Fatalf("%s not found and SLUICE_REQUIRE_CLIENTS=1: %v", name, err)
		}
		t.Skipf("%s not installed (CI installs it; set SLUICE_REQUIRE_CLIENTS=1 to require it): %v", name, err)
	}
	return p
}

// httpServer serves "hello from NETWORK" on addr.
func httpServer(t *testing.T, network, addr string) string {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s %s", network, r.URL.Path)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// TestCurl drives sluice with curl, the way users try a SOCKS proxy first.
func TestCurl(t *testing.T) {
	t.Parallel()
	curl := needClient(t, "curl")
	web4 := httpServer(t, "tcp4", "127.0.0.1:0")
	web6 := httpServer(t, "tcp6", "[::1]:0")
	_, port4, _ := net.SplitHostPort(web4)
	noAuth, _ := startSluice(t)
	withAuth, _ := startSluice(t, "--users", writeUsers(t, "alice:s3cret\n"))
	cases := []struct {
		name    string
		args    []string
		wantOut string // "" = want curl to fail
	}{
		{"socks5-ipv4", []string{"--socks5", noAuth, "http://" + web4 + "/a"}, "hello from tcp4 /a"},
		{"socks5-hostname", []string{"--socks5-hostname", noAuth, "http://localhost:" + port4 + "/b"}, "hello from tcp4 /b"},
		{"socks5-ipv6-literal", []string{"--socks5", noAuth, "http://" + web6 + "/c"}, "hello from tcp6 /c"},
		{"socks5-hostname-ipv6-literal", []string{"--socks5-hostname", noAuth, "http://" + web6 + "/d"}, "hello from tcp6 /d"},
		{"proxy-user", []string{"--socks5-hostname", withAuth, "--proxy-user", "alice:s3cret", "http://localhost:" + port4 + "/e"}, "hello from tcp4 /e"},
		{"proxy-user-wrong", []string{"--socks5-hostname", withAuth, "--proxy-user", "alice:nope", "http://localhost:" + port4 + "/f"}, ""},
		{"no-proxy-user", []string{"--socks5-hostname", withAuth, "http://localhost:" + port4 + "/g"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			args := append([]string{"-sS", "--noproxy", "", "--max-time", "10"}, tc.args...)
			out, err := exec.CommandContext(ctx, curl, args...).CombinedOutput()
			if tc.wantOut == "" {
				if err == nil {
					t.Fatalf("curl %s succeeded, want a SOCKS failure; output %q", strings.Join(args, " "), out)
				}
				return
			}
			if err != nil || string(out) != tc.wantOut {
				t.Fatalf("curl %s: %v, output %q; want %q", strings.Join(args, " "), err, out, tc.wantOut)
			}
		})
	}
}
