"""Stream buffers and flow control, without a connection around them.

The receive side must hand out every byte exactly once and in order whatever
the segmentation, ordering and duplication, hold no more than the advertised
window, and treat data beyond the final size or the limit as a peer error. The
send side must retransmit exactly what was lost and not since acknowledged.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seam.config import SeamConfig
from seam.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from seam.stream import (
    SEND_BUFFER_GROWTH,
    SEND_BUFFER_WINDOWS,
    FlowControlWindow,
    ReceiveStream,
    SendCredit,
    SendStream,
)
from seam.testing import Pair, transfer

Segment = tuple[int, int, bool]  # (start, stop, fin)


def payload_of(size: int) -> bytes:
    """Distinct-looking bytes, so a misplaced or repeated slice cannot go unnoticed."""
    return random.Random(size).randbytes(size)


def held_bytes(rs: ReceiveStream) -> int:
    """Bytes the receive side keeps in memory: ready for the app plus held out of order.

    There is no public gauge for this, so the test reads the two private buffers.
    """
    return sum(len(chunk) for chunk in rs._ready) + sum(len(piece) for _, piece in rs._pending)


def pending_bytes(rs: ReceiveStream) -> int:
    return sum(len(piece) for _, piece in rs._pending)


@st.composite
def segmentations(draw: st.DrawFn) -> tuple[bytes, list[Segment]]:
    """A payload cut into pieces, plus overlapping and duplicated pieces, in random order."""
    size = draw(st.integers(0, 3000))
    payload = payload_of(size)
    cuts = sorted(draw(st.sets(st.integers(1, size - 1), max_size=25))) if size > 1 else []
    edges = [0, *cuts, size]
    pieces = list(itertools.pairwise(edges)) or [(0, 0)]
    if size:
        extra = st.tuples(st.integers(0, size - 1), st.integers(1, size)).map(lambda t: (min(t), max(t)))
        pieces += draw(st.lists(extra, max_size=10))  # overlaps, some spanning several pieces
        pieces += draw(st.lists(st.sampled_from(pieces), max_size=5))  # exact duplicates
    rng = draw(st.randoms(use_true_random=False))
    rng.shuffle(pieces)
    return payload, [(a, b, b == size) for a, b in pieces]


# --- ReceiveStream: reassembly -------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(segmentations(), st.integers(0, 100))
def test_reassembly_delivers_every_byte_once_in_order(case: tuple[bytes, list[Segment]], slack: int) -> None:
    payload, segments = case
    window = len(payload) + slack
    rs = ReceiveStream(0, window=window)
    received: set[int] = set()
    prefix = 0  # the contiguous prefix of ``received``
    chunks: list[bytes] = []
    ends = 0
    for start, stop, fin in segments:
        rs.on_frame(start, payload[start:stop], fin)
        received.update(range(start, stop))
        while prefix in received:
            prefix += 1
        data, end = rs.pull()
        chunks.append(data)
        ends += end
        if end:
            assert rs.delivered == len(payload)
        assert rs.delivered == prefix
        # Out-of-order data is held once, however often and in whatever overlaps it arrived.
        assert pending_bytes(rs) == len(received) - prefix
        assert held_bytes(rs) <= window
    assert b"".join(chunks) == payload
    assert ends == 1
    assert rs.is_finished and rs.fully_delivered
    assert rs.pull() == (b"", False)  # the end is reported once


def test_duplicate_out_of_order_data_does_not_grow_the_buffer() -> None:
    rs = ReceiveStream(0, window=1000)
    rs.on_frame(100, b"a" * 100, False)
    assert pending_bytes(rs) == 100
    for _ in range(10):
        rs.on_frame(100, b"a" * 100, False)
        rs.on_frame(120, b"a" * 50, False)
    assert pending_bytes(rs) == 100
    rs.on_frame(50, b"a" * 200, False)  # overlaps the held piece on both sides
    assert pending_bytes(rs) == 200  # [50, 250): only the 100 new bytes were added
    assert rs.pull() == (b"", False)


def test_fin_arriving_first_is_reported_only_when_the_gap_fills() -> None:
    rs = ReceiveStream(0, window=100)
    rs.on_frame(5, b"world", True)
    assert rs.pull() == (b"", False)
    assert not rs.is_finished
    rs.on_frame(0, b"hello", False)
    assert rs.is_finished
    assert rs.pull() == (b"helloworld", True)


def test_empty_stream_with_only_a_fin() -> None:
    rs = ReceiveStream(0, window=100)
    rs.on_frame(0, b"", True)
    assert rs.pull() == (b"", True)
    assert rs.pull() == (b"", False)


# --- ReceiveStream: final size ---------------------------------------------------------------------


@contextmanager
def expect_remote_error(code: ErrorCode) -> Iterator[None]:
    """The peer's misbehaviour is reported as RemoteProtocolError with the wire code to close with."""
    with pytest.raises(RemoteProtocolError) as info:
        yield
    assert info.value.code == code


