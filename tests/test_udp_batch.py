"""Batched UDP I/O: GSO grouping and GRO splitting, on constructed buffers and real loopback sockets."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import socket
import struct
import sys
import time
from typing import Any

import pytest
import trio
import trio.testing
from conftest import running_server
from interpreted import interpreted

import seam
from seam import packet as pk
from seam._trio import endpoint as endpoint_module
from seam._trio.endpoint import Endpoint
from seam._trio.udp_batch import (
    DISABLE_ECN_ENV,
    DISABLE_ENV,
    GSO_MAX_BYTES,
    GSO_MAX_SEGMENTS,
    IP_TOS,
    IPV6_TCLASS,
    SOL_UDP,
    UDP_GRO,
    BatchSocket,
    ecn_codepoint,
    gro_segment_size,
    gso_group_end,
    probe_ecn,
    probe_offload,
    split_gro,
)
from seam.testing import shared_identities

SERVER_IDENTITY, _ = shared_identities()
Address = tuple[str, int]
A: Address = ("127.0.0.1", 4001)
B: Address = ("127.0.0.1", 4002)


def udp_socket(*, blocking: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(blocking)
    return sock


async def receive_until(endpoint: Endpoint, done: trio.Event) -> None:
    """Run the endpoint's receive loop until ``done`` (5 s at most), then close it."""
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(endpoint.receive_loop)
            with trio.fail_after(5):
                await done.wait()
            nursery.cancel_scope.cancel()
    finally:
        endpoint.close()


def groups(datagrams: list[tuple[bytes, Address]], **limits: int) -> list[list[int]]:
    """The datagrams' lengths, cut where ``gso_group_end`` cuts them."""
    out = []
    start = 0
    while start < len(datagrams):
        end = gso_group_end(datagrams, start, **limits)
        assert end > start
        out.append([len(d) for d, _ in datagrams[start:end]])
        start = end
    return out


def payloads(*sizes: int) -> list[bytes]:
    """Distinct contents, so a datagram cut in the wrong place cannot pass for another."""
    return [bytes([i % 251 + 1]) * size for i, size in enumerate(sizes)]


def drain(sock: socket.socket, count: int, *, timeout: float = 5.0) -> list[tuple[bytes, Address]]:
    """Read ``count`` datagrams from a plain non-blocking socket."""
    out: list[tuple[bytes, Address]] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        try:
            data, addr = sock.recvfrom(65535)
        except BlockingIOError:
            time.sleep(0.001)
            continue
        out.append((data, (addr[0], addr[1])))
    return out


def receive_all(batch: BatchSocket, count: int, *, timeout: float = 5.0) -> list[tuple[bytes, Address]]:
    out: list[tuple[bytes, Address]] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        if batch.receive(out, 1024):
            time.sleep(0.001)
    return out


def offload_available() -> bool:
    with udp_socket() as sock:
        probed = probe_offload(sock)
    return probed.gso and probed.gro


needs_offload = pytest.mark.skipif(
    not offload_available() or os.environ.get(DISABLE_ENV, "") not in ("", "0"),
    reason="kernel without UDP GSO/GRO (or SEAMLESS_NO_GSO set)",
)


# ------------------------------------------------------------ pure functions


def test_groups_are_same_size_runs_to_one_address_with_a_shorter_tail() -> None:
    datagrams = [(d, A) for d in payloads(1200, 1200, 1200, 700, 1200, 1200)]
    assert groups(datagrams) == [[1200, 1200, 1200, 700], [1200, 1200]]


def test_a_longer_datagram_starts_a_new_group() -> None:
    datagrams = [(d, A) for d in payloads(500, 500, 1200, 1200, 40)]
    assert groups(datagrams) == [[500, 500], [1200, 1200, 40]]


def test_a_shorter_datagram_ends_its_group() -> None:
    datagrams = [(d, A) for d in payloads(1200, 700, 700, 700)]
    assert groups(datagrams) == [[1200, 700], [700, 700]]


