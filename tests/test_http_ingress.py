"""HTTP ingress timing behaviour, with trio's autojump clock instead of real waiting."""

from __future__ import annotations

import trio
import trio.testing

from seamless_relay.ingress.http import HEAD_TIMEOUT, KEEPALIVE_IDLE, HttpIngress, Route


def unknown(host: str) -> Route:
    return Route("unknown")


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def test_slow_head_gets_408(autojump_clock: trio.testing.MockClock) -> None:
    ingress = HttpIngress(unknown, scheme="http", max_body_size=0)
    public, relay_side = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ingress.handle, relay_side, "192.0.2.1")
        await public.send_all(b"GET / HTTP/1.1\r\nHost: a.localhost\r\n")  # never finished
        start = trio.current_time()
        reply = await read_all(public)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert HEAD_TIMEOUT <= trio.current_time() - start < HEAD_TIMEOUT + 1


async def test_idle_keepalive_connection_is_closed_quietly(autojump_clock: trio.testing.MockClock) -> None:
    ingress = HttpIngress(unknown, scheme="http", max_body_size=0)
    _public, relay_side = trio.testing.memory_stream_pair()
    await ingress.handle(relay_side, "192.0.2.1")  # returns once the idle limit passes
    assert trio.current_time() >= KEEPALIVE_IDLE


async def test_unknown_host_then_connection_closes() -> None:
    ingress = HttpIngress(unknown, scheme="http", max_body_size=0)
    public, relay_side = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ingress.handle, relay_side, "192.0.2.1")
        await public.send_all(b"GET / HTTP/1.1\r\nHost: Nobody.Localhost:8080\r\n\r\n")
        reply = await read_all(public)
    assert reply.startswith(b"HTTP/1.1 404 ")
    assert b"nobody.localhost" in reply
    assert ingress.errors == {404: 1}