def test_data_beyond_final_size_is_a_final_size_error() -> None:
    rs = ReceiveStream(0, window=100)
    rs.on_frame(0, b"0123456789", True)
    rs.on_frame(5, b"56789", False)  # a retransmission inside the final size is fine
    rs.on_frame(8, b"89", True)  # and so is a repeated FIN at the same size
    with expect_remote_error(ErrorCode.FINAL_SIZE_ERROR):
        rs.on_frame(8, b"89X", False)


def test_changed_final_size_is_a_final_size_error() -> None:
    rs = ReceiveStream(0, window=100)
    rs.on_frame(0, b"abc", True)
    with expect_remote_error(ErrorCode.FINAL_SIZE_ERROR):
        rs.on_frame(0, b"ab", True)


def test_final_size_below_received_data_is_a_final_size_error() -> None:
    rs = ReceiveStream(0, window=100)
    rs.on_frame(10, b"0123456789", False)  # highest received offset is 20
    with expect_remote_error(ErrorCode.FINAL_SIZE_ERROR):
        rs.on_frame(0, b"0123", True)


# --- ReceiveStream: flow control ------------------------------------------------------------------


def test_data_up_to_the_window_is_accepted_and_beyond_it_rejected() -> None:
    rs = ReceiveStream(0, window=100)
    rs.on_frame(60, b"x" * 40, False)  # ends exactly at the limit
    with expect_remote_error(ErrorCode.FLOW_CONTROL_ERROR):
        rs.on_frame(100, b"x", False)
    with expect_remote_error(ErrorCode.FLOW_CONTROL_ERROR):
        rs.on_frame(5000, b"x", False)  # far out of order, nothing in between


def test_credit_is_extended_once_half_the_window_is_consumed() -> None:
    rs = ReceiveStream(0, window=1000)
    rs.on_frame(0, b"x" * 1000, False)
    rs.pull()
    assert rs.on_consumed(499) is None
    assert rs.on_consumed(1) == 1500
    assert rs.current_max_data == 1500
    assert rs.on_consumed(100) is None  # extends again only after another half window
    rs.on_frame(1000, b"y" * 500, False)  # the new limit is usable at once


def test_a_frame_that_stops_at_the_previous_limit_says_the_raise_was_not_seen() -> None:
    rs = ReceiveStream(0, window=1000)
    assert rs.on_frame(0, b"x" * 600, False) is False
    rs.pull()
    assert rs.on_consumed(600) == 1600  # raised; the sender still knows only 1000
    assert rs.on_frame(600, b"y" * 300, False) is False
    assert rs.on_frame(900, b"z" * 100, False) is True  # all the credit it knew of: send 1600 again
    assert rs.on_frame(900, b"z" * 100, False) is True  # a duplicate says the same, harmlessly
    assert rs.on_frame(1000, b"w" * 600, False) is False  # beyond 1000: it saw the raise


def test_the_connection_window_says_when_the_sender_stopped_at_the_previous_limit() -> None:
    window = FlowControlWindow(1000)
    assert window.on_received(600) is False
    assert window.on_consumed(600) == 1600
    assert window.on_received(300) is False
    assert window.on_received(100) is True  # exactly the old limit of 1000
    assert window.on_received(0) is False
    assert window.on_received(600) is False


