"""An HTTP/1.1 server (stdlib) that reports what it received, for end-to-end tests.

GET /headers  -> JSON of the request headers and the peer address
POST /echo    -> the request body back (Content-Length or chunked request), with its SHA-256
GET /chunked  -> a chunked response of N (query ?n=) 1000-byte chunks
GET /slow     -> a chunked response whose chunks come 1.5 s apart
GET /big?mb=N -> N MiB of a repeating pattern with Content-Length
anything else -> 200 "hello from the local service"

Run: python tests/servers/http_echo.py PORT
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/headers":
            report = {"headers": [[k, v] for k, v in self.headers.items()], "peer": self.client_address[0]}
            self._send(200, json.dumps(report).encode(), "application/json")
        elif url.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(int(query.get("n", ["10"])[0])):
                chunk = bytes([65 + i % 26]) * 1000
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        elif url.path == "/slow":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"first\n", b"second\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
                time.sleep(1.5)
            self.wfile.write(b"0\r\n\r\n")
        elif url.path == "/big":
            size = int(float(query.get("mb", ["1"])[0]) * 1024 * 1024)
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            block = bytes(range(256)) * 256
            left = size
            while left:
                part = block[: min(left, len(block))]
                self.wfile.write(part)
                left -= len(part)
        else:
            self._send(200, b"hello from the local service\n")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        body = self._read_body()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Body-SHA256", hashlib.sha256(body).hexdigest())
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    request_queue_size = 256  # the stdlib's 5 resets bursts of concurrent connections
    daemon_threads = True


def main() -> None:
    server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
