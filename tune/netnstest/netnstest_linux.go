//go:build linux

// Package netnstest builds network namespaces for tests that need more than
// loopback (a veth pair, link-local addresses, a link taken down): root and
// iproute2 are needed, and a test skips without them, or fails with
// SLUICE_REQUIRE_NETNS=1, as CI sets.
package netnstest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Need skips (or, with SLUICE_REQUIRE_NETNS=1, fails) a test that needs
// root and iproute2 to build network namespaces.
func Need(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root to create network namespaces"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "needs ip (iproute2) to create network namespaces"
	}
	if why == "" {
		return
	}
	if os.Getenv("SLUICE_REQUIRE_NETNS") == "1" {
		t.Fatal(why + " (SLUICE_REQUIRE_NETNS=1)")
	}
	t.Skip(why)
}

// MarkPermitted skips (or, with SLUICE_REQUIRE_NETNS=1, fails) a test that
// needs to set SO_MARK, which takes CAP_NET_ADMIN.
func MarkPermitted(t testing.TB) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, 1); errors.Is(err, unix.EPERM) {
		const why = "SO_MARK needs CAP_NET_ADMIN"
		if os.Getenv("SLUICE_REQUIRE_NETNS") == "1" {
			t.Fatal(why + " (SLUICE_REQUIRE_NETNS=1)")
		}
		t.Skip(why)
	} else if err != nil {
		t.Fatal(err)
	}
}

// IP runs ip with args and fails the test on error.
func IP(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// Veth makes two network namespaces, named after a and b and this process,
// joined by a veth pair whose ends are named alike, and removes them when
// the test ends; the links are left down, without addresses.
func Veth(t testing.TB, a, b string) (nsA, nsB, vethA, vethB string) {
	t.Helper()
	id := os.Getpid() % 100000
	nsA, nsB = fmt.Sprintf("sluice-%s%d", a, id), fmt.Sprintf("sluice-%s%d", b, id)
	vethA, vethB = fmt.Sprintf("sl%s%d", a, id), fmt.Sprintf("sl%s%d", b, id)
	for _, ns := range []string{nsA, nsB} {
		IP(t, "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	IP(t, "link", "add", vethA, "netns", nsA, "type", "veth", "peer", "name", vethB, "netns", nsB)
	return nsA, nsB, vethA, vethB
}

// In runs fn on an OS thread that has joined network namespace ns
// (created by ip netns add). Sockets fn creates belong to ns for life and
// may then be used from any goroutine. The thread goes back to its own
// namespace afterwards: left in ns, a thread the runtime cannot end (the
// main one, which it keeps wedged instead) would put the whole process's
// /proc/net, which follows the main thread, in ns for the other tests.
// Should the way back fail, the thread stays locked and dies with its
// goroutine.
func In(t testing.TB, ns string, fn func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- err
			return
		}
		defer home.Close()
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		err = fn()
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// LinkLocal makes the two ends of a veth pair (Veth) link-local peers:
// fe80::1/64 on vethA in nsA, fe80::2/64 on vethB in nsB, without the
// kernel's own link-local addresses or duplicate address detection (whose
// wait would leave them tentative), every link up, loopback included (a
// namespace delivers to its own addresses through it).
func LinkLocal(t testing.TB, nsA, nsB, vethA, vethB string) {
	t.Helper()
	for _, side := range [][3]string{{nsA, vethA, "fe80::1/64"}, {nsB, vethB, "fe80::2/64"}} {
		IP(t, "-n", side[0], "link", "set", "lo", "up")
		IP(t, "-n", side[0], "link", "set", side[1], "addrgenmode", "none")
		IP(t, "-n", side[0], "addr", "add", side[2], "dev", side[1], "nodad")
		IP(t, "-n", side[0], "link", "set", side[1], "up")
	}
}