def test_a_window_raised_twice_within_two_round_trips_doubles_up_to_its_cap() -> None:
    """Auto-tuning: a reader that keeps up gets a wider window, never beyond max_window."""
    rs = ReceiveStream(0, window=1000, max_window=3000)
    rtt = 0.010
    assert rs.on_consumed(500, now=1.0, rtt=rtt) == 1500  # the first raise: nothing to compare with
    assert rs.window == 1000
    assert rs.on_consumed(500, now=1.015, rtt=rtt) == 3000  # 15 ms after the last: doubled
    assert rs.window == 2000
    assert rs.on_consumed(1000, now=1.020, rtt=rtt) == 5000  # capped at max_window
    assert rs.window == 3000
    assert rs.on_consumed(1500, now=1.025, rtt=rtt) == 6500  # at the cap: stays
    assert rs.window == 3000


def test_a_slow_reader_keeps_its_window() -> None:
    rs = ReceiveStream(0, window=1000, max_window=1 << 20)
    rtt = 0.010
    for step in range(10):
        rs.on_consumed(500, now=1.0 + step * 0.05, rtt=rtt)  # raised every 50 ms, 5 round trips apart
    assert rs.window == 1000
    assert rs.current_max_data == 5000 + 1000


def test_a_stream_read_at_once_outgrows_a_small_window() -> None:
    """Through two connections on a simulated path: with room to grow (a connection window 16x
    the stream's), a 2 MB transfer read at once finishes several times sooner than one held
    to its 64 KB stream window (the connection window equal to it leaves no room)."""

    def seconds(connection_window: int) -> float:
        config = SeamConfig(stream_receive_window=64 * 1024, connection_receive_window=connection_window)
        pair = Pair(config=config)
        pair.handshake()
        start = pair.now
        data = os.urandom(2 * 1024 * 1024)
        assert transfer(pair, {0: data}) == {0: data}
        return pair.now - start

    held, tuned = seconds(64 * 1024), seconds(1024 * 1024)
    assert tuned < held / 3, (held, tuned)


def test_a_stream_carries_far_more_than_its_window() -> None:
    window = 1000
    total = 100 * window
    payload = payload_of(total)
    rng = random.Random(7)
    rs = ReceiveStream(0, window=window)
    limit = rs.current_max_data
    offset = 0
    got: list[bytes] = []
    ended = False
    while not ended:
        # The peer sends everything its credit allows, in random-sized frames.
        while offset < min(limit, total):
            n = min(rng.randint(1, 300), limit - offset, total - offset)
            rs.on_frame(offset, payload[offset : offset + n], offset + n == total)
            offset += n
        assert held_bytes(rs) <= window
        data, ended = rs.pull()
        got.append(data)
        # The application consumes in uneven pieces; each new limit is advertised.
        while data:
            n = rng.randint(1, 400)
            piece, data = data[:n], data[n:]
            new_limit = rs.on_consumed(len(piece))
            if new_limit is not None:
                assert new_limit > limit
                assert new_limit - rs.consumed <= window  # never more than a window outstanding
                limit = new_limit
    assert b"".join(got) == payload
    assert rs.consumed == total


def test_no_credit_is_extended_once_the_final_size_is_known() -> None:
    rs = ReceiveStream(0, window=100)
    rs.on_frame(0, b"x" * 80, True)
    rs.pull()
    assert rs.on_consumed(80) is None


# --- ReceiveStream: reset -------------------------------------------------------------------------


def test_reset_discards_buffers_and_reports_growth() -> None:
    rs = ReceiveStream(0, window=1000)
    rs.on_frame(0, b"abc", False)
    rs.on_frame(10, b"x" * 20, False)  # highest received is 30
    assert rs.on_reset(50, 7) == 20  # connection-level accounting grows by 50 - 30
    assert rs.reset_code == 7
    assert rs.is_finished and rs.fully_delivered
    assert held_bytes(rs) == 0
    assert rs.pull() == (b"", False)
    rs.on_frame(30, b"y" * 20, False)  # late data inside the final size is ignored
    assert rs.pull() == (b"", False)
    assert rs.on_reset(50, 7) == 0  # a repeated RESET_STREAM grows nothing
    with expect_remote_error(ErrorCode.FINAL_SIZE_ERROR):
        rs.on_frame(50, b"z", False)  # beyond the final size the reset fixed


