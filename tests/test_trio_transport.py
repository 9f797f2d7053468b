"""trio tier: the public API on real loopback UDP sockets."""

from __future__ import annotations

import hashlib
import os
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import pytest
import trio
import trio.lowlevel
import trio.testing
from conftest import running_server

import seam
from seam.testing import shared_identities

SERVER_IDENTITY, CLIENT_IDENTITY = shared_identities()
StreamPair = tuple[seam.SeamStream, seam.SeamStream]


async def sha256_reply_handler(conn: seam.SeamConnection) -> None:
    """For every stream: read to EOF, answer with the SHA-256 and byte count."""

    async def one(stream: seam.SeamStream) -> None:
        digest = hashlib.sha256()
        count = 0
        while chunk := await stream.receive_some(1 << 16):
            digest.update(chunk)
            count += len(chunk)
        await stream.send_all(digest.digest() + count.to_bytes(8, "big"))
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        while True:
            try:
                stream = await conn.accept_stream()
            except seam.ConnectionClosed:
                return
            nursery.start_soon(one, stream)


async def read_all(stream: seam.SeamStream) -> bytes:
    parts = []
    while chunk := await stream.receive_some():
        parts.append(chunk)
    return b"".join(parts)


async def send_and_check(conn: seam.SeamConnection, data: bytes) -> None:
    stream = await conn.open_stream()
    await stream.send_all(data)
    await stream.send_eof()
    reply = await read_all(stream)
    assert reply == hashlib.sha256(data).digest() + len(data).to_bytes(8, "big")
    await stream.aclose()


async def test_64_mib_over_16_streams_sha256_checked() -> None:
    async with running_server(sha256_reply_handler) as listener:
        async with seam.connect("127.0.0.1", listener.port, server_keys=SERVER_IDENTITY.public) as conn:
            block = os.urandom(4 * 1024 * 1024)
            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:
                    for i in range(16):
                        # Each stream's data differs, so a mix-up would show.
                        nursery.start_soon(send_and_check, conn, block[i:] + block[:i])
            stats = conn.stats()
            assert stats.bytes_sent > 64 * 1024 * 1024
            assert stats.smoothed_rtt > 0


async def test_200_concurrent_connections() -> None:
    async def echo(conn: seam.SeamConnection) -> None:
        stream = await conn.accept_stream()
        data = await read_all(stream)
        await stream.send_all(data[::-1])
        await stream.aclose()
        await conn.wait_closed()

    async def one_client(port: int, i: int, results: list[int]) -> None:
        async with seam.connect("127.0.0.1", port, server_keys=SERVER_IDENTITY.public) as conn:
            stream = await conn.open_stream()
            await stream.send_all(b"client %d" % i)
            await stream.send_eof()
            assert await read_all(stream) == (b"client %d" % i)[::-1]
            results.append(i)

    results: list[int] = []
    async with running_server(echo) as listener:
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(one_client, listener.port, i, results)
                await trio.lowlevel.checkpoint()
    assert sorted(results) == list(range(200))


async def test_wrong_pinned_keys_fail_cleanly() -> None:
    async with running_server(sha256_reply_handler) as listener:
        with trio.fail_after(10):
            with pytest.raises(seam.HandshakeError, match="do not match") as info:
                async with seam.connect("127.0.0.1", listener.port, server_keys=CLIENT_IDENTITY.public):
                    pass
        assert info.value.reason == "authentication"


async def test_unreachable_relay_times_out_within_bound() -> None:
    # A bound UDP socket that never answers.
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        start = trio.current_time()
        config = seam.SeamConfig(handshake_timeout=2)
        with trio.fail_after(10):
            with pytest.raises(seam.HandshakeError) as info:
                async with seam.connect(
                    "127.0.0.1", silent.getsockname()[1], server_keys=SERVER_IDENTITY.public, config=config
                ):
                    pass
        assert info.value.reason == "timeout"
        assert 1.9 <= trio.current_time() - start <= 4
    finally:
        silent.close()


async def test_burst_of_garbage_and_replays_leaves_transfer_intact() -> None:
    """10,000 random and replayed datagrams hit the listener mid-transfer."""
    captured: list[bytes] = []

    async with running_server(sha256_reply_handler) as listener:
        async with seam.connect("127.0.0.1", listener.port, server_keys=SERVER_IDENTITY.public) as conn:
            # Record real client packets by wrapping the client endpoint's send.
            endpoint = conn._endpoint
            real_send_batch = endpoint.send_batch

            def recording_send_batch(
                datagrams: Sequence[tuple[bytes, tuple[str, int]]], ecn: int = 0
            ) -> None:
                captured.extend(datagram for datagram, _ in datagrams[: 2000 - len(captured)])
                real_send_batch(datagrams, ecn)

            endpoint.send_batch = recording_send_batch  # type: ignore[method-assign]
            data = os.urandom(8 * 1024 * 1024)

            async def attack() -> None:
                await trio.sleep(0.05)
                rng = random.Random(5)
                attacker = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
                with attacker:
                    await attacker.bind(("127.0.0.1", 0))
                    for i in range(10_000):
                        if i % 2 and captured:
                            datagram = rng.choice(captured)
                        else:
                            datagram = rng.randbytes(rng.randrange(1, 1300))
                        await attacker.sendto(datagram, ("127.0.0.1", listener.port))
                        if i % 100 == 0:
                            await trio.lowlevel.checkpoint()

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(attack)
                    await send_and_check(conn, data)
            assert listener.stats()["datagrams_received"] > 10_000
            assert len(captured) == 2000


