"""Deterministic in-memory harness for the sans-IO core.

``Pair`` holds a client :class:`Connection`, the server's :class:`Admission`
gate and, once admitted, the server :class:`Connection`, joined by a
:class:`LossyNetwork` that delays, drops, duplicates, reorders and corrupts
datagrams from a seeded ``random.Random``. Datagrams carry the IP ECN
codepoint their sender asked for (``Connection.ecn_codepoint``), which the
network may CE-mark at its bottleneck or bleach. Time only moves when ``Pair.run``
advances it to the next delivery or timer, so a test of minutes of protocol
time runs in milliseconds and gives the same result every time.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from seam import packet as pk
from seam.admission import Admission
from seam.config import SeamConfig
from seam.connection import Address, Connection
from seam.events import Event, StreamDataReceived
from seam.identity import Identity

CLIENT_ADDRESS: Address = ("127.0.0.1", 40001)
SERVER_ADDRESS: Address = ("127.0.0.1", 4443)

_SERVER_IDENTITY: Identity | None = None
_CLIENT_IDENTITY: Identity | None = None


def shared_identities() -> tuple[Identity, Identity]:
    """A (server, client) identity pair generated once per process, to keep tests fast."""
    global _SERVER_IDENTITY, _CLIENT_IDENTITY
    if _SERVER_IDENTITY is None or _CLIENT_IDENTITY is None:
        _SERVER_IDENTITY = Identity.generate()
        _CLIENT_IDENTITY = Identity.generate()
    return _SERVER_IDENTITY, _CLIENT_IDENTITY


@dataclass
class LossyNetwork:
    """A one-hop network with seeded impairments, applied per datagram and direction."""

    seed: int = 0
    delay: float = 0.01  # seconds, one way
    jitter: float = 0.0  # seconds of uniform extra delay (reorders packets)
    loss: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    reorder: float = 0.0  # probability of an extra delay of 2x ``delay``
    rate: float | None = None  # bytes/s per direction; None for no bandwidth limit
    queue: int = 256 * 1024  # bytes a direction's drop-tail bottleneck queue holds
    blackouts: list[tuple[float, float]] = field(default_factory=list)  # [start, end) drop all
    mtu: int | None = None  # bytes of UDP payload; bigger datagrams are dropped (DF set, no ICMP)
    # ECN (docs/protocol.md 7.6): with a ``rate``, an ECT datagram arriving when the queue holds more
    # than this many bytes is marked CE instead (a step-marking AQM; the queue still drops when full).
    ecn_mark_above: int | None = None
    ecn_bleach: bool = False  # clear the ECN field of every datagram, as a misbehaving middlebox does
    rng: random.Random = field(init=False)
    delivered: int = 0
    dropped: int = 0
    ce_marked: int = 0
    _free_at: dict[str, float] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def impair(
        self, datagram: bytes, now: float, towards: str = "", ecn: int = 0
    ) -> list[tuple[float, bytes, int]]:
        """What becomes of one datagram sent with ECN codepoint ``ecn``: zero or more
        (arrival time, bytes, codepoint).

        With a ``rate``, each direction is one FIFO bottleneck: a datagram leaves it
        once those queued before it have, and is dropped if the queue is full.
        """
        if self.ecn_bleach:
            ecn = 0
        rng = self.rng
        if (
            any(start <= now < end for start, end in self.blackouts)
            or (self.mtu is not None and len(datagram) > self.mtu)
            or rng.random() < self.loss
        ):
            self.dropped += 1
            return []
        if self.rate is not None:
            free_at = max(self._free_at.get(towards, now), now)
            backlog = (free_at - now) * self.rate
            if backlog + len(datagram) > self.queue:
                self.dropped += 1
                return []
            if ecn and self.ecn_mark_above is not None and backlog > self.ecn_mark_above:
                ecn = 3  # CE, RFC 3168 section 5
                self.ce_marked += 1
            free_at += len(datagram) / self.rate
            self._free_at[towards] = free_at
            now = free_at
        copies = 2 if rng.random() < self.duplicate else 1
        out = []
        for _ in range(copies):
            data = datagram
            if rng.random() < self.corrupt and data:
                index = rng.randrange(len(data))
                data = data[:index] + bytes((data[index] ^ (1 + rng.randrange(255)),)) + data[index + 1 :]
            arrival = now + self.delay + rng.random() * self.jitter
            if rng.random() < self.reorder:
                arrival += 2 * self.delay
            out.append((arrival, data, ecn))
        return out


class Pair:
    """A client and server core joined by a :class:`LossyNetwork`."""

    def __init__(
        self,
        *,
        network: LossyNetwork | None = None,
        config: SeamConfig | None = None,
        server_config: SeamConfig | None = None,
        server_identity: Identity | None = None,
        client_identity: Identity | None = None,
        pinned: Identity | None = None,
        now: float = 0.0,
    ) -> None:
        default_server, default_client = shared_identities()
        self.server_identity = server_identity or default_server
        self.client_identity = client_identity or default_client
        self.config = config or SeamConfig()
        self.network = network or LossyNetwork()
        self.now = now
        self.admission = Admission(self.server_identity, server_config or self.config, cookie_key=bytes(32))
        self.client = Connection.connect(
            identity=self.client_identity,
            server_keys=(pinned or self.server_identity).public,
            peer_address=SERVER_ADDRESS,
            config=self.config,
            now=now,
        )
        self.servers: dict[bytes, Connection] = {}  # by CID, as a real endpoint keeps them
        self.client_address = CLIENT_ADDRESS
        self._queue: list[tuple[float, int, str, bytes, Address, int]] = []  # ..., ECN codepoint
        self._seq = 0
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []
        self.tap: Callable[[str, bytes], bytes | None] | None = None

    @property
    def server(self) -> Connection | None:
        """The server connection that completed the handshake, else the newest one."""
        for conn in self.servers.values():
            if conn.is_established:
                return conn
        return next(reversed(self.servers.values()), None)

    # ---------------------------------------------------------------- plumbing

    def _enqueue(
        self, towards: str, datagrams: list[tuple[bytes, Address]], source: Address, ecn: int = 0
    ) -> None:
        for datagram, _ in datagrams:
            if self.tap is not None:
                tapped = self.tap(towards, datagram)
                if tapped is None:
                    continue
                datagram = tapped
            for arrival, data, codepoint in self.network.impair(datagram, self.now, towards, ecn):
                self._seq += 1
                heapq.heappush(self._queue, (arrival, self._seq, towards, data, source, codepoint))

    def inject(
        self, towards: str, datagram: bytes, source: Address | None = None, delay: float = 0.0
    ) -> None:
        """Deliver a datagram of the test's making after ``delay`` seconds (no impairment)."""
        self._seq += 1
        src = source or (self.client_address if towards == "server" else SERVER_ADDRESS)
        heapq.heappush(self._queue, (self.now + delay, self._seq, towards, datagram, src, 0))

    def flush(self) -> None:
        """Collect every datagram both sides want to send now."""
        client = self.client
        self._enqueue("server", client.datagrams_to_send(self.now), self.client_address, client.ecn_codepoint)
        for server in self.servers.values():
            out = server.datagrams_to_send(self.now)
            self._enqueue("client", out, SERVER_ADDRESS, server.ecn_codepoint)
            self.server_events.extend(server.events())
        self.client_events.extend(self.client.events())

    def _deliver(self, towards: str, data: bytes, source: Address, ecn: int) -> None:
        self.network.delivered += 1
        if towards == "client":
            self.client.receive_datagram(data, source, self.now, ecn=ecn)
            return
        cid = pk.destination_cid(data)
        server = self.servers.get(cid) if cid is not None else None
        if server is not None:
            server.receive_datagram(data, source, self.now, ecn=ecn)
            return
        replies, conn = self.admission.receive_datagram(data, source, self.now)
        self._enqueue("client", replies, SERVER_ADDRESS)
        if conn is not None:
            self.servers[conn.local_cid] = conn

    def step(self) -> bool:
        """Advance to the next delivery or timer; returns False when nothing is left to do."""
        self.flush()
        candidates = []
        if self._queue:
            candidates.append(self._queue[0][0])
        for conn in (self.client, *self.servers.values()):
            timer = conn.get_timer()
            if timer is not None:
                candidates.append(timer)
        if not candidates:
            return False
        self.now = max(self.now, min(candidates))
        while self._queue and self._queue[0][0] <= self.now:
            _, _, towards, data, source, ecn = heapq.heappop(self._queue)
            self._deliver(towards, data, source, ecn)
        for conn in (self.client, *self.servers.values()):
            timer = conn.get_timer()
            if timer is not None and timer <= self.now:
                conn.handle_timer(self.now)
        for cid in [cid for cid, conn in self.servers.items() if conn.is_closed and conn is not self.server]:
            del self.servers[cid]
        self.flush()
        return True

    def run(self, until: Callable[[], bool], *, max_time: float = 120.0, max_steps: int = 2_000_000) -> bool:
        """Step until ``until()`` holds; False if time or steps ran out first."""
        deadline = self.now + max_time
        for _ in range(max_steps):
            if until():
                return True
            if self.now > deadline or not self.step():
                return until()
        return until()

    def handshake(self) -> None:
        """Run until both sides are established (raises AssertionError otherwise)."""
        ok = self.run(
            lambda: self.server is not None and self.server.is_established and self.client.is_established
        )
        assert ok, (
            f"handshake did not finish: client={self.client.state} server={self.server and self.server.state}"
        )