def test_reset_with_inconsistent_final_size_is_rejected() -> None:
    rs = ReceiveStream(0, window=1000)
    rs.on_frame(0, b"x" * 30, False)
    with expect_remote_error(ErrorCode.FINAL_SIZE_ERROR):
        rs.on_reset(29, 0)  # below data already received
    fin = ReceiveStream(0, window=1000)
    fin.on_frame(0, b"x" * 30, True)
    with expect_remote_error(ErrorCode.FINAL_SIZE_ERROR):
        fin.on_reset(31, 0)  # differs from the FIN's final size
    assert fin.on_reset(30, 0) == 0
    with expect_remote_error(ErrorCode.FLOW_CONTROL_ERROR):
        ReceiveStream(0, window=1000).on_reset(1001, 0)


# --- Connection-level flow control ----------------------------------------------------------------


def test_connection_window_extends_and_enforces_its_limit() -> None:
    fc = FlowControlWindow(1000)
    fc.on_received(1000)
    assert fc.on_consumed(400) is None
    assert fc.on_consumed(100) == 1500
    fc.on_received(500)
    with expect_remote_error(ErrorCode.FLOW_CONTROL_ERROR):
        fc.on_received(1)
    # Over a lifetime far more than the window passes through.
    for _ in range(200):
        fc.on_consumed(fc.received - fc.consumed)
        fc.on_received(fc.current_max - fc.received)
    assert fc.received > 100 * fc.window
    assert fc.current_max - fc.consumed <= fc.window


def test_send_credit_only_grows() -> None:
    credit = SendCredit(1000)
    credit.consume(600)
    assert credit.available == 400
    credit.update_limit(800)  # a stale, smaller MAX_DATA is ignored
    assert credit.limit == 1000
    credit.update_limit(2000)
    assert credit.available == 1400


# --- SendStream -----------------------------------------------------------------------------------


def test_send_frames_respect_payload_size_and_credit() -> None:
    ss = SendStream(0)
    ss.write(b"a" * 250)
    ss.finish()
    assert ss.next_frame(100, 1000) == (0, b"a" * 100, False)
    assert ss.next_frame(100, 30) == (100, b"a" * 30, False)  # limited by flow-control credit
    assert ss.next_frame(100, 0) is None  # no credit, nothing lost: nothing to send
    assert ss.next_frame(500, 1000) == (130, b"a" * 120, True)  # FIN rides on the last data
    assert ss.next_frame(500, 1000) is None
    assert not ss.has_pending


def test_finish_after_everything_was_sent_sends_a_bare_fin() -> None:
    ss = SendStream(0)
    ss.write(b"abc")
    assert ss.next_frame(100, 100) == (0, b"abc", False)
    ss.finish()
    assert ss.has_pending
    assert ss.next_frame(100, 100) == (3, b"", True)
    ss.on_acked(0, 3, False)
    assert not ss.all_acked
    ss.on_acked(3, 0, True)
    assert ss.all_acked


def test_send_buffer_grows_with_the_congestion_window_up_to_a_ceiling() -> None:
    ss = SendStream(0, max_buffer=1000)
    ss.write(b"x" * 300)
    assert ss.capacity_for(0) == ss.capacity == 700  # a small window: the configured size
    assert ss.capacity_for(200) == 700
    assert ss.capacity_for(2000) == SEND_BUFFER_WINDOWS * 2000 - 300  # the windows, more than 1000
    assert ss.capacity_for(10**9) == SEND_BUFFER_GROWTH * 1000 - 300  # the ceiling


def test_acked_prefixes_free_the_buffer_out_of_order() -> None:
    ss = SendStream(0, max_buffer=1000)
    ss.write(b"x" * 300)
    assert ss.capacity == 700
    for _ in range(3):
        ss.next_frame(100, 1000)
    ss.on_acked(100, 100, False)
    assert ss.buffered == 300  # a hole at [0, 100) keeps everything
    ss.on_acked(0, 100, False)
    assert ss.buffered == 100
    assert ss.capacity == 900
    ss.on_acked(0, 100, False)  # duplicate ack below the base
    assert ss.buffered == 100


