package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sluice/tune/netnstest"
)

// TestConnectNameLinkLocalZone: a CONNECT to a name that the hosts file
// gives as a link-local address with its interface (fe80::2%eth0) reaches
// it, as net.Dialer's dial of the name does: with bare sockets (the
// default) and with --net-sockets and a rule that looks at addresses, the
// name is resolved by sluice, whose lookup (LookupNetIP) dropped the zone,
// and the connect failed (EINVAL, reply 0x01). sluice runs in one network
// namespace with its own /etc/hosts (ip netns exec bind-mounts
// /etc/netns/NAME/hosts over it), the target in another, joined by a veth
// pair.
func TestConnectNameLinkLocalZone(t *testing.T) {
	netnstest.Need(t)
	t.Parallel()
	nsS, nsT, vethS, vethT := netnstest.Veth(t, "zs", "zt")
	netnstest.LinkLocal(t, nsS, nsT, vethS, vethT)
	const name = "linklocal.test"
	netnsHosts(t, nsS, fmt.Sprintf("127.0.0.1 localhost\nfe80::2%%%s %s\n", vethS, name))

	var l net.Listener
	netnstest.In(t, nsT, func() (err error) {
		l, err = net.Listen("tcp6", "[fe80::2%"+vethT+"]:0")
		return err
	})
	serveEcho(t, l)
	port := uint16(l.Addr().(*net.TCPAddr).Port)

	cfg := writeConfig(t, "[[rule]]\naction = \"allow\"\ncidr = [\"fe80::/10\"]\n")
	for _, mode := range [][]string{nil, {"--net-sockets", "--config", cfg}, {"--net-sockets"}} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			p := spawnSluice(t, []string{"ip", "netns", "exec", nsS}, append([]string{"--listeners", "1"}, mode...)...)
			var c net.Conn
			netnstest.In(t, nsS, func() (err error) {
				c, err = net.Dial("tcp", p.addr)
				return err
			})
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			req := append([]byte{5, 1, 0, 5, 1, 0, 3, byte(len(name))}, name...)
			mustWrite(t, c, append(req, byte(port>>8), byte(port), 'h', 'e', 'l', 'l', 'o'))
			expect(t, c, []byte{5, 0})
			if rep, bnd := readReply(t, c); rep != 0 {
				t.Fatalf("CONNECT %s:%d: REP %#02x BND %x, want 0x00; log:\n%s", name, port, rep, bnd, p.log())
			}
			expect(t, c, []byte("hello"))
		})
	}
}

// netnsHosts gives network namespace ns its own /etc/hosts, which ip netns
// exec bind-mounts over /etc/hosts for what it runs there (a sluice child:
// the test process's lookups never see it), and removes it when the test
// ends.
func netnsHosts(t *testing.T, ns, hosts string) {
	t.Helper()
	etc := filepath.Join("/etc/netns", ns)
	_, err := os.Stat("/etc/netns")
	created := os.IsNotExist(err)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.RemoveAll(etc)
		if created {
			os.Remove("/etc/netns") // only when empty
		}
	})
	if err := os.WriteFile(filepath.Join(etc, "hosts"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
}