def test_other_address_starts_a_new_group() -> None:
    datagrams = [(d, addr) for d, addr in zip(payloads(1200, 1200, 1200, 1200), [A, A, B, A], strict=True)]
    assert groups(datagrams) == [[1200, 1200], [1200], [1200]]
    # Equal addresses that are different tuple objects still group.
    assert groups([(b"x" * 10, ("10.0.0.1", 9)), (b"y" * 10, ("10.0.0.1", 9))]) == [[10, 10]]


def test_groups_respect_segment_and_byte_limits() -> None:
    small = [(d, A) for d in payloads(*[100] * 150)]
    assert [len(g) for g in groups(small)] == [GSO_MAX_SEGMENTS, GSO_MAX_SEGMENTS, 150 - 2 * GSO_MAX_SEGMENTS]
    big = [(d, A) for d in payloads(*[1200] * 120)]
    per_group = GSO_MAX_BYTES // 1200
    for group in groups(big):
        assert sum(group) <= GSO_MAX_BYTES
        assert len(group) <= per_group
    assert groups([(d, A) for d in payloads(10, 10, 10)], max_segments=2) == [[10, 10], [10]]
    assert groups([(d, A) for d in payloads(10, 10, 10)], max_bytes=25) == [[10, 10], [10]]


def test_random_sequences_group_only_what_gso_may_merge() -> None:
    rng = random.Random(7)
    for _ in range(200):
        datagrams = [
            (bytes(rng.choice([40, 700, 1200, 1200, 1200])), rng.choice([A, A, A, B]))
            for _ in range(rng.randrange(1, 200))
        ]
        start = 0
        while start < len(datagrams):
            end = gso_group_end(datagrams, start)
            group = datagrams[start:end]
            size = len(group[0][0])
            assert all(addr == group[0][1] for _, addr in group)
            assert all(len(d) == size for d, _ in group[:-1])
            assert len(group[-1][0]) <= size
            assert len(group) <= GSO_MAX_SEGMENTS
            assert sum(len(d) for d, _ in group) <= GSO_MAX_BYTES
            start = end


def test_split_gro_cuts_a_constructed_buffer() -> None:
    parts = payloads(1200, 1200, 1200, 333)
    buffer = b"".join(parts)
    assert split_gro(buffer, 1200) == parts
    assert split_gro(memoryview(bytearray(buffer)), 1200) == parts
    assert split_gro(b"".join(parts[:3]), 1200) == parts[:3]  # no short tail
    assert split_gro(buffer, 0) == [buffer]  # no segment size: one datagram
    assert split_gro(b"abc", 1200) == [b"abc"]
    assert all(isinstance(part, bytes) for part in split_gro(memoryview(buffer), 1200))


def test_gro_segment_size_reads_the_control_message() -> None:
    assert gro_segment_size([(SOL_UDP, UDP_GRO, struct.pack("=i", 1200))]) == 1200
    other = (socket.SOL_SOCKET, 99, b"\0" * 8)
    assert gro_segment_size([other, (SOL_UDP, UDP_GRO, struct.pack("=i", 7))]) == 7
    assert gro_segment_size([]) == 0
    assert gro_segment_size([(SOL_UDP, UDP_GRO, b"\x01")]) == 0  # too short to be one


# -------------------------------------------------------------- real sockets


@needs_offload
def test_gso_send_arrives_as_separate_datagrams_at_a_plain_receiver() -> None:
    with udp_socket() as sender_sock, udp_socket() as receiver:
        sender = BatchSocket(sender_sock)
        assert sender.gso
        to = receiver.getsockname()
        parts = payloads(*[1200] * 20, 512)
        assert sender.send([(d, to) for d in parts]) == len(parts)
        assert sender.send_calls == 1  # one sendmsg for all 21
        got = drain(receiver, len(parts))
        assert [d for d, _ in got] == parts
        assert {addr for _, addr in got} == {sender_sock.getsockname()}


