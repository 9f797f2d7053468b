"""``seamless demo``: a relay, a client and a small web page in one process, on loopback.

Everything real: the relay listens for Seam on a loopback UDP port and for
HTTP on 127.0.0.1:8080 (or a free port if 8080 is taken), the client dials
it over Seam with the relay's pinned keys, and the demo page is a tiny HTTP
server on another loopback port that the client forwards to.
"""

from __future__ import annotations

import html
import signal
import sys
import tempfile
from pathlib import Path

import trio

from seam import Identity
from seamless_relay.config import HostPort, RelayConfig
from seamless_relay.http_head import HttpError, find_head_end, parse_request_head
from seamless_relay.server import Relay

DEMO_HTTP_PORT = 8080
DEMO_SUBDOMAIN = "demo"


def demo_page(count: int, headers: dict[str, str]) -> bytes:
    seen = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
        for k, v in headers.items()
        if k.lower().startswith("x-forwarded") or k.lower() == "host"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Seamless demo</title></head>"
        "<body style='font-family: sans-serif; max-width: 40em; margin: 3em auto'>"
        "<h1>It works: this page came through a Seamless tunnel</h1>"
        "<p>Your request crossed the relay's HTTP ingress, a post-quantum Seam connection "
        "(X25519 + ML-KEM-768) to the client, and the client's connection to this local page.</p>"
        f"<p>Requests served: {count}</p><table>{seen}</table></body></html>"
    ).encode()


class DemoService:
    """A minimal HTTP/1.1 server for the demo page (one response per connection)."""

    def __init__(self) -> None:
        self.count = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            buffer = bytearray()
            try:
                with trio.move_on_after(10):
                    while (end := find_head_end(buffer)) is None:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        buffer += data
                    request = parse_request_head(bytes(buffer[:end]))
                    self.count += 1
                    body = demo_page(self.count, dict(request.headers))
                    if request.method == "HEAD":
                        body_out = b""
                    else:
                        body_out = body
                    await stream.send_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                        + body_out
                    )
            except HttpError:
                await stream.send_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass


async def _open_http_listener() -> trio.SocketListener:
    for port in (DEMO_HTTP_PORT, 0):
        try:
            return (await trio.open_tcp_listeners(port, host="127.0.0.1"))[0]
        except OSError:
            continue
    raise OSError("no free loopback port for the demo relay")


async def run_demo(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Start the three parts; reports the public URL once it works."""
    from seamless_client.config import ClientSettings
    from seamless_client.tunnel import TunnelClient

    probe = await _open_http_listener()
    http_port = probe.socket.getsockname()[1]
    await probe.aclose()
    with tempfile.TemporaryDirectory(prefix="seamless-demo-") as tmp:
        config = RelayConfig(
            seam_addr=HostPort(host="127.0.0.1", port=0),
            http_addr=HostPort(host="127.0.0.1", port=http_port),
            store=Path(tmp) / "relay.json",
        )
        relay_identity = Identity.generate()
        service = DemoService()
        async with trio.open_nursery() as nursery:
            relay: Relay = await nursery.start(Relay(config, identity=relay_identity).run)
            page_listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            page_port = page_listeners[0].socket.getsockname()[1]
            nursery.start_soon(trio.serve_listeners, service.handle, page_listeners)
            settings = ClientSettings(
                relay_host="127.0.0.1",
                relay_port=relay.seam_port,
                x25519_hex=relay_identity.public.x25519_hex,
                kem_hex=relay_identity.public.kem_hex,
                kind="http",
                local_port=page_port,
                subdomain=DEMO_SUBDOMAIN,
                identity_path=Path(tmp) / "client.json",
            )
            client = TunnelClient(settings, identity=Identity.generate(), on_registered=lambda *_: None)
            registered = await nursery.start(client.run)
            url = registered.url
            print(
                f"Seamless demo: relay on udp 127.0.0.1:{relay.seam_port}, demo page on 127.0.0.1:{page_port}"
            )
            print(f"Public URL: {url}/")
            print(f"Try it:     curl {url}/")
            print("Press Ctrl-C to stop.", flush=True)
            task_status.started(url)


def run() -> int:
    """The CLI entry: serve until Ctrl-C."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(stop_on_signal)
            await nursery.start(run_demo)

    failures: list[str] = []
    try:
        trio.run(main)
    except* OSError as group:
        failures.extend(str(exc) for exc in group.exceptions)
    if failures:
        print(f"Error: {failures[0]}", file=sys.stderr)
        return 1
    return 0
