"""Packet and frame codecs: round trips, and peer bytes only ever raise ParseError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seam import packet as pk
from seam.buffer import Reader, encode_varint, pull_varint_at
from seam.errors import ParseError

CID = bytes(range(8))
CID2 = bytes(range(8, 16))


@given(st.integers(min_value=0, max_value=(1 << 62) - 1))
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    reader = Reader(encoded)
    assert reader.pull_varint() == value
    assert reader.eof()


@given(st.binary(min_size=1, max_size=9), st.integers(min_value=0, max_value=4))
def test_cursor_free_varint_agrees_with_reader(data: bytes, start: int) -> None:
    """``pull_varint_at`` (the frame parser's) and ``Reader.pull_varint`` read the same bytes alike."""
    start = min(start, len(data))
    try:
        expected: tuple[int, int] | None = (Reader(data, start).pull_varint(), 0)
    except ParseError:
        expected = None
    if expected is None:
        with pytest.raises(ParseError):
            pull_varint_at(data, start, len(data))
        return
    value, after = pull_varint_at(data, start, len(data))
    assert value == expected[0]
    assert after == start + (1 << (data[start] >> 6))  # the length its first byte announces


# Shapes around each varint length boundary, where the packed fast path hands over to the general one.
_edges = [0, 1, 0x3F, 0x40, 0x3FFF, 0x4000, 0x3FFF_FFFF, 0x4000_0000, (1 << 62) - 1]


@given(
    st.one_of(st.sampled_from(_edges), st.integers(0, (1 << 62) - 1)),
    st.one_of(st.sampled_from(_edges), st.integers(0, (1 << 62) - 1)),
    st.one_of(st.sampled_from(_edges[:7]), st.integers(0, 0xFFFF)),
    st.booleans(),
)
def test_stream_header_is_the_varint_form(stream_id: int, offset: int, length: int, fin: bool) -> None:
    head = pk.encode_stream_header(stream_id, offset, length, fin)
    kind = pk.FrameType.STREAM_FIN if fin else pk.FrameType.STREAM
    assert head == bytes((kind,)) + encode_varint(stream_id) + encode_varint(offset) + encode_varint(length)
    assert len(head) == pk.stream_frame_overhead(stream_id, offset, length)


def test_varint_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        encode_varint(1 << 62)
    with pytest.raises(ValueError):
        encode_varint(-1)


def test_hello_is_padded_and_parses() -> None:
    hello = pk.encode_hello(CID, CID2)
    assert len(hello) == pk.MIN_HELLO_SIZE
    assert pk.parse_header(hello) == pk.Hello(dcid=CID, scid=CID2)


def test_retry_round_trip_and_small() -> None:
    retry = pk.encode_retry(CID, CID2, b"c" * 24)
    assert len(retry) <= 64
    assert pk.parse_header(retry) == pk.Retry(dcid=CID, scid=CID2, cookie=b"c" * 24)


@given(st.binary(min_size=1, max_size=5000), st.binary(max_size=32))
def test_handshake_fragments_reassemble(body: bytes, cookie: bytes) -> None:
    datagrams = pk.encode_handshake_message(CID, CID2, cookie, 2, body)
    rebuilt = bytearray(len(body))
    for datagram in datagrams:
        assert len(datagram) <= pk.MAX_HANDSHAKE_DATAGRAM
        frag = pk.parse_header(datagram)
        assert isinstance(frag, pk.HandshakeFragment)
        assert (frag.message, frag.total_len, frag.cookie) == (2, len(body), cookie)
        rebuilt[frag.offset : frag.offset + len(frag.data)] = frag.data
    assert bytes(rebuilt) == body


def test_data_header_round_trip() -> None:
    header = pk.encode_data_header(1, CID, 123456789)
    assert len(header) == pk.DATA_HEADER_LEN == 13
    parsed = pk.parse_header(header + bytes(16))
    assert parsed == pk.DataHeader(key_phase=1, dcid=CID, packet_number=123456789)
    wide = pk.parse_header(pk.encode_data_header(0, CID, (7 << 32) + 5) + bytes(16))
    assert isinstance(wide, pk.DataHeader) and wide.packet_number == 5  # the low 32 bits travel


def test_packet_number_decoding_rfc9000_example() -> None:
    """RFC 9000 A.3's example, carried in 32 bits: the number nearest largest + 1 with those low bits."""
    assert pk.decode_packet_number(0xA82F9B32, 0xA82F30EA) == 0xA82F9B32
    assert pk.decode_packet_number(0, -1) == 0
    assert pk.decode_packet_number(5, (1 << 32) - 3) == (1 << 32) + 5  # just past a wrap
    assert pk.decode_packet_number(0xFFFF_FFFE, (1 << 32) + 3) == (1 << 32) - 2  # late, from before it


@given(
    st.integers(min_value=-1, max_value=(1 << 62) - 2),
    # expected = largest + 1; RFC 9000 A.3 decodes (expected - 2^31, expected + 2^31] correctly.
    st.integers(min_value=-(1 << 31) + 2, max_value=1 << 31),
)
def test_packet_number_decodes_within_half_the_window(largest: int, distance: int) -> None:
    """Any packet within 2^31 of the next expected number decodes to itself from its low 32 bits
    (the lower bound excluded, as in RFC 9000 A.3; the old range reached one past it)."""
    pn = largest + distance
    if not 0 <= pn <= (1 << 62) - 1:
        return
    assert pk.decode_packet_number(pn & 0xFFFF_FFFF, largest) == pn


@pytest.mark.parametrize(
    "datagram",
    [b"", b"\x10", b"\x99" * 40, b"\x20" + bytes(10), b"\x11" + pk.VERSION.to_bytes(4, "big") + bytes(17)],
)
def test_bad_headers_raise_parse_error(datagram: bytes) -> None:
    with pytest.raises(ParseError):
        pk.parse_header(datagram)


def test_wrong_version_is_refused() -> None:
    hello = bytearray(pk.encode_hello(CID, CID2))
    hello[1:5] = (0x12345678).to_bytes(4, "big")
    with pytest.raises(ParseError, match="version"):
        pk.parse_header(bytes(hello))


@given(st.binary(max_size=2000))
@settings(max_examples=500)
def test_parse_header_only_raises_parse_error(data: bytes) -> None:
    try:
        pk.parse_header(data)
    except ParseError:
        pass


@given(st.binary(max_size=2000))
@settings(max_examples=500)
def test_parse_frames_only_raises_parse_error(data: bytes) -> None:
    try:
        pk.parse_frames(data)
    except ParseError:
        pass


ack_ranges = st.lists(st.integers(min_value=0, max_value=50), min_size=2, max_size=40).map(
    lambda xs: xs  # gaps/lengths alternate
)


@given(st.integers(min_value=0, max_value=1 << 40), ack_ranges, st.integers(min_value=0, max_value=1 << 30))
def test_ack_round_trip(top: int, steps: list[int], delay: int) -> None:
    ranges = []
    high = top + sum(steps) * 3 + 100
    for i in range(0, len(steps) - 1, 2):
        low = high - steps[i]
        if low < 0:
            break
        ranges.append((low, high))
        high = low - steps[i + 1] - 2
        if high < 0:
            break
    if not ranges:
        return
    encoded = pk.encode_ack(ranges, delay)
    (frame,) = pk.parse_frames(encoded)
    assert frame == pk.AckFrame(tuple(ranges), delay)


varint = st.integers(min_value=0, max_value=(1 << 62) - 1)


@given(
    st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), min_size=1, max_size=20),
    st.integers(min_value=0, max_value=1 << 30),
    varint,
    varint,
    varint,
)
def test_ack_ecn_round_trip(steps: list[tuple[int, int]], delay: int, ect0: int, ect1: int, ce: int) -> None:
    """ACK_ECN is ACK plus three varint counts; every varint value survives (docs/protocol.md 7.6)."""
    ranges = []
    high = sum(a + b + 2 for a, b in steps) + 10
    for length, gap in steps:
        ranges.append((high - length, high))
        high = high - length - gap - 2
        if high < 0:
            break
    counts = pk.EcnCounts(ect0, ect1, ce)
    encoded = pk.encode_ack(ranges, delay, counts)
    assert encoded[0] == pk.FrameType.ACK_ECN
    assert encoded[1:-1].startswith(pk.encode_ack(ranges, delay)[1:])  # the ACK body, then the counts
    (frame,) = pk.parse_frames(encoded + b"\x00")  # padding after it still parses
    assert frame == pk.AckFrame(tuple(ranges), delay, counts)


