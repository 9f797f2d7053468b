"""``SeamConnection``, ``SeamListener``, ``connect``, ``listen`` and ``serve``.

Every connection runs one timer task in a nursery that the connection owns
(nested in the listener's or ``connect``'s nursery). After any input -- a
datagram batch, a timer, an API call -- ``pump`` runs the one transmit step:
drain the core's events, send its datagrams, re-arm its single deadline.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from seam._trio._util import unwrap_single_exception
from seam._trio.endpoint import Address, Endpoint, open_udp_socket
from seam._trio.stream import SeamStream
from seam.admission import Admission
from seam.config import SeamConfig
from seam.connection import Connection, ConnectionStats
from seam.errors import ConnectionClosed, ErrorCode, HandshakeError, LocalProtocolError
from seam.events import (
    ConnectionTerminated,
    DatagramReceived,
    HandshakeCompleted,
    PathMigrated,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)
from seam.identity import Identity, PublicKeys

logger = logging.getLogger("seam")

ACCEPT_BACKLOG = 1024  # established connections waiting for ``accept``


class SeamConnection:
    """An established Seam connection: streams, datagrams, statistics.

    After ``aclose`` (or the peer closing, or the idle timeout) every
    pending and future operation raises :class:`ConnectionClosed`, or
    ``BrokenResourceError`` on its streams.
    """

    def __init__(self, core: Connection, endpoint: Endpoint) -> None:
        self.core = core
        self._endpoint = endpoint
        self._streams: dict[int, SeamStream] = {}
        self._highest_peer_stream = -1
        self._incoming: deque[SeamStream] = deque()
        self._incoming_ready = trio.Event()
        self._datagrams: deque[bytes] = deque()
        self._datagram_ready = trio.Event()
        self._stream_slot = trio.lowlevel.ParkingLot()
        self._blocked_senders: set[SeamStream] = set()
        self._timer_changed = trio.Event()
        self._pump_wanted = False  # pump_soon asked the timer task for a transmit step
        self._armed: float | None = None
        self.established = trio.Event()
        self.terminated = trio.Event()
        self._closed: ConnectionClosed | None = None
        self._handshake_error: HandshakeError | None = None
        self._on_established: Callable[[SeamConnection], None] | None = None
        self._nursery: trio.Nursery | None = None
        if not endpoint.ecn:
            core.disable_ecn("the socket cannot set ECN codepoints")
        endpoint.connections[core.local_cid] = self

    # ------------------------------------------------------------ properties

    @property
    def remote_address(self) -> Address:
        return self.core.peer_address

    @property
    def local_address(self) -> Address:
        return self._endpoint.local_address

    @property
    def peer_public_key(self) -> bytes | None:
        """The peer's static X25519 key, which identifies a client across reconnects."""
        return self.core.peer_x25519

    def stats(self) -> ConnectionStats:
        stats = self.core.stats()
        for reason, count in self._endpoint.dropped.items():
            stats.dropped[f"endpoint-{reason}"] = count
        return stats

    # -------------------------------------------------------------- the pump

    def pump(self) -> None:
        """The one transmit step: events, then datagrams, then the timer."""
        self._pump_wanted = False
        core = self.core
        if core._events:
            self._handle_events()
        if self._blocked_senders:
            # Acknowledgements free send-buffer space without any event.
            blocked = self._blocked_senders
            self._blocked_senders = set()
            for stream in blocked:
                stream._capacity_changed()
        datagrams = core.datagrams_to_send(trio.current_time())
        self._endpoint.send_batch(datagrams, core.ecn_codepoint)  # the codepoint of this very batch
        if core._events:  # closing may have produced ConnectionTerminated
            self._handle_events()
        deadline = core.get_timer()
        if deadline != self._armed and (self._armed is None or deadline is None or deadline < self._armed):
            self._timer_changed.set()

    def pump_soon(self) -> None:
        """Run the transmit step once the tasks running now have yielded, in the timer task.

        Used after application writes: everything the running tasks write
        before they next wait (a request head and its EOF, many streams'
        small writes) goes out in one ``datagrams_to_send``, sharing packets,
        rather than one packet and one system call per write.
        """
        if not self._pump_wanted:
            self._pump_wanted = True
            self._timer_changed.set()

    def _handle_events(self) -> None:
        core = self.core
        while core._events:
            event = core._events.popleft()
            if isinstance(event, StreamDataReceived):
                stream = self._stream_for_event(event.stream_id)
                if stream is not None:
                    stream._deliver(event.data, event.end_stream)
                else:
                    core.stream_data_consumed(event.stream_id, len(event.data))
            elif isinstance(event, DatagramReceived):
                if len(self._datagrams) >= core.config.datagram_queue_size:
                    self._datagrams.popleft()
                    core.count_drop("datagram-receive-queue-full")
                self._datagrams.append(event.data)
                self._datagram_ready.set()
            elif isinstance(event, StreamReset):
                stream = self._stream_for_event(event.stream_id)
                if stream is not None:
                    stream._peer_reset(event.error_code)
            elif isinstance(event, StopSendingReceived):
                stream = self._stream_for_event(event.stream_id)
                if stream is not None:
                    stream._peer_stop_sending(event.error_code)
            elif isinstance(event, HandshakeCompleted):
                self.established.set()
                if self._on_established is not None:
                    self._on_established(self)
            elif isinstance(event, PathMigrated):
                logger.info("peer moved to %s:%d", *event.address)
            elif isinstance(event, ConnectionTerminated):
                self._on_terminated(event)
        self._stream_slot.unpark_all()

    def _stream_for_event(self, stream_id: int) -> SeamStream | None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream
        peer_bit = 1 if self.core.is_client else 0
        if stream_id & 1 != peer_bit or (stream_id >> 1) <= self._highest_peer_stream:
            return None  # ours and closed, or theirs and already closed
        # New peer streams (and any it skipped) become acceptable.
        for index in range(self._highest_peer_stream + 1, (stream_id >> 1) + 1):
            new = SeamStream(self, index * 2 + peer_bit)
            self._streams[new.stream_id] = new
            self._incoming.append(new)
        self._highest_peer_stream = stream_id >> 1
        self._incoming_ready.set()
        return self._streams[stream_id]

    def _on_terminated(self, event: ConnectionTerminated) -> None:
        if event.handshake_failure is not None:
            self._handshake_error = HandshakeError(event.reason, reason=event.handshake_failure)
        self._closed = ConnectionClosed(event.reason, code=event.error_code, by_peer=event.by_peer)
        if event.by_peer:
            logger.info("connection closed by peer: %s", event.reason)
        for stream in self._streams.values():
            stream._connection_lost(self._closed)
        self._endpoint.connections.pop(self.core.local_cid, None)
        self._incoming_ready.set()
        self._datagram_ready.set()
        self._stream_slot.unpark_all()
        self.terminated.set()
        self._timer_changed.set()

    def _consumed(self, stream_id: int, nbytes: int) -> None:
        if self.core.stream_data_consumed(stream_id, nbytes, trio.current_time()):
            self.pump_soon()  # the window update goes before the next packet, with what else is due

    def _stream_closed(self, stream: SeamStream) -> None:
        self._streams.pop(stream.stream_id, None)

    # ------------------------------------------------------------- timer task

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive the connection's timers until it terminates. Owns the connection's nursery."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while not self.terminated.is_set():
                deadline = self.core.get_timer()
                self._armed = deadline
                with trio.move_on_at(deadline if deadline is not None else math.inf):
                    await self._timer_changed.wait()
                self._timer_changed = trio.Event()
                now = trio.current_time()
                if deadline is not None and now >= deadline:
                    self.core.handle_timer(now)
                self.pump()
            nursery.cancel_scope.cancel()

    # ---------------------------------------------------------------- the API

    def _raise_if_closed(self) -> None:
        if self._closed is not None:
            raise self._closed

    async def open_stream(self) -> SeamStream:
        """Open a new stream; waits while the peer's concurrent-stream limit is reached."""
        await trio.lowlevel.checkpoint()
        while True:
            self._raise_if_closed()
            if self.core.can_open_stream():
                break
            await self._stream_slot.park()
        stream = SeamStream(self, self.core.open_stream())
        self._streams[stream.stream_id] = stream
        return stream

    async def accept_stream(self) -> SeamStream:
        """Wait for the peer to open a stream."""
        await trio.lowlevel.checkpoint()
        while not self._incoming:
            self._raise_if_closed()
            self._incoming_ready = trio.Event()
            await self._incoming_ready.wait()
        return self._incoming.popleft()

    async def send_datagram(self, data: bytes) -> None:
        """Send an unreliable datagram (dropped, not queued without bound, under congestion)."""
        await trio.lowlevel.checkpoint()
        self._raise_if_closed()
        try:
            self.core.send_datagram(bytes(data))
        except LocalProtocolError as exc:
            raise ValueError(str(exc)) from None
        self.pump_soon()

    @property
    def max_datagram_size(self) -> int:
        return self.core.max_datagram_payload

    async def receive_datagram(self) -> bytes:
        await trio.lowlevel.checkpoint()
        while not self._datagrams:
            self._raise_if_closed()
            self._datagram_ready = trio.Event()
            await self._datagram_ready.wait()
        return self._datagrams.popleft()

    async def aclose(self, error_code: int = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Close with a CLOSE frame the peer receives at once; frees every stream."""
        if not self.terminated.is_set():
            if self._pump_wanted:
                self.pump()  # what was written (an EOF, say) leaves before the CLOSE
            self.core.close(error_code, reason)
            self.pump()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        self._endpoint.connections.pop(self.core.local_cid, None)
        await trio.lowlevel.checkpoint()

    async def wait_closed(self) -> ConnectionClosed:
        await self.terminated.wait()
        assert self._closed is not None
        return self._closed


# --------------------------------------------------------------------- client


@asynccontextmanager
async def connect(
    host: str,
    port: int,
    *,
    server_keys: PublicKeys,
    identity: Identity | None = None,
    config: SeamConfig | None = None,
    cipher: str | None = None,
    congestion: str | None = None,
    local_host: str | None = None,
) -> AsyncIterator[SeamConnection]:
    """Connect to a Seam server whose keys are pinned in ``server_keys``.

    Raises :class:`HandshakeError` if the server presents other keys
    (``reason="authentication"``) or does not answer within the handshake
    timeout (``reason="timeout"``).
    """
    config = config or SeamConfig()
    overrides: dict[str, Any] = {}
    if cipher is not None:
        overrides["cipher"] = cipher
    if congestion is not None:
        overrides["congestion"] = congestion
    if overrides:
        config = SeamConfig.model_validate({**config.model_dump(), **overrides})
    identity = identity or Identity.generate()
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    peer: Address = (str(sockaddr[0]), int(sockaddr[1]))
    bind_host = local_host or ("::" if family == trio.socket.AF_INET6 else "0.0.0.0")
    endpoint = Endpoint(open_udp_socket(bind_host, 0))
    failure: HandshakeError | None = None
    try:
        with unwrap_single_exception():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(endpoint.receive_loop)
                nursery.start_soon(endpoint.flush_loop)
                core = Connection.connect(
                    identity=identity,
                    server_keys=server_keys,
                    peer_address=peer,
                    config=config,
                    now=trio.current_time(),
                )
                conn = SeamConnection(core, endpoint)
                await nursery.start(conn.run)
                conn.pump()
                await _first_of(conn.established, conn.terminated)
                if conn.established.is_set():
                    try:
                        yield conn
                    finally:
                        with trio.CancelScope(shield=True):
                            await conn.aclose()
                else:
                    failure = conn._handshake_error or HandshakeError("handshake failed", reason="refused")
                nursery.cancel_scope.cancel()
    finally:
        endpoint.close()
    if failure is not None:
        raise failure


async def _first_of(*events: trio.Event) -> None:
    """Wait until any of ``events`` is set."""
    async with trio.open_nursery() as waiters:

        async def wait_one(event: trio.Event) -> None:
            await event.wait()
            waiters.cancel_scope.cancel()

        for event in events:
            waiters.start_soon(wait_one, event)


# --------------------------------------------------------------------- server


class SeamListener:
    """A bound UDP port accepting Seam connections; ``port`` works with port 0."""

    def __init__(self, endpoint: Endpoint, admission: Admission, nursery: trio.Nursery) -> None:
        self._endpoint = endpoint
        self._admission = admission
        self._nursery = nursery
        self._ready: deque[SeamConnection] = deque()
        self._ready_event = trio.Event()
        self._closed = False

    @property
    def port(self) -> int:
        return self._endpoint.local_address[1]

    @property
    def address(self) -> Address:
        return self._endpoint.local_address

    @property
    def connections(self) -> int:
        return len(self._endpoint.connections)

    def stats(self) -> dict[str, int]:
        """Endpoint-level drop counters (unknown CIDs, bad cookies, refused handshakes)."""
        counters = {f"endpoint-{k}": v for k, v in self._endpoint.dropped.items()}
        counters.update({f"admission-{k}": v for k, v in self._admission.dropped.items()})
        counters["datagrams_received"] = self._endpoint.datagrams_received
        return counters

    def _handshaking(self) -> int:
        return sum(1 for conn in self._endpoint.connections.values() if not conn.established.is_set())

    def _on_unknown(self, data: bytes, addr: Address, now: float) -> None:
        replies, core = self._admission.receive_datagram(data, addr, now)
        for datagram, to in replies:
            self._endpoint.send(datagram, to)
        if core is None:
            return
        conn = SeamConnection(core, self._endpoint)
        conn._on_established = self._established
        self._nursery.start_soon(conn.run)
        conn.pump()

    def _established(self, conn: SeamConnection) -> None:
        if len(self._ready) >= ACCEPT_BACKLOG or self._closed:
            conn.core.close(ErrorCode.INTERNAL_ERROR, "server busy")
            return
        self._ready.append(conn)
        self._ready_event.set()

    async def accept(self) -> SeamConnection:
        await trio.lowlevel.checkpoint()
        while True:
            while self._ready:
                conn = self._ready.popleft()
                if not conn.terminated.is_set():
                    return conn
            if self._closed:
                raise trio.ClosedResourceError("listener is closed")
            self._ready_event = trio.Event()
            await self._ready_event.wait()


@asynccontextmanager
async def listen(
    host: str,
    port: int,
    *,
    identity: Identity,
    config: SeamConfig | None = None,
) -> AsyncIterator[SeamListener]:
    """Listen for Seam connections on UDP ``host:port``; closing it closes them all."""
    config = config or SeamConfig()
    sock = open_udp_socket(host, port)
    admission = Admission(identity, config)
    endpoint = Endpoint(sock)
    try:
        with unwrap_single_exception():
            async with trio.open_nursery() as nursery:
                listener = SeamListener(endpoint, admission, nursery)
                endpoint._on_unknown = listener._on_unknown
                admission.handshaking = listener._handshaking
                nursery.start_soon(endpoint.receive_loop)
                nursery.start_soon(endpoint.flush_loop)
                try:
                    yield listener
                finally:
                    listener._closed = True
                    listener._ready_event.set()
                    with trio.CancelScope(shield=True):
                        for conn in list(endpoint.connections.values()):
                            await conn.aclose(ErrorCode.NO_ERROR, "server shutting down")
                    nursery.cancel_scope.cancel()
    finally:
        endpoint.close()


async def serve(
    handler: Callable[[SeamConnection], Awaitable[object]],
    host: str,
    port: int,
    *,
    identity: Identity,
    config: SeamConfig | None = None,
    task_status: trio.TaskStatus[SeamListener] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections forever, running ``handler(conn)`` for each in its own task.

    The connection is closed when the handler returns or fails; a failing
    handler is logged and never takes the listener down.
    """
    async with listen(host, port, identity=identity, config=config) as listener:
        async with trio.open_nursery() as nursery:
            task_status.started(listener)
            while True:
                conn = await listener.accept()
                nursery.start_soon(_run_handler, handler, conn)


async def _run_handler(handler: Callable[[SeamConnection], Awaitable[object]], conn: SeamConnection) -> None:
    try:
        await handler(conn)
    except (ConnectionClosed, trio.BrokenResourceError) as exc:
        if isinstance(exc, ConnectionClosed) or isinstance(exc.__cause__, ConnectionClosed):
            logger.debug("connection ended while its handler ran: %s", exc)  # the peer left: normal
        else:
            logger.exception("connection handler failed")
    except Exception:
        logger.exception("connection handler failed")
    finally:
        with trio.CancelScope(shield=True):
            await conn.aclose()