@needs_offload
def test_gro_receiver_splits_what_a_gso_sender_sent() -> None:
    with udp_socket() as sender_sock, udp_socket() as receiver_sock:
        sender = BatchSocket(sender_sock)
        receiver = BatchSocket(receiver_sock)
        assert receiver.gro
        to = receiver_sock.getsockname()
        parts = payloads(*[1200] * 40, 100, *[300] * 5)
        assert sender.send([(d, to) for d in parts]) == len(parts)
        got = receive_all(receiver, len(parts))
        assert [d for d, _ in got] == parts
        assert {addr for _, addr in got} == {sender_sock.getsockname()}
        # Loopback usually hands a GSO send over whole; coalescing is allowed, not required.
        assert receiver.receive_calls <= len(parts)
        assert receiver.datagrams_received == len(parts)


@needs_offload
def test_mixed_sizes_and_addresses_are_never_merged_wrongly() -> None:
    rng = random.Random(11)
    with udp_socket() as sender_sock, udp_socket() as plain, udp_socket() as gro_sock:
        sender = BatchSocket(sender_sock)
        gro = BatchSocket(gro_sock)
        targets = [plain.getsockname(), gro_sock.getsockname()]
        datagrams = []
        for i in range(600):
            size = rng.choice([1, 40, 699, 700, 1200, 1200, 1200, 1200])
            datagrams.append((os.urandom(size) + i.to_bytes(2, "big"), rng.choice(targets)))
        sent = sender.send(datagrams)
        assert sent == len(datagrams)
        assert sender.send_calls < len(datagrams)
        expected_plain = [d for d, to in datagrams if to == targets[0]]
        expected_gro = [d for d, to in datagrams if to == targets[1]]
        assert [d for d, _ in drain(plain, len(expected_plain))] == expected_plain
        got = receive_all(gro, len(expected_gro))
        assert [d for d, _ in got] == expected_gro
        assert {addr for _, addr in got} == {sender_sock.getsockname()}


