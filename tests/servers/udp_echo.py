"""A UDP echo server for the UDP-tunnel test. Run: python tests/servers/udp_echo.py PORT"""

from __future__ import annotations

import socket
import sys


def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", int(sys.argv[1])))
    print(f"listening on {sock.getsockname()[1]}", flush=True)
    while True:
        data, addr = sock.recvfrom(65536)
        sock.sendto(data, addr)


if __name__ == "__main__":
    main()
