"""One UDP socket shared by every connection on it, demultiplexed by connection ID.

The hot path avoids a trio round-trip per datagram: the receive task drains
the non-blocking socket in batches after one ``wait_readable``, and sends are
attempted synchronously, falling back to a bounded backlog that a second task
flushes when the kernel buffer is full.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from seam import packet as pk

if TYPE_CHECKING:
    from seam._trio.connection import SeamConnection

logger = logging.getLogger("seam.endpoint")

Address = tuple[str, int]
RECEIVE_BATCH = 256  # datagrams handled per wake-up before yielding to other tasks
SEND_BACKLOG = 8192  # datagrams queued while the kernel send buffer is full
SOCKET_BUFFER = 4 * 1024 * 1024  # bytes requested for SO_RCVBUF / SO_SNDBUF
MAX_UDP_PAYLOAD = 65535


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
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


class Endpoint:
    """Owns a UDP socket; routes datagrams to connections by destination CID.

    ``on_unknown`` handles datagrams for CIDs we do not know (the server's
    admission gate); a client endpoint simply drops them.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        on_unknown: Callable[[bytes, Address, float], None] | None = None,
    ) -> None:
        self.sock = sock
        self.connections: dict[bytes, SeamConnection] = {}
        self._on_unknown = on_unknown
        self._backlog: deque[tuple[bytes, Address]] = deque()
        self._backlog_ready = trio.Event()
        self.dropped: dict[str, int] = {}
        self.datagrams_received = 0
        self.datagrams_sent = 0
        self.closed = False

    @property
    def local_address(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def count_drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def send(self, datagram: bytes, addr: Address) -> None:
        """Send now if the kernel takes it, else queue for the flush task."""
        if self.closed:
            return
        if self._backlog:
            self._queue(datagram, addr)
            return
        try:
            self.sock.sendto(datagram, addr)
            self.datagrams_sent += 1
        except BlockingIOError:
            self._queue(datagram, addr)
        except OSError as exc:
            # An unreachable peer or a closed interface: the datagram is lost,
            # which loss recovery already handles.
            self.count_drop(f"send-error-{errno.errorcode.get(exc.errno or 0, 'unknown')}")

    def _queue(self, datagram: bytes, addr: Address) -> None:
        if len(self._backlog) >= SEND_BACKLOG:
            self.count_drop("send-backlog-full")
            return
        self._backlog.append((datagram, addr))
        self._backlog_ready.set()

    async def flush_loop(self) -> None:
        """Drain the send backlog whenever the socket becomes writable."""
        while True:
            await self._backlog_ready.wait()
            self._backlog_ready = trio.Event()
            while self._backlog:
                await trio.lowlevel.wait_writable(self.sock)
                while self._backlog:
                    datagram, addr = self._backlog[0]
                    try:
                        self.sock.sendto(datagram, addr)
                        self.datagrams_sent += 1
                    except BlockingIOError:
                        break
                    except OSError:
                        self.count_drop("send-error")
                    self._backlog.popleft()

    async def receive_loop(self) -> None:
        """Read datagrams in batches and hand each to its connection."""
        sock = self.sock
        connections = self.connections
        while True:
            await trio.lowlevel.wait_readable(sock)
            now = trio.current_time()
            touched: dict[int, SeamConnection] = {}
            for _ in range(RECEIVE_BATCH):
                try:
                    data, addr = sock.recvfrom(MAX_UDP_PAYLOAD)
                except BlockingIOError:
                    break
                except OSError:
                    self.count_drop("receive-error")
                    continue
                self.datagrams_received += 1
                addr = (addr[0], addr[1])
                cid = pk.destination_cid(data)
                conn = connections.get(cid) if cid is not None else None
                if conn is not None:
                    conn.core.receive_datagram(data, addr, now)
                    touched[id(conn)] = conn
                elif self._on_unknown is not None:
                    try:
                        self._on_unknown(data, addr, now)
                    except Exception:  # a bug of ours must not stop every connection on this socket
                        logger.exception("internal error admitting a datagram from %s", addr)
                        self.count_drop("internal-error")
                else:
                    self.count_drop("unknown-cid")
            for conn in touched.values():
                conn.pump()
            await trio.lowlevel.checkpoint()

    def close(self) -> None:
        self.closed = True
        self.sock.close()
