"""``SeamStream``: one Seam stream as a ``trio.abc.HalfCloseableStream``.

Buffers live here only between the core delivering bytes and the
application reading them; the core's flow-control window is re-opened as
the application reads, so a slow reader slows the sender instead of growing
memory. Errors follow trio's contract: ``ClosedResourceError`` after our
own ``aclose``/``send_eof``, ``BrokenResourceError`` (with the cause
attached) when the peer or the network broke the stream.
"""

from __future__ import annotations

import operator
from collections import deque
from typing import TYPE_CHECKING

import trio

from seam.errors import ConnectionClosed, ErrorCode, StreamReset

if TYPE_CHECKING:
    from seam._trio.connection import SeamConnection

DEFAULT_RECEIVE_SIZE = 65536


class SeamStream(trio.abc.HalfCloseableStream):
    """A reliable, ordered, bidirectional byte stream within a Seam connection."""

    def __init__(self, connection: SeamConnection, stream_id: int) -> None:
        self._conn = connection
        self.stream_id = stream_id
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof_received = False
        self._receive_error: BaseException | None = None
        self._send_error: BaseException | None = None
        self._eof_sent = False
        self._closed = False
        self._readable = trio.Event()
        self._send_lot = trio.lowlevel.ParkingLot()
        self._send_conflict = trio.lowlevel.ParkingLot()
        self._sending = False
        self._receiving = False

    def __repr__(self) -> str:
        return f"<SeamStream id={self.stream_id}>"

    # ------------------------------------------------------ called by the core

    def _deliver(self, data: bytes, end_stream: bool) -> None:
        if self._closed:
            # We stopped reading: let the bytes go so the window keeps moving.
            self._conn._consumed(self.stream_id, len(data))
            return
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
        if end_stream:
            self._eof_received = True
        self._readable.set()

    def _peer_reset(self, code: int) -> None:
        self._receive_error = StreamReset(self.stream_id, code)
        self._readable.set()

    def _peer_stop_sending(self, code: int) -> None:
        self._send_error = StreamReset(self.stream_id, code)
        self._send_lot.unpark_all()

    def _connection_lost(self, exc: ConnectionClosed) -> None:
        if self._receive_error is None and not self._eof_received:
            self._receive_error = exc
        if self._send_error is None:
            self._send_error = exc
        self._readable.set()
        self._send_lot.unpark_all()

    def _capacity_changed(self) -> None:
        self._send_lot.unpark_all()

    # ----------------------------------------------------------------- sending

    def _check_send(self) -> None:
        if self._closed or self._eof_sent:
            raise trio.ClosedResourceError("this stream's send side is closed")
        if self._send_error is not None:
            raise trio.BrokenResourceError(str(self._send_error)) from self._send_error

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            self._check_send()
            view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
            core = self._conn.core
            sent = 0
            total = len(view)
            while sent < total:
                capacity = core.stream_send_capacity(self.stream_id)
                if capacity <= 0:
                    self._conn._blocked_senders.add(self)
                    await self._send_lot.park()
                    self._check_send()
                    continue
                chunk = bytes(view[sent : sent + capacity])
                core.send_stream_data(self.stream_id, chunk)
                sent += len(chunk)
                self._conn.pump_soon()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            self._check_send()
            while self._conn.core.stream_send_capacity(self.stream_id) <= 0:
                self._conn._blocked_senders.add(self)
                await self._send_lot.park()
                self._check_send()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("this stream is closed")
        if self._eof_sent:
            return
        self._eof_sent = True
        if self._send_error is None:
            self._conn.core.send_stream_data(self.stream_id, b"", end_stream=True)
            self._conn.pump_soon()

    # --------------------------------------------------------------- receiving

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)  # TypeError for floats, as trio requires
            if max_bytes < 1:
                raise ValueError("max_bytes must be at least 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint()
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("this stream is closed")
                if self._chunks:
                    return self._take(max_bytes or DEFAULT_RECEIVE_SIZE)
                if self._eof_received:
                    return b""
                if self._receive_error is not None:
                    raise trio.BrokenResourceError(str(self._receive_error)) from self._receive_error
                self._readable = trio.Event()
                await self._readable.wait()
        finally:
            self._receiving = False

    def _take(self, max_bytes: int) -> bytes:
        first = self._chunks[0]
        if len(first) <= max_bytes:
            self._chunks.popleft()
            out = first
            # Coalesce small chunks up to max_bytes to cut per-call overhead.
            if self._chunks and len(out) < max_bytes:
                parts = [out]
                size = len(out)
                while self._chunks and size + len(self._chunks[0]) <= max_bytes:
                    nxt = self._chunks.popleft()
                    parts.append(nxt)
                    size += len(nxt)
                out = b"".join(parts)
        else:
            out = first[:max_bytes]
            self._chunks[0] = first[max_bytes:]
        self._buffered -= len(out)
        self._conn._consumed(self.stream_id, len(out))
        return out

    # ----------------------------------------------------------------- closing

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            core = self._conn.core
            if not core.is_closed:
                if not self._eof_sent and self._send_error is None:
                    self._eof_sent = True
                    core.send_stream_data(self.stream_id, b"", end_stream=True)
                if not self._eof_received and self._receive_error is None:
                    core.stop_sending(self.stream_id, ErrorCode.STREAM_CANCELLED)
                if self._buffered:
                    self._conn._consumed(self.stream_id, self._buffered)
                self._chunks.clear()
                self._buffered = 0
                self._conn.pump_soon()
            self._readable.set()
            self._send_lot.unpark_all()
            self._conn._stream_closed(self)
        await trio.lowlevel.checkpoint()
