"""Raw TCP: a public port per tunnel, and relay-only passthrough to fixed backends."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from seamless_relay.splice import splice
from seamless_relay.tunnel import Tunnel, TunnelGone, format_address

logger = logging.getLogger("seamless.relay.tcp")


async def contained(what: str, handler: Callable[[], Awaitable[object]]) -> None:
    """Run one public connection's handler; its failure is logged, never spread to the listener."""
    try:
        await handler()
    except Exception:
        logger.exception("%s failed", what)


async def accept_forever(
    listener: trio.SocketListener,
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    what: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections until cancelled, each handled in its own contained task.

    An accept error (EMFILE and friends) backs off briefly instead of spinning
    or taking the listener down.
    """
    async with listener, trio.open_nursery() as nursery:
        task_status.started()
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                logger.warning("%s: accept failed: %s", what, exc)
                await trio.sleep(0.1)
                continue
            nursery.start_soon(contained, what, _bind(handler, stream))


def _bind(
    handler: Callable[[trio.SocketStream], Awaitable[None]], stream: trio.SocketStream
) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        await handler(stream)

    return call


def peer_of(stream: trio.SocketStream) -> str:
    try:
        return format_address(stream.socket.getpeername())
    except OSError:
        return "unknown"


async def open_tcp_listener(host: str, port: int) -> trio.SocketListener:
    """Bind one TCP listener (``port`` 0 picks a free one)."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    for extra in listeners[1:]:
        await extra.aclose()
    return listeners[0]


async def serve_tcp_tunnel(
    tunnel: Tunnel,
    listener: trio.SocketListener,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept public TCP connections and forward each over its own stream to the tunnel's client."""

    async def forward(public: trio.SocketStream) -> None:
        peer = peer_of(public)
        async with public:
            try:
                stream = await tunnel.open_stream(peer)
            except TunnelGone:
                return
            tunnel.active += 1
            try:
                async with stream:
                    sent, received = await splice(public, stream)
                    tunnel.bytes_in += sent
                    tunnel.bytes_out += received
            finally:
                tunnel.active -= 1
        logger.debug("tcp %s: %s done", tunnel.name, peer)

    await accept_forever(listener, forward, f"tcp tunnel {tunnel.name}", task_status=task_status)


async def serve_passthrough(
    listener: trio.SocketListener,
    backend_host: str,
    backend_port: int,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Relay-only forwarding: every connection to ``listener`` goes to one configured backend."""

    async def forward(public: trio.SocketStream) -> None:
        async with public:
            try:
                backend = await trio.open_tcp_stream(backend_host, backend_port)
            except OSError as exc:
                logger.warning("passthrough to %s:%d failed: %s", backend_host, backend_port, exc)
                return
            async with backend:
                await splice(public, backend)

    await accept_forever(listener, forward, "passthrough", task_status=task_status)
