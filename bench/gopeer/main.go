// Command gopeer serves SOCKS5 with github.com/armon/go-socks5, the Go relay
// users most often pick instead of sluice (it copies with io.Copy). It is a
// module of its own so that sluice does not depend on it; bench/peers.sh
// builds it as the peer "go-socks5".
package main

import (
	"flag"
	"log"

	socks5 "github.com/armon/go-socks5"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:1080", "address to serve SOCKS5 on")
	flag.Parse()
	s, err := socks5.New(&socks5.Config{})
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(s.ListenAndServe("tcp", *addr))
}