@pytest.mark.parametrize("how", ["flag", "env"])
def test_fallback_without_offload_sends_and_receives_one_by_one(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if how == "env":
        monkeypatch.setenv(DISABLE_ENV, "1")
    offload = how != "flag"
    with udp_socket() as sender_sock, udp_socket() as receiver_sock:
        sender = BatchSocket(sender_sock, offload=offload)
        receiver = BatchSocket(receiver_sock, offload=offload)
        assert not sender.gso and not sender.gro and not receiver.gro
        if offload_available():
            assert receiver_sock.getsockopt(SOL_UDP, UDP_GRO) == 0
        to = receiver_sock.getsockname()
        parts = payloads(*[1200] * 10, 5, 700, 700)
        assert sender.send([(d, to) for d in parts]) == len(parts)
        assert sender.send_calls == len(parts)
        got = receive_all(receiver, len(parts))
        assert [d for d, _ in got] == parts
        assert {addr for _, addr in got} == {sender_sock.getsockname()}
        assert receiver.receive_calls == len(parts)


class RefusingSocket(socket.socket):
    """A socket whose kernel pretends to refuse GSO sends, as a route through IPsec does."""

    def sendmsg(self, *args: Any, **kwargs: Any) -> int:
        raise OSError(errno.EIO, "GSO refused")


@needs_offload
def test_a_refused_gso_send_turns_gso_off_and_resends_one_by_one() -> None:
    with RefusingSocket(socket.AF_INET, socket.SOCK_DGRAM) as sender_sock, udp_socket() as receiver:
        sender_sock.bind(("127.0.0.1", 0))
        sender_sock.setblocking(False)
        drops: list[str] = []
        sender = BatchSocket(sender_sock, ecn=False, count_drop=drops.append)  # only GSO is refused here
        assert sender.gso
        to = receiver.getsockname()
        parts = payloads(1200, 1200, 1200)
        assert sender.send([(d, to) for d in parts]) == 3
        assert not sender.gso
        assert drops == []
        assert [d for d, _ in drain(receiver, 3)] == parts


def test_send_stops_where_the_kernel_buffer_filled() -> None:
    class FullAfter(socket.socket):
        budget = 2

        def sendto(self, *args: Any) -> int:  # type: ignore[override]
            if self.budget == 0:
                raise BlockingIOError(errno.EAGAIN, "full")
            self.budget -= 1
            return super().sendto(*args)  # type: ignore[no-any-return]

    with FullAfter(socket.AF_INET, socket.SOCK_DGRAM) as sender_sock, udp_socket() as receiver:
        sender_sock.bind(("127.0.0.1", 0))
        sender = BatchSocket(sender_sock, offload=False)
        to = receiver.getsockname()
        datagrams = [(d, to) for d in payloads(10, 20, 30, 40)]
        assert sender.send(datagrams) == 2
        sender_sock.budget = 5
        assert sender.send(datagrams, 2) == 4
        assert [d for d, _ in drain(receiver, 4)] == [d for d, _ in datagrams]


# ---------------------------------------------------------- the trio endpoint


class Arrivals:
    """Sets ``done`` once ``expected`` datagrams have reached the fake cores."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.done = trio.Event()

    def arrived(self) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.done.set()


class FakeCore:
    def __init__(self, arrivals: Arrivals) -> None:
        self.received: list[tuple[bytes, Address]] = []
        self.codepoints: list[int] = []
        self._arrivals = arrivals

    def receive_datagram(self, data: bytes, addr: Address, now: float, *, ecn: int = 0) -> None:
        self.received.append((data, addr))
        self.codepoints.append(ecn)
        self._arrivals.arrived()


class FakeConnection:
    """Stands in for a SeamConnection; endpoints that route to it need ``routes_to_fakes``."""

    def __init__(self, arrivals: Arrivals) -> None:
        self.core = FakeCore(arrivals)
        self.pumps = 0

    def pump(self) -> None:
        self.pumps += 1


@pytest.fixture
def routes_to_fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Endpoints route with the plain-Python ``route_datagrams``: the compiled one takes only real cores."""
    monkeypatch.setattr(endpoint_module, "route_datagrams", interpreted("seam._trio.routing").route_datagrams)


def data_packet(cid: bytes, index: int, size: int) -> bytes:
    head = bytes([pk.PacketType.DATA_PHASE0]) + cid + index.to_bytes(4, "big")
    return head + bytes(size - len(head))


@pytest.mark.parametrize("offload", [True, False])
async def test_endpoint_hands_over_a_batch_then_pumps_each_connection_once(
    offload: bool, routes_to_fakes: None
) -> None:
    endpoint = Endpoint(udp_socket(), offload=offload)
    arrivals = Arrivals(150)
    first, second = FakeConnection(arrivals), FakeConnection(arrivals)
    cid1, cid2 = b"\x01" * pk.CID_LEN, b"\x02" * pk.CID_LEN
    endpoint.connections[cid1] = first  # type: ignore[assignment]
    endpoint.connections[cid2] = second  # type: ignore[assignment]
    datagrams = [data_packet(cid1 if i % 3 else cid2, i, 1200 if i % 7 else 300) for i in range(150)]
    batches = 0
    real_io = endpoint._io

    class CountingIO:  # the compiled BatchSocket refuses a patched method: wrap it instead
        def __getattr__(self, name: str) -> Any:
            return getattr(real_io, name)

        def receive(
            self, out: list[tuple[bytes, Address]], limit: int, codepoints: list[int] | None = None
        ) -> bool:
            nonlocal batches
            drained = real_io.receive(out, limit, codepoints)
            batches += bool(out)
            return drained

    endpoint._io = CountingIO()  # type: ignore[assignment]
    with udp_socket() as sender_sock:
        sender = BatchSocket(sender_sock, offload=offload)
        # Queued before the receive task first wakes, so one wake-up usually sees them all.
        assert sender.send([(d, endpoint.local_address) for d in datagrams]) == len(datagrams)
        await receive_until(endpoint, arrivals.done)
        source = sender_sock.getsockname()
    assert [d for d, _ in first.core.received] == [d for i, d in enumerate(datagrams) if i % 3]
    assert [d for d, _ in second.core.received] == [d for i, d in enumerate(datagrams) if not i % 3]
    assert {addr for _, addr in first.core.received + second.core.received} == {source}
    assert 1 <= batches <= 3  # 150 datagrams fit one batch, unless the kernel was slow to deliver them
    assert first.pumps == second.pumps == batches  # one pump per connection per batch, not per datagram


async def test_a_failing_admission_gate_costs_only_its_own_datagram(caplog: pytest.LogCaptureFixture) -> None:
    arrivals = Arrivals(3)
    admitted: list[bytes] = []

    def gate(data: bytes, addr: Address, now: float) -> None:
        arrivals.arrived()
        if data.endswith(b"bug"):
            raise RuntimeError("a bug in the gate")
        admitted.append(data)

    endpoint = Endpoint(udp_socket(), on_unknown=gate)
    unknown = [data_packet(bytes([9]) * pk.CID_LEN, i, 200) for i in range(3)]
    unknown[1] += b"bug"
    with udp_socket() as sender_sock:
        sender = BatchSocket(sender_sock, offload=False)
        assert sender.send([(d, endpoint.local_address) for d in unknown]) == 3
        await receive_until(endpoint, arrivals.done)
    assert admitted == [unknown[0], unknown[2]]  # the datagram after the failure still reached the gate
    assert endpoint.dropped == {"internal-error": 1}
    assert "internal error admitting a datagram" in caplog.text


async def test_endpoint_backlog_keeps_order_and_drains() -> None:
    with udp_socket() as receiver:
        endpoint = Endpoint(udp_socket())
        to = receiver.getsockname()
        first = [(d, to) for d in payloads(*[1200] * 5)]
        later = [(d, to) for d in payloads(700, 700, 9)]
        real_io = endpoint._io

        class RefusingIO:  # the compiled BatchSocket refuses a patched method: stand in for it
            def send(self, datagrams: object, start: int = 0, ecn: int = 0) -> int:
                return start

        endpoint._io = RefusingIO()  # type: ignore[assignment]
        endpoint.send_batch(first)  # the kernel "takes nothing": all queued
        endpoint._io = real_io
        endpoint.send_batch(later)  # must queue behind, not overtake
        assert len(endpoint._backlog) == 8
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(endpoint.flush_loop)
                with trio.fail_after(5):
                    await trio.testing.wait_all_tasks_blocked(cushion=0.01)
                assert not endpoint._backlog
                nursery.cancel_scope.cancel()
        finally:
            endpoint.close()
        assert [d for d, _ in drain(receiver, 8)] == [d for d, _ in first + later]


@pytest.mark.parametrize("disable", ["0", "1"])
async def test_transfer_over_the_public_api_with_and_without_offload(
    disable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DISABLE_ENV, disable)

    async def handler(conn: seam.SeamConnection) -> None:
        stream = await conn.accept_stream()
        digest = hashlib.sha256()
        while chunk := await stream.receive_some(1 << 16):
            digest.update(chunk)
        await stream.send_all(digest.digest())
        await stream.aclose()

    data = os.urandom(2 << 20)
    async with running_server(handler) as listener:
        with trio.fail_after(30):
            async with seam.connect("127.0.0.1", listener.port, server_keys=SERVER_IDENTITY.public) as conn:
                offload = conn._endpoint.offload
                assert offload.gso == offload.gro == (disable == "0" and offload_available())
                stream = await conn.open_stream()
                await stream.send_all(data)
                await stream.send_eof()
                reply = b""
                while len(reply) < 32 and (chunk := await stream.receive_some()):
                    reply += chunk
                assert reply == hashlib.sha256(data).digest()


# ------------------------------------------------------------------------ ECN


def ecn_available() -> bool:
    with udp_socket() as sock:
        return probe_ecn(sock)


needs_ecn = pytest.mark.skipif(
    not ecn_available() or os.environ.get(DISABLE_ECN_ENV, "") not in ("", "0"),
    reason="kernel without IP_TOS / IP_RECVTOS (or SEAMLESS_NO_ECN set)",
)


def test_ecn_codepoint_reads_ipv4_and_ipv6_control_messages() -> None:
    assert ecn_codepoint([(socket.IPPROTO_IP, IP_TOS, bytes((0xB9,)))]) == 0b01  # DSCP bits ignored
    v6 = (0b10).to_bytes(4, sys.byteorder)
    assert (
        ecn_codepoint([(SOL_UDP, UDP_GRO, struct.pack("=i", 1200)), (socket.IPPROTO_IPV6, IPV6_TCLASS, v6)])
        == 2
    )
    assert ecn_codepoint([(socket.IPPROTO_IP, IP_TOS, b"")]) == 0  # malformed: Not-ECT, no error
    assert ecn_codepoint([]) == 0


@needs_ecn
@pytest.mark.parametrize("offload", [True, False])
def test_codepoints_survive_loopback_per_batch_and_per_gro_buffer(offload: bool) -> None:
    """Each batch's codepoint reaches the receiver; GRO segments share their buffer's codepoint."""
    with udp_socket() as sender_sock, udp_socket() as receiver_sock:
        sender = BatchSocket(sender_sock, offload=offload)
        receiver = BatchSocket(receiver_sock, offload=offload)
        assert sender.ecn and receiver.ecn
        to = receiver_sock.getsockname()
        plan = [(0b10, payloads(*[1200] * 6)), (0, payloads(*[1200] * 4)), (0b11, payloads(900, 900, 300))]
        for codepoint, batch in plan:
            assert sender.send([(d, to) for d in batch], 0, codepoint) == len(batch)
        out: list[tuple[bytes, Address]] = []
        seen: list[int] = []
        deadline = time.monotonic() + 5
        while len(out) < 13 and time.monotonic() < deadline:
            if receiver.receive(out, 1024, seen):
                time.sleep(0.001)
    assert [d for d, _ in out] == [d for _, batch in plan for d in batch]
    assert seen == [cp for cp, batch in plan for _ in batch]


@needs_ecn
async def test_endpoint_hands_each_datagram_its_codepoint(routes_to_fakes: None) -> None:
    endpoint = Endpoint(udp_socket())
    arrivals = Arrivals(3)
    conn = FakeConnection(arrivals)
    cid = b"\x03" * pk.CID_LEN
    endpoint.connections[cid] = conn  # type: ignore[assignment]
    with udp_socket() as sender_sock:
        sender = Endpoint(sender_sock)
        for index, codepoint in enumerate((0b10, 0b00, 0b11)):
            sender.send(data_packet(cid, index, 200), endpoint.local_address, codepoint)
        await receive_until(endpoint, arrivals.done)
    assert conn.core.codepoints == [0b10, 0b00, 0b11]


def test_seamless_no_ecn_leaves_the_socket_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_ECN_ENV, "1")
    with udp_socket() as sender_sock, udp_socket() as receiver_sock:
        sender, receiver = BatchSocket(sender_sock), BatchSocket(receiver_sock)
        assert not sender.ecn and not receiver.ecn
        assert sender_sock.getsockopt(socket.IPPROTO_IP, IP_TOS) == 0
        sender.send([(b"hello", receiver_sock.getsockname())], 0, 0b10)  # asked to mark: cannot
        out: list[tuple[bytes, Address]] = []
        seen: list[int] = []
        deadline = time.monotonic() + 5
        while not out and time.monotonic() < deadline:
            receiver.receive(out, 8, seen)
    assert out[0][0] == b"hello" and seen == [0]


@needs_ecn
async def test_connections_over_loopback_validate_ecn() -> None:
    """Real sockets: the client's packets leave ECT(0), the server counts them, both validate."""
    async with running_server(echo_handler) as listener:
        with trio.fail_after(30):
            async with seam.connect("127.0.0.1", listener.port, server_keys=SERVER_IDENTITY.public) as conn:
                stream = await conn.open_stream()
                await stream.send_all(os.urandom(300_000))
                await stream.send_eof()
                while await stream.receive_some():
                    pass
                stats = conn.stats()
    assert stats.ecn_state == "capable" and stats.ecn_failure == ""
    assert stats.ecn_ect0_received > 0  # the server's packets arrived ECT(0) too


async def echo_handler(conn: seam.SeamConnection) -> None:
    stream = await conn.accept_stream()
    while chunk := await stream.receive_some(1 << 16):
        await stream.send_all(chunk)
    await stream.aclose()
    # Returning closes the connection at once, which could overtake the echo still in
    # flight: the client ends it once it has read everything.
    await conn.wait_closed()