def transfer(pair: Pair, payloads: dict[int, bytes], *, max_time: float = 600.0) -> dict[int, bytes]:
    """Send ``payloads`` (index -> bytes) on fresh client streams; return what the server read.

    The server side consumes data as it arrives, as an application would.
    """
    assert pair.server is not None
    client, server = pair.client, pair.server
    ids = {index: client.open_stream() for index in payloads}
    offsets = dict.fromkeys(payloads, 0)
    received: dict[int, bytearray] = {}
    finished: set[int] = set()

    def feed() -> None:
        for index, data in payloads.items():
            sid = ids[index]
            sent = offsets[index]
            if sent > len(data):
                continue
            room = client.stream_send_capacity(sid)
            if room <= 0 and sent < len(data):
                continue
            chunk = data[sent : sent + room]
            end = sent + len(chunk) >= len(data)
            client.send_stream_data(sid, chunk, end_stream=end)
            offsets[index] = sent + len(chunk) + (1 if end else 0)

    cursor = len(pair.server_events)  # events of earlier transfers are not ours

    def consume() -> None:
        nonlocal cursor
        pair.server_events.extend(server.events())
        while cursor < len(pair.server_events):
            event = pair.server_events[cursor]
            cursor += 1
            if isinstance(event, StreamDataReceived):
                received.setdefault(event.stream_id, bytearray()).extend(event.data)
                server.stream_data_consumed(event.stream_id, len(event.data))
                if event.end_stream:
                    finished.add(event.stream_id)

    def done() -> bool:
        feed()
        consume()
        return len(finished) == len(payloads) or client.is_closed or server.is_closed

    pair.run(done, max_time=max_time)
    by_id = {sid: index for index, sid in ids.items()}
    return {by_id[sid]: bytes(data) for sid, data in received.items() if sid in finished and sid in by_id}