@given(st.binary(max_size=40))
def test_truncated_or_garbage_ack_ecn_only_raises_parse_error(tail: bytes) -> None:
    """An ACK_ECN cut anywhere, or followed by garbage, parses or raises ParseError, nothing else."""
    encoded = pk.encode_ack([(5, 9), (0, 2)], 100, pk.EcnCounts(7, 0, 3))
    for cut in range(1, len(encoded)):
        with pytest.raises(ParseError):
            pk.parse_frames(encoded[:cut])
    try:
        pk.parse_frames(encoded + tail)
    except ParseError:
        pass


def test_ack_ecn_is_bounded_like_ack() -> None:
    """Range count and ranges below zero are refused for ACK_ECN exactly as for ACK."""
    assert pk.MAX_ACK_RANGES == 256
    too_many = bytes((pk.FrameType.ACK_ECN, 10, 0, 0x41, 0x01, 0))  # range_count 257 (a 2-byte varint)
    with pytest.raises(ParseError, match="too many"):
        pk.parse_frames(too_many)
    below_zero = bytes((pk.FrameType.ACK_ECN, 3, 0, 0, 4, 0, 0, 0))  # largest 3, first range 4
    with pytest.raises(ParseError, match="below zero"):
        pk.parse_frames(below_zero)


def test_every_frame_round_trips() -> None:
    payload = b"".join(
        [
            pk.PING_BYTES,
            pk.encode_stream(4, 1000, b"hello", True),
            pk.encode_stream(5, 0, b"", False),
            pk.encode_varints(pk.FrameType.MAX_DATA, [1 << 30]),
            pk.encode_varints(pk.FrameType.MAX_STREAM_DATA, [4, 77]),
            pk.encode_varints(pk.FrameType.MAX_STREAMS, [100]),
            pk.encode_varints(pk.FrameType.RESET_STREAM, [4, 12, 1005]),
            pk.encode_varints(pk.FrameType.STOP_SENDING, [4, 12]),
            pk.encode_datagram(b"dgram"),
            pk.encode_path(pk.FrameType.PATH_CHALLENGE, b"12345678"),
            pk.encode_path(pk.FrameType.PATH_RESPONSE, b"87654321"),
            b"\x00\x00\x00",
            pk.encode_close(0x0B, "bye"),
            pk.HANDSHAKE_DONE_BYTES,
            pk.encode_ack([(3, 8)], 25, pk.EcnCounts(1, 2, 3)),
        ]
    )
    assert pk.parse_frames(payload) == [
        pk.PingFrame(),
        pk.StreamFrame(4, 1000, b"hello", True),
        pk.StreamFrame(5, 0, b"", False),
        pk.MaxDataFrame(1 << 30),
        pk.MaxStreamDataFrame(4, 77),
        pk.MaxStreamsFrame(100),
        pk.ResetStreamFrame(4, 12, 1005),
        pk.StopSendingFrame(4, 12),
        pk.DatagramFrame(b"dgram"),
        pk.PathChallengeFrame(b"12345678"),
        pk.PathResponseFrame(b"87654321"),
        pk.CloseFrame(0x0B, "bye"),
        pk.HandshakeDoneFrame(),
        pk.AckFrame(((3, 8),), 25, pk.EcnCounts(1, 2, 3)),
    ]


def test_truncated_stream_frame_is_parse_error() -> None:
    frame = pk.encode_stream(4, 0, b"hello", False)
    with pytest.raises(ParseError):
        pk.parse_frames(frame[:-1])
