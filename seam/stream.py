"""Per-stream send and receive buffers, and connection-level flow control.

Send side: a bytearray whose first byte sits at the lowest unacknowledged
offset; acknowledged prefixes are freed, lost ranges are re-queued (without
the parts acknowledged meanwhile) and sent before new data. Receive side:
out-of-order data is held only where it is new, so duplicates and overlaps
cannot make it grow, and never beyond the advertised window.
"""

from __future__ import annotations

import heapq

from seam.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from seam.rangeset import RangeSet

# A send buffer grows with the congestion window up to this many times its configured size:
# 1 MiB by default, so 16 MiB, the default connection receive window of a peer.
SEND_BUFFER_GROWTH = 16
# Congestion windows a send buffer holds where that is more than its configured size: a
# packet lost again and again pins what was sent after it for a round trip per loss, and two
# windows (Linux's ratio) left the sender idle behind holes under bursty loss (profile (d)).
SEND_BUFFER_WINDOWS = 4


class SendStream:
    """The sending half of a stream."""

    __slots__ = (
        "_acked",
        "_base",
        "_buffer",
        "_buffer_start",
        "_fin_acked",
        "_fin_lost",
        "_fin_requested",
        "_fin_sent",
        "_lost",
        "_written",
        "highest_sent",
        "is_reset",
        "max_buffer",
        "stream_id",
    )

    def __init__(self, stream_id: int, *, max_buffer: int = 1 << 20) -> None:
        self.stream_id = stream_id
        self.max_buffer = max_buffer
        self._buffer = bytearray()
        self._base = 0  # everything below is acknowledged
        self._buffer_start = 0  # offset of _buffer[0]; at most _base (see _release)
        self._written = 0  # offset one past the last byte written
        self.highest_sent = 0  # offset one past the last byte ever sent
        self._acked = RangeSet()  # acknowledged ranges above _base
        self._lost = RangeSet()  # ranges to send again
        self._fin_requested = False
        self._fin_sent = False
        self._fin_lost = False
        self._fin_acked = False
        self.is_reset = False

    @property
    def capacity(self) -> int:
        return self.capacity_for(0)

    def capacity_for(self, congestion_window: int) -> int:
        """Room for new data when the path carries ``congestion_window`` bytes per round trip.

        Everything from the oldest unacknowledged byte counts, so one lost packet
        pins what was sent after it until its retransmission is acknowledged,
        two or three round trips later, and a round trip more each time the
        retransmission is lost too. The buffer therefore grows to
        ``SEND_BUFFER_WINDOWS`` congestion windows where that is more than
        ``max_buffer``, up to ``SEND_BUFFER_GROWTH`` times it.
        """
        grown = SEND_BUFFER_WINDOWS * congestion_window
        limit = min(max(self.max_buffer, grown), SEND_BUFFER_GROWTH * self.max_buffer)
        return max(0, limit - (self._written - self._base))

    @property
    def buffered(self) -> int:
        return self._written - self._base

    def write(self, data: bytes) -> None:
        if self._fin_requested or self.is_reset:
            raise LocalProtocolError(f"stream {self.stream_id} is finished; cannot write")
        self._buffer += data
        self._written += len(data)

    def finish(self) -> None:
        if self.is_reset:
            raise LocalProtocolError(f"stream {self.stream_id} was reset")
        self._fin_requested = True

    @property
    def has_retransmit(self) -> bool:
        return bool(self._lost) or self._fin_lost

    @property
    def has_pending(self) -> bool:
        if self.is_reset:
            return False
        return (
            bool(self._lost)
            or self.highest_sent < self._written
            or (self._fin_requested and (not self._fin_sent or self._fin_lost))
        )

    @property
    def all_acked(self) -> bool:
        return self._fin_requested and self._fin_acked and self._base == self._written

    def next_frame(
        self, max_payload: int, new_data_credit: int
    ) -> tuple[int, bytes | bytearray, bool] | None:
        """The next (offset, data, fin) to send: retransmissions first, then new data.

        ``data`` is a copy (a bytearray slice: a third of the cost of ``bytes`` of a view).
        """
        if self.is_reset or max_payload <= 0:
            return None
        if self._lost:
            start, stop = self._lost.first()
            stop = min(stop, start + max_payload)
            self._lost.subtract(start, stop)
            data = self._buffer[start - self._buffer_start : stop - self._buffer_start]
            fin = self._fin_requested and stop == self._written and stop == self.highest_sent
            if fin:
                self._fin_sent = True
                self._fin_lost = False
            return start, data, fin
        if self.highest_sent < self._written and new_data_credit > 0:
            start = self.highest_sent
            stop = min(self._written, start + max_payload, start + new_data_credit)
            data = self._buffer[start - self._buffer_start : stop - self._buffer_start]
            self.highest_sent = stop
            fin = self._fin_requested and stop == self._written
            if fin:
                self._fin_sent = True
                self._fin_lost = False
            return start, data, fin
        if (
            self._fin_requested
            and self.highest_sent == self._written
            and (not self._fin_sent or self._fin_lost)
        ):
            self._fin_sent = True
            self._fin_lost = False
            return self._written, b"", True
        return None

    def on_acked(self, offset: int, length: int, fin: bool) -> None:
        if fin:
            self._fin_acked = True
            self._fin_lost = False
        if not length or self.is_reset:
            return
        stop = offset + length
        if offset <= self._base < stop and not self._acked and not self._lost:
            # In order, nothing acknowledged beyond it and nothing to resend: the common case.
            self._release(stop)
            return
        self._lost.subtract(offset, stop)
        if stop <= self._base:
            return
        self._acked.add(max(offset, self._base), stop)
        first_start, first_stop = self._acked.first()
        if first_start <= self._base:
            self._acked.pop_smallest()
            self._release(first_stop)

    def _release(self, base: int) -> None:
        """Everything below ``base`` is acknowledged.

        The bytes are dropped once they are half the buffer, not at every ACK: a
        bytearray shrunk at the front copies itself whole when it next grows.
        """
        self._base = base
        dead = base - self._buffer_start
        if dead >= len(self._buffer) >> 1:
            del self._buffer[:dead]
            self._buffer_start = base

    def on_lost(self, offset: int, length: int, fin: bool) -> None:
        if self.is_reset:
            return
        if fin and not self._fin_acked:
            self._fin_lost = True
        start = max(offset, self._base)
        stop = offset + length
        if start >= stop:
            return
        self._lost.add(start, stop)
        for acked_start, acked_stop in list(self._acked):
            if acked_start >= stop:
                break
            self._lost.subtract(acked_start, acked_stop)

    def reset(self, code: int) -> int:
        """Abandon the stream; returns the final size to put in RESET_STREAM."""
        self.is_reset = True
        self._buffer = bytearray()
        self._lost = RangeSet()
        self._acked = RangeSet()
        self._base = self._buffer_start = self._written
        return self.highest_sent