class NatRebinder:
    """A UDP relay in front of the server whose outside port can be changed, like a NAT."""

    def __init__(self, server_port: int) -> None:
        self.server = ("127.0.0.1", server_port)
        self.inside = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        self.outside = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        self.client: tuple[str, int] | None = None
        self.rebinds = 0
        self._nursery: trio.Nursery | None = None

    async def start(self) -> int:
        await self.inside.bind(("127.0.0.1", 0))
        await self.outside.bind(("127.0.0.1", 0))
        return self.inside.getsockname()[1]

    async def rebind(self) -> None:
        """The NAT forgets the mapping: later packets leave from a new port."""
        assert self._nursery is not None
        old = self.outside
        new = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await new.bind(("127.0.0.1", 0))
        self.outside = new
        self._nursery.start_soon(self._server_to_client, new)
        self.rebinds += 1
        old.close()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._client_to_server)
            nursery.start_soon(self._server_to_client, self.outside)

    async def _server_to_client(self, outside: trio.socket.SocketType) -> None:
        while True:
            try:
                data, _ = await outside.recvfrom(65535)
            except (trio.ClosedResourceError, OSError):
                return  # this mapping is gone
            if self.client is not None:
                await self.inside.sendto(data, self.client)

    async def _client_to_server(self) -> None:
        while True:
            data, addr = await self.inside.recvfrom(65535)
            self.client = addr
            await self.outside.sendto(data, self.server)


async def test_client_rebinding_continues_without_new_handshake() -> None:
    async with running_server(sha256_reply_handler) as listener:
        nat = NatRebinder(listener.port)
        port = await nat.start()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(nat.run)
            async with seam.connect("127.0.0.1", port, server_keys=SERVER_IDENTITY.public) as conn:
                hash_before = conn.core.handshake_hash

                async def rebind_later() -> None:
                    await trio.sleep(0.2)
                    await nat.rebind()

                nursery.start_soon(rebind_later)
                with trio.fail_after(60):
                    await send_and_check(conn, os.urandom(16 * 1024 * 1024))
                assert nat.rebinds == 1
                assert conn.core.handshake_hash == hash_before
                assert listener.connections == 1
            nursery.cancel_scope.cancel()


async def test_half_closeable_stream_contract() -> None:
    async def accept_into(conn: seam.SeamConnection, box: list[seam.SeamStream]) -> None:
        box.append(await conn.accept_stream())

    @asynccontextmanager
    async def pair_factory() -> AsyncIterator[Callable[[], Awaitable[StreamPair]]]:
        box: list[seam.SeamConnection] = []
        server_ready = trio.Event()

        async def keep(conn: seam.SeamConnection) -> None:
            box.append(conn)
            server_ready.set()
            await conn.wait_closed()

        async with running_server(keep) as listener:
            async with seam.connect("127.0.0.1", listener.port, server_keys=SERVER_IDENTITY.public) as client:

                async def make() -> tuple[seam.SeamStream, seam.SeamStream]:
                    ours = await client.open_stream()
                    await ours.send_all(b"\x00")  # the peer learns of a stream from its first frame
                    await server_ready.wait()
                    theirs = await box[0].accept_stream()
                    assert await theirs.receive_some(1) == b"\x00"
                    return ours, theirs

                yield make

    async with pair_factory() as make:
        with trio.fail_after(30):
            await trio.testing.check_half_closeable_stream(make, None)


async def test_datagrams_round_trip_on_loopback() -> None:
    async def echo_datagrams(conn: seam.SeamConnection) -> None:
        while True:
            try:
                data = await conn.receive_datagram()
            except seam.ConnectionClosed:
                return
            await conn.send_datagram(data.upper())

    async with running_server(echo_datagrams) as listener:
        async with seam.connect("127.0.0.1", listener.port, server_keys=SERVER_IDENTITY.public) as conn:
            got = set()
            with trio.move_on_after(10):
                for i in range(100):
                    await conn.send_datagram(b"ping %d" % i)
                while len(got) < 90:
                    got.add(await conn.receive_datagram())
            assert len(got) >= 90  # unreliable by design, but loopback loses little


async def test_close_reaches_peer_with_reason() -> None:
    closed: list[seam.ConnectionClosed] = []
    seen = trio.Event()

    async def wait(conn: seam.SeamConnection) -> None:
        closed.append(await conn.wait_closed())
        seen.set()

    async with running_server(wait) as listener:
        async with seam.connect("127.0.0.1", listener.port, server_keys=SERVER_IDENTITY.public) as conn:
            await conn.aclose(seam.ErrorCode.APPLICATION_ERROR, "done here")
        with trio.fail_after(5):
            await seen.wait()
    assert closed[0].reason == "done here" and closed[0].by_peer


async def test_closed_connection_raises_connection_closed() -> None:
    async def drop_at_once(conn: seam.SeamConnection) -> None:
        await conn.aclose(seam.ErrorCode.APPLICATION_ERROR, "go away")

    async with running_server(drop_at_once) as listener:
        async with seam.connect("127.0.0.1", listener.port, server_keys=SERVER_IDENTITY.public) as conn:
            with trio.fail_after(5):
                with pytest.raises(seam.ConnectionClosed, match="go away"):
                    await conn.accept_stream()
            with pytest.raises(seam.ConnectionClosed):
                await conn.open_stream()
