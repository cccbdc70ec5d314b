"""Send one payload to an echo server through a SOCKS5 proxy with PySocks.

usage: pysocks_echo.py tcp|udp PROXY_HOST PROXY_PORT DST_HOST DST_PORT PAYLOAD

tcp: CONNECT, send PAYLOAD, half-close, read to EOF.
udp: UDP ASSOCIATE from a socket bound to 127.0.0.1, send PAYLOAD as one
datagram, read one datagram back.
Prints one JSON object: {"data": echoed payload, "from": [host, port]}
("from" is the datagram's source as the proxy reported it; null for tcp).
"""

import json
import socket
import sys

import socks

TIMEOUT_SECONDS = 10


def tcp_echo(proxy, dst, payload):
    s = socks.socksocket(socket.AF_INET, socket.SOCK_STREAM)
    s.set_proxy(socks.SOCKS5, proxy[0], proxy[1])
    s.settimeout(TIMEOUT_SECONDS)
    s.connect(dst)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.close()
    return got, None


def udp_echo(proxy, dst, payload):
    s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    s.set_proxy(socks.SOCKS5, proxy[0], proxy[1])
    s.settimeout(TIMEOUT_SECONDS)
    # Bound explicitly to loopback: PySocks would otherwise bind to every
    # interface before it asks for the association.
    s.bind(("127.0.0.1", 0))
    s.sendto(payload, dst)
    got, source = s.recvfrom(65536)
    s.close()
    return got, list(source)


def main():
    mode, proxy_host, proxy_port, dst_host, dst_port, payload = sys.argv[1:]
    proxy = (proxy_host, int(proxy_port))
    dst = (dst_host, int(dst_port))
    echo = {"tcp": tcp_echo, "udp": udp_echo}[mode]
    got, source = echo(proxy, dst, payload.encode())
    json.dump({"data": got.decode(errors="replace"), "from": source}, sys.stdout)


if __name__ == "__main__":
    main()