class ReceiveStream:
    """The receiving half of a stream."""

    __slots__ = (
        "_end_reported",
        "_final_size",
        "_have",
        "_last_update",
        "_pending",
        "_ready",
        "consumed",
        "current_max_data",
        "delivered",
        "highest_received",
        "max_window",
        "previous_max_data",
        "reset_code",
        "stream_id",
        "window",
    )

    def __init__(self, stream_id: int, *, window: int = 1 << 20, max_window: int | None = None) -> None:
        self.stream_id = stream_id
        self.window = window
        self.max_window = window if max_window is None else max(window, max_window)  # auto-tuning's cap
        self._last_update = float("-inf")  # when the limit was last raised
        self.current_max_data = window
        self.previous_max_data = 0  # the limit before the last raise
        self.highest_received = 0
        self.delivered = 0  # offset up to which data is contiguous and handed out
        self.consumed = 0  # bytes the application has taken
        self._final_size: int | None = None
        self._pending: list[tuple[int, bytes]] = []  # heap of out-of-order pieces
        self._have = RangeSet()  # ranges held in _pending
        self._ready: list[bytes] = []
        self._end_reported = False
        self.reset_code: int | None = None

    @property
    def is_finished(self) -> bool:
        """All data (up to the FIN) has arrived, or the stream was reset."""
        return self.reset_code is not None or (
            self._final_size is not None and self.delivered == self._final_size
        )

    @property
    def fully_delivered(self) -> bool:
        return self.reset_code is not None or self._end_reported

    def on_frame(self, offset: int, data: bytes, fin: bool) -> bool:
        """Take one STREAM frame. Returns True when the sender stopped at a limit since raised.

        A frame that ends exactly at the previous limit means the sender has used all the
        credit it knew of, so it has not seen the raise: it crossed with the frame, or was
        lost. The caller sends the current limit again rather than leave the sender idle
        until its loss is detected, which with nothing else in flight takes a PTO.
        """
        end = offset + len(data)
        if fin:
            if (self._final_size is not None and self._final_size != end) or end < self.highest_received:
                raise RemoteProtocolError(
                    f"stream {self.stream_id}: conflicting final size", code=ErrorCode.FINAL_SIZE_ERROR
                )
            self._final_size = end
        elif self._final_size is not None and end > self._final_size:
            raise RemoteProtocolError(
                f"stream {self.stream_id}: data beyond the final size", code=ErrorCode.FINAL_SIZE_ERROR
            )
        if end > self.current_max_data:
            raise RemoteProtocolError(
                f"stream {self.stream_id}: peer exceeded the flow-control limit",
                code=ErrorCode.FLOW_CONTROL_ERROR,
            )
        if self.reset_code is not None:
            return False
        stale = end == self.previous_max_data and data != b""
        if end > self.highest_received:
            self.highest_received = end
        if end <= self.delivered:
            return stale
        if offset < self.delivered:
            data = data[self.delivered - offset :]
            offset = self.delivered
        if offset == self.delivered:
            self._ready.append(data)
            self.delivered = end
            self._drain_pending()
            return stale
        self._hold(offset, data)
        return stale

    def _hold(self, offset: int, data: bytes) -> None:
        """Keep only the parts of an out-of-order piece that are not yet held."""
        end = offset + len(data)
        cursor = offset
        for held_start, held_stop in list(self._have):
            if held_stop <= cursor:
                continue
            if held_start >= end:
                break
            if held_start > cursor:
                heapq.heappush(self._pending, (cursor, data[cursor - offset : held_start - offset]))
            cursor = max(cursor, held_stop)
            if cursor >= end:
                break
        if cursor < end:
            heapq.heappush(self._pending, (cursor, data[cursor - offset :]))
        self._have.add(offset, end)

    def _drain_pending(self) -> None:
        pending = self._pending
        while pending and pending[0][0] <= self.delivered:
            offset, data = heapq.heappop(pending)
            end = offset + len(data)
            if end > self.delivered:
                self._ready.append(data[self.delivered - offset :])
                self.delivered = end
        if self._have:
            self._have.subtract(0, self.delivered)

    def pull(self) -> tuple[bytes, bool]:
        """Newly contiguous bytes, and whether they reach the end of the stream."""
        if len(self._ready) == 1:
            data = self._ready[0]
        else:
            data = b"".join(self._ready)
        self._ready.clear()
        end = False
        if not self._end_reported and self._final_size is not None and self.delivered == self._final_size:
            self._end_reported = True
            end = True
        return data, end

    def on_consumed(self, nbytes: int, now: float = 0.0, rtt: float = 0.0) -> int | None:
        """Returns a new limit to advertise once half the window has been consumed.

        Auto-tuning, as in Chromium's QUIC flow controller: when the limit must be raised again
        less than two round trips (``rtt``) after the last time, the reader keeps up and the
        window is what holds the sender back, so the window doubles, up to ``max_window``.
        """
        self.consumed += nbytes
        if self._final_size is not None or self.reset_code is not None:
            return None
        if self.consumed + self.window - self.current_max_data >= self.window // 2:
            if now - self._last_update < 2 * rtt and self.window < self.max_window:
                self.window = min(2 * self.window, self.max_window)
            self._last_update = now
            self.previous_max_data = self.current_max_data
            self.current_max_data = self.consumed + self.window
            return self.current_max_data
        return None

    def on_reset(self, final_size: int, code: int) -> int:
        """The peer abandoned the stream; returns how far this grows the received total."""
        if final_size < self.highest_received or (
            self._final_size is not None and self._final_size != final_size
        ):
            raise RemoteProtocolError(
                f"stream {self.stream_id}: bad final size in RESET_STREAM", code=ErrorCode.FINAL_SIZE_ERROR
            )
        if final_size > self.current_max_data:
            raise RemoteProtocolError(
                f"stream {self.stream_id}: reset beyond the flow-control limit",
                code=ErrorCode.FLOW_CONTROL_ERROR,
            )
        grown = final_size - self.highest_received
        self.highest_received = final_size
        self._final_size = final_size
        self.reset_code = code
        self._pending.clear()
        self._ready.clear()
        self._have = RangeSet()
        return grown


