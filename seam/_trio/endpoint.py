"""One UDP socket shared by every connection on it, demultiplexed by connection ID.

The hot path avoids a trio round-trip per datagram. The receive task waits
once with ``wait_readable``, drains the non-blocking socket into a batch
(GRO may hand over many datagrams per system call), gives every datagram to
its connection's core, and only then pumps each connection it touched, once.
Sends are attempted synchronously, a connection's whole output at a time,
grouped for GSO (see ``udp_batch``); what the kernel cannot take yet goes to
a bounded backlog that a second task flushes when the socket is writable.
Each send carries the ECN codepoint its connection asked for, and each
received datagram's codepoint goes to its connection (docs/protocol.md 7.6).
"""

from __future__ import annotations

import itertools
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from seam._trio.routing import route_datagrams
from seam._trio.udp_batch import BatchSocket, Offload, set_dont_fragment

if TYPE_CHECKING:
    from seam._trio.connection import SeamConnection

Address = tuple[str, int]
RECEIVE_BATCH = 256  # datagrams handled per wake-up before yielding to other tasks
SEND_BACKLOG = 8192  # datagrams queued while the kernel send buffer is full
FLUSH_CHUNK = 256  # backlog datagrams offered to the kernel per attempt
SOCKET_BUFFER = 4 * 1024 * 1024  # bytes requested for SO_RCVBUF / SO_SNDBUF


def open_udp_socket(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``host:port`` (port 0 picks a free one)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
            except OSError:
                pass
        set_dont_fragment(sock, family)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


class Endpoint:
    """Owns a UDP socket; routes datagrams to connections by destination CID.

    ``on_unknown`` handles datagrams for CIDs we do not know (the server's
    admission gate); a client endpoint simply drops them. ``offload=False``
    (or ``SEAMLESS_NO_GSO=1``) keeps to plain ``sendto``/``recvfrom``;
    ``ecn=False`` (or ``SEAMLESS_NO_ECN=1``) neither sets nor reads codepoints.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        on_unknown: Callable[[bytes, Address, float], None] | None = None,
        offload: bool = True,
        ecn: bool = True,
    ) -> None:
        self.sock = sock
        self.connections: dict[bytes, SeamConnection] = {}
        self._on_unknown = on_unknown
        self._backlog: deque[tuple[bytes, Address, int]] = deque()  # ..., ECN codepoint
        self._backlog_ready = trio.Event()
        self.dropped: dict[str, int] = {}
        self._io = BatchSocket(sock, offload=offload, ecn=ecn, count_drop=self.count_drop)
        self.closed = False

    @property
    def local_address(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return host, port

    @property
    def offload(self) -> Offload:
        """Whether GSO and GRO are in use on this socket (GSO may turn off at run time)."""
        return self._io.offload

    @property
    def ecn(self) -> bool:
        """Whether this socket sets and reads ECN codepoints."""
        return self._io.ecn

    @property
    def datagrams_received(self) -> int:
        return self._io.datagrams_received

    @property
    def datagrams_sent(self) -> int:
        return self._io.datagrams_sent

    def count_drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def send(self, datagram: bytes, addr: Address, ecn: int = 0) -> None:
        """Send one datagram now if the kernel takes it, else queue it for the flush task."""
        self.send_batch(((datagram, addr),), ecn)

    def send_batch(self, datagrams: Sequence[tuple[bytes, Address]], ecn: int = 0) -> None:
        """Send datagrams in order with ECN codepoint ``ecn``, GSO-grouped; what the kernel cannot
        take yet is queued."""
        if self.closed or not datagrams:
            return
        if self._backlog:
            self._queue(datagrams, 0, ecn)  # behind what is already waiting, to keep the order
            return
        sent = self._io.send(datagrams, 0, ecn)
        if sent < len(datagrams):
            self._queue(datagrams, sent, ecn)

    def _queue(self, datagrams: Sequence[tuple[bytes, Address]], start: int, ecn: int) -> None:
        room = SEND_BACKLOG - len(self._backlog)
        end = len(datagrams)
        if end - start > room:
            for _ in range(end - start - max(room, 0)):
                self.count_drop("send-backlog-full")
            end = start + max(room, 0)
        if end > start:
            self._backlog.extend((data, addr, ecn) for data, addr in itertools.islice(datagrams, start, end))
            self._backlog_ready.set()

    async def flush_loop(self) -> None:
        """Drain the send backlog whenever the socket becomes writable."""
        backlog = self._backlog
        while True:
            await self._backlog_ready.wait()
            self._backlog_ready = trio.Event()
            while backlog:
                await trio.lowlevel.wait_writable(self.sock)
                while backlog:
                    ecn = backlog[0][2]  # a chunk is a run of datagrams with one codepoint
                    chunk: list[tuple[bytes, Address]] = []
                    for data, addr, codepoint in itertools.islice(backlog, FLUSH_CHUNK):
                        if codepoint != ecn:
                            break
                        chunk.append((data, addr))
                    sent = self._io.send(chunk, 0, ecn)
                    for _ in range(sent):
                        backlog.popleft()
                    if sent < len(chunk):
                        break  # the kernel buffer is full again

    async def receive_loop(self) -> None:
        """Read datagrams in batches, hand each to its connection (``routing``), then pump each
        connection once."""
        io = self._io
        connections = self.connections
        batch: list[tuple[bytes, Address]] = []
        codepoints: list[int] = []  # in step with batch
        drained = True
        while True:
            if drained:
                await trio.lowlevel.wait_readable(self.sock)
            else:
                await trio.lowlevel.checkpoint()  # the batch was full: let other tasks run first
            drained = io.receive(batch, RECEIVE_BATCH, codepoints)
            if not batch:
                continue
            touched = route_datagrams(
                batch, codepoints, connections, trio.current_time(), self._on_unknown, self.count_drop
            )
            batch.clear()
            codepoints.clear()
            for conn in touched:
                conn.pump()

    def close(self) -> None:
        self.closed = True
        self.sock.close()