def test_lost_data_is_resent_first_without_parts_acked_meanwhile() -> None:
    ss = SendStream(0)
    data = payload_of(400)
    ss.write(data)
    ss.finish()
    frames = [ss.next_frame(100, 1000) for _ in range(4)]
    assert frames[-1] == (300, data[300:], True)
    ss.on_acked(150, 50, False)  # [150, 200) arrived in some retransmission already
    ss.on_lost(100, 100, False)
    ss.on_lost(300, 100, True)
    assert ss.has_retransmit
    assert ss.next_frame(1000, 0) == (100, data[100:150], False)  # retransmission needs no credit
    assert ss.next_frame(60, 0) == (300, data[300:360], False)
    assert ss.next_frame(60, 0) == (360, data[360:400], True)
    assert ss.next_frame(60, 0) is None
    assert not ss.has_retransmit
    ss.on_acked(360, 40, True)
    ss.on_lost(360, 40, True)  # a late loss of what was acked is ignored
    assert not ss.has_retransmit


def test_local_misuse_raises_local_errors() -> None:
    ss = SendStream(0)
    ss.finish()
    with pytest.raises(LocalProtocolError):
        ss.write(b"late")
    reset = SendStream(0)
    reset.reset(0)
    with pytest.raises(LocalProtocolError):
        reset.write(b"x")
    with pytest.raises(LocalProtocolError):
        reset.finish()


def test_reset_reports_the_highest_offset_sent_and_stops_sending() -> None:
    ss = SendStream(0)
    ss.write(b"x" * 500)
    ss.next_frame(200, 1000)
    ss.on_lost(0, 200, False)
    assert ss.reset(3) == 200  # the final size counts what the peer may have seen, not what was written
    assert ss.is_reset
    assert not ss.has_pending
    assert ss.next_frame(1000, 1000) is None
    assert ss.buffered == 0
    ss.on_acked(0, 200, False)  # late acks and losses are harmless
    ss.on_lost(0, 200, True)
    assert ss.next_frame(1000, 1000) is None


@settings(max_examples=100, deadline=None)
@given(
    size=st.integers(0, 5000),
    window=st.integers(64, 2048),
    max_payload=st.integers(16, 700),
    loss=st.floats(0, 0.4),
    spurious=st.floats(0, 0.2),
    duplicate=st.floats(0, 0.2),
    seed=st.integers(0, 2**32 - 1),
)
def test_sender_and_receiver_agree_over_a_lossy_reordering_path(
    size: int,
    window: int,
    max_payload: int,
    loss: float,
    spurious: float,
    duplicate: float,
    seed: int,
) -> None:
    """Frames are lost, duplicated, reordered and spuriously declared lost; credit is re-opened
    only as the application consumes. Every byte still arrives exactly once and the sender
    ends with everything acknowledged and nothing buffered."""
    payload = payload_of(size)
    rng = random.Random(seed)
    sender = SendStream(4)
    receiver = ReceiveStream(4, window=window)
    credit = SendCredit(receiver.current_max_data)
    sender.write(payload)
    sender.finish()
    in_flight: list[tuple[int, bytes, bool]] = []
    got: list[bytes] = []
    ends = 0
    for _ in range(50_000):
        if sender.all_acked:
            break
        frame = None
        if not in_flight or rng.random() < 0.5:
            before = sender.highest_sent
            frame = sender.next_frame(max_payload, credit.available)
            credit.consume(sender.highest_sent - before)
        if frame is not None:
            in_flight.append(frame)
            continue
        assert in_flight, "nothing in flight, nothing to send, yet not all acknowledged"
        offset, chunk, fin = in_flight.pop(rng.randrange(len(in_flight)))
        if rng.random() < loss:
            sender.on_lost(offset, len(chunk), fin)
            continue
        receiver.on_frame(offset, bytes(chunk), fin)  # as parsed off the wire
        assert held_bytes(receiver) <= window
        if rng.random() < duplicate:
            in_flight.append((offset, chunk, fin))  # the network delivers it again later
        if rng.random() < spurious:
            sender.on_lost(offset, len(chunk), fin)  # the ACK was lost: a needless retransmission
        else:
            sender.on_acked(offset, len(chunk), fin)
        data, end = receiver.pull()
        got.append(data)
        ends += end
        new_limit = receiver.on_consumed(len(data))
        if new_limit is not None:
            credit.update_limit(new_limit)
    assert sender.all_acked
    assert sender.buffered == 0
    assert b"".join(got) == payload
    assert ends == 1
    assert credit.used == size