class FlowControlWindow:
    """The connection-level receive limit (MAX_DATA), re-opened as data is consumed."""

    __slots__ = ("consumed", "current_max", "previous_max", "received", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.current_max = window
        self.previous_max = 0  # the limit before the last raise
        self.received = 0
        self.consumed = 0

    def on_received(self, nbytes: int) -> bool:
        """Count ``nbytes`` more; True when they reach exactly the previous limit (see
        :meth:`ReceiveStream.on_frame`): the sender has not seen the raise."""
        self.received += nbytes
        if self.received > self.current_max:
            raise RemoteProtocolError(
                "peer exceeded the connection flow-control limit", code=ErrorCode.FLOW_CONTROL_ERROR
            )
        return nbytes > 0 and self.received == self.previous_max

    def on_consumed(self, nbytes: int) -> int | None:
        self.consumed += nbytes
        if self.consumed + self.window - self.current_max >= self.window // 2:
            self.previous_max = self.current_max
            self.current_max = self.consumed + self.window
            return self.current_max
        return None


class SendCredit:
    """What the peer lets us send (its MAX_DATA), and what we have used."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @property
    def available(self) -> int:
        return self.limit - self.used

    def consume(self, nbytes: int) -> None:
        self.used += nbytes

    def update_limit(self, limit: int) -> None:
        if limit > self.limit:
            self.limit = limit
