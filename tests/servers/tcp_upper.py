"""A TCP server for the half-close test: read until EOF, reply with the bytes uppercased, close.

It answers only after the peer's EOF, so a reply proves the client's
``shutdown(SHUT_WR)`` crossed the tunnel; the client's read then ending in
EOF proves our close crossed back.

Run: python tests/servers/tcp_upper.py PORT
"""

from __future__ import annotations

import socket
import sys
import threading


def handle(conn: socket.socket) -> None:
    with conn:
        chunks = []
        while data := conn.recv(65536):
            chunks.append(data)
        conn.sendall(b"".join(chunks).upper())


def main() -> None:
    server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    print(f"listening on {server.getsockname()[1]}", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
