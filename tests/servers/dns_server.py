"""A tiny authoritative DNS server over UDP for the UDP-tunnel test: every A query gets 192.0.2.7.

Run: python tests/servers/dns_server.py PORT
"""

from __future__ import annotations

import socket
import sys

ANSWER_IP = bytes([192, 0, 2, 7])


def answer(query: bytes) -> bytes | None:
    if len(query) < 12:
        return None
    qdcount = int.from_bytes(query[4:6], "big")
    if qdcount != 1:
        return None
    end = 12
    while end < len(query) and query[end] != 0:
        end += query[end] + 1
    question = query[12 : end + 5]
    header = query[:2] + b"\x84\x00" + b"\x00\x01\x00\x01\x00\x00\x00\x00"
    record = b"\xc0\x0c" + b"\x00\x01\x00\x01" + (60).to_bytes(4, "big") + b"\x00\x04" + ANSWER_IP
    return header + question + record


def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", int(sys.argv[1])))
    print(f"listening on {sock.getsockname()[1]}", flush=True)
    while True:
        data, addr = sock.recvfrom(4096)
        reply = answer(data)
        if reply is not None:
            sock.sendto(reply, addr)


if __name__ == "__main__":
    main()
