"""Packet header and frame codecs (docs/protocol.md sections 1, 6 and 7).

Parsing functions take peer bytes and either return a value or raise
:class:`seam.errors.ParseError`; they never raise anything else, which the
fuzz harnesses in ``fuzz/`` check. Encoding functions trust their arguments.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from seam.buffer import (
    VARINT_MAX,
    Reader,
    encode_varint,
    pull_bytes_at,
    pull_varint_at,
    pull_varint_bytes_at,
    varint_size,
)
from seam.errors import ParseError

VERSION = 0x5345_0002  # "SE" v2, docs/protocol.md section 1
CID_LEN = 8
MIN_HELLO_SIZE = 1200  # bytes; anti-amplification floor, docs/protocol.md 1.1
MAX_HANDSHAKE_DATAGRAM = 1200  # bytes
MAX_HANDSHAKE_MESSAGE = 8192  # bytes, reassembly bound
MAX_COOKIE_LEN = 64
PN_LEN = 4  # bytes of packet number on the wire: its low 32 bits (docs/protocol.md 6)
DATA_HEADER_LEN = 1 + CID_LEN + PN_LEN  # type, dcid, truncated packet number
AEAD_TAG_LEN = 16
MAX_REASON_LEN = 1024  # bytes of CLOSE reason we accept or send
MAX_ACK_RANGES = 256  # ranges we accept in one ACK frame
MAX_REPAIR_BODY = 65535  # bytes of REPAIR frame body, as for DATAGRAM (seam.fec.MAX_REPAIR_BODY)


class PacketType(enum.IntEnum):
    HELLO = 0x10
    RETRY = 0x11
    HANDSHAKE = 0x12
    DATA_PHASE0 = 0x20
    DATA_PHASE1 = 0x21


class FrameType(enum.IntEnum):
    PADDING = 0x00
    PING = 0x01
    ACK = 0x02
    RESET_STREAM = 0x03
    STOP_SENDING = 0x04
    MAX_DATA = 0x05
    MAX_STREAM_DATA = 0x06
    MAX_STREAMS = 0x07
    STREAM = 0x08
    STREAM_FIN = 0x09
    DATAGRAM = 0x0A
    PATH_CHALLENGE = 0x0B
    PATH_RESPONSE = 0x0C
    CLOSE = 0x0D
    HANDSHAKE_DONE = 0x0E
    REPAIR = 0x0F  # forward error correction, docs/protocol.md 7.3; body owned by seam.fec
    ACK_ECN = 0x10  # ACK plus cumulative ECN counts, docs/protocol.md 7.6 (QUIC's 0x03, RFC 9000 19.3.2)


# --------------------------------------------------------------------- headers


@dataclass(frozen=True, slots=True)
class Hello:
    dcid: bytes
    scid: bytes


@dataclass(frozen=True, slots=True)
class Retry:
    dcid: bytes
    scid: bytes
    cookie: bytes


@dataclass(frozen=True, slots=True)
class HandshakeFragment:
    dcid: bytes
    scid: bytes
    cookie: bytes
    message: int
    total_len: int
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class DataHeader:
    key_phase: int
    dcid: bytes
    packet_number: int


Header = Hello | Retry | HandshakeFragment | DataHeader


def parse_header(datagram: bytes) -> Header:
    """Decode the unencrypted part of a datagram.

    For DATA packets only the 13-byte header is decoded; the ciphertext
    starts at ``DATA_HEADER_LEN``, and ``packet_number`` is the truncated
    number on the wire (:func:`decode_packet_number` gives the full one).
    """
    if not datagram:
        raise ParseError("empty datagram")
    kind = datagram[0]
    if kind in (PacketType.DATA_PHASE0, PacketType.DATA_PHASE1):
        if len(datagram) < DATA_HEADER_LEN + AEAD_TAG_LEN:
            raise ParseError("short DATA packet")
        return DataHeader(
            key_phase=kind & 1,
            dcid=bytes(datagram[1 : 1 + CID_LEN]),
            packet_number=truncated_packet_number(datagram),
        )
    reader = Reader(datagram, 1)
    if kind not in (PacketType.HELLO, PacketType.RETRY, PacketType.HANDSHAKE):
        raise ParseError(f"unknown packet type 0x{kind:02x}")
    version = reader.pull_uint32()
    if version != VERSION:
        raise ParseError(f"unsupported version 0x{version:08x}")
    dcid = reader.pull_bytes(CID_LEN)
    scid = reader.pull_bytes(CID_LEN)
    if kind == PacketType.HELLO:
        return Hello(dcid=dcid, scid=scid)
    cookie_len = reader.pull_uint8()
    if cookie_len > MAX_COOKIE_LEN:
        raise ParseError("cookie too long")
    cookie = reader.pull_bytes(cookie_len)
    if kind == PacketType.RETRY:
        if not cookie:
            raise ParseError("RETRY without cookie")
        return Retry(dcid=dcid, scid=scid, cookie=cookie)
    message = reader.pull_uint8()
    total_len = reader.pull_uint16()
    offset = reader.pull_uint16()
    data = reader.pull_rest()
    if message not in (1, 2, 3):
        raise ParseError(f"unknown handshake message {message}")
    if total_len == 0 or total_len > MAX_HANDSHAKE_MESSAGE:
        raise ParseError("bad handshake message length")
    if not data or offset + len(data) > total_len:
        raise ParseError("handshake fragment out of range")
    return HandshakeFragment(dcid, scid, cookie, message, total_len, offset, data)


def destination_cid(datagram: bytes) -> bytes | None:
    """The CID a DATA, HANDSHAKE or RETRY datagram is routed by, without a full parse.

    HELLO is never routed to a connection: a server's admission gate answers
    it whatever its destination CID says.
    """
    if not datagram:
        return None
    kind = datagram[0]
    if kind == PacketType.DATA_PHASE0 or kind == PacketType.DATA_PHASE1:
        return datagram[1 : 1 + CID_LEN]
    if (kind == PacketType.HANDSHAKE or kind == PacketType.RETRY) and len(datagram) >= 5 + CID_LEN:
        return datagram[5 : 5 + CID_LEN]
    return None


def _long_header(kind: PacketType, dcid: bytes, scid: bytes) -> bytearray:
    out = bytearray((kind,))
    out += VERSION.to_bytes(4, "big")
    out += dcid
    out += scid
    return out


def encode_hello(dcid: bytes, scid: bytes) -> bytes:
    out = _long_header(PacketType.HELLO, dcid, scid)
    out += bytes(MIN_HELLO_SIZE - len(out))
    return bytes(out)


def encode_retry(dcid: bytes, scid: bytes, cookie: bytes) -> bytes:
    out = _long_header(PacketType.RETRY, dcid, scid)
    out.append(len(cookie))
    out += cookie
    return bytes(out)


def encode_handshake_message(
    dcid: bytes, scid: bytes, cookie: bytes, message: int, body: bytes
) -> list[bytes]:
    """Split one handshake message into datagrams of at most 1200 bytes."""
    head = _long_header(PacketType.HANDSHAKE, dcid, scid)
    head.append(len(cookie))
    head += cookie
    head.append(message)
    head += len(body).to_bytes(2, "big")
    room = MAX_HANDSHAKE_DATAGRAM - len(head) - 2
    out: list[bytes] = []
    for offset in range(0, len(body), room):
        out.append(bytes(head + offset.to_bytes(2, "big") + body[offset : offset + room]))
    return out


def encode_data_header(key_phase: int, dcid: bytes, packet_number: int) -> bytes:
    """The header of DATA packet ``packet_number``, which carries only its low 32 bits."""
    return _DATA_TYPES[key_phase] + dcid + _TRUNCATED_PN.pack(packet_number & _PN_MASK)


def truncated_packet_number(datagram: bytes) -> int:
    """The low 32 bits of a DATA packet's number, from its header (at least DATA_HEADER_LEN long).

    Byte by byte, not struct or int.from_bytes: compiled, these are C
    indexing and shifts on small ints, on every packet received.
    """
    start = 1 + CID_LEN  # after the type byte and the destination CID
    return (
        (datagram[start] << 24)
        | (datagram[start + 1] << 16)
        | (datagram[start + 2] << 8)
        | datagram[start + 3]
    )


def decode_packet_number(truncated: int, largest: int) -> int:
    """The full packet number closest to ``largest + 1`` whose low 32 bits are ``truncated``.

    RFC 9000 appendix A.3 with a fixed 32-bit encoding. ``largest`` is the
    largest packet number authenticated so far (-1 before any). Correct as long
    as the sender keeps fewer than 2^31 packets unacknowledged (docs/protocol.md 6).
    """
    expected = largest + 1
    candidate = (expected & ~_PN_MASK) | truncated
    if candidate <= expected - _PN_HALF_WINDOW and candidate < (1 << 62) - _PN_WINDOW:
        return candidate + _PN_WINDOW
    if candidate > expected + _PN_HALF_WINDOW and candidate >= _PN_WINDOW:
        return candidate - _PN_WINDOW
    return candidate


_DATA_TYPES = (bytes((PacketType.DATA_PHASE0,)), bytes((PacketType.DATA_PHASE1,)))  # by key phase
_TRUNCATED_PN = struct.Struct("!I")
_PN_WINDOW = 1 << (8 * PN_LEN)
_PN_HALF_WINDOW = _PN_WINDOW >> 1
_PN_MASK = _PN_WINDOW - 1


# ---------------------------------------------------------------------- frames


@dataclass(frozen=True, slots=True)
class PingFrame:
    pass


@dataclass(frozen=True, slots=True)
class EcnCounts:
    """Cumulative counts of DATA packets received with each ECN codepoint (RFC 9000 19.3.2)."""

    ect0: int
    ect1: int
    ce: int


@dataclass(slots=True, init=False)  # not frozen: built per packet, and frozen construction costs 3x
class AckFrame:
    """``ranges`` are inclusive ``(smallest, largest)`` pairs, largest first.

    ``ecn`` is set for an ACK_ECN frame and None for a plain ACK.
    """

    ranges: tuple[tuple[int, int], ...]
    ack_delay_us: int
    ecn: EcnCounts | None

    # init=False: mypyc compiles a written-out __init__, not the one dataclass generates (171 -> 30 ns)
    def __init__(
        self, ranges: tuple[tuple[int, int], ...], ack_delay_us: int, ecn: EcnCounts | None = None
    ) -> None:
        self.ranges = ranges
        self.ack_delay_us = ack_delay_us
        self.ecn = ecn


@dataclass(frozen=True, slots=True)
class ResetStreamFrame:
    stream_id: int
    error_code: int
    final_size: int


@dataclass(frozen=True, slots=True)
class StopSendingFrame:
    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class MaxDataFrame:
    maximum: int


@dataclass(frozen=True, slots=True)
class MaxStreamDataFrame:
    stream_id: int
    maximum: int


@dataclass(frozen=True, slots=True)
class MaxStreamsFrame:
    maximum: int


@dataclass(slots=True, init=False)  # not frozen: built per packet, and frozen construction costs 3x
class StreamFrame:
    stream_id: int
    offset: int
    data: bytes
    fin: bool

    # init=False: mypyc compiles a written-out __init__, not the one dataclass generates (171 -> 30 ns)
    def __init__(self, stream_id: int, offset: int, data: bytes, fin: bool) -> None:
        self.stream_id = stream_id
        self.offset = offset
        self.data = data
        self.fin = fin


@dataclass(slots=True, init=False)  # not frozen: built per packet, and frozen construction costs 3x
class DatagramFrame:
    data: bytes

    # init=False: mypyc compiles a written-out __init__, not the one dataclass generates (171 -> 30 ns)
    def __init__(self, data: bytes) -> None:
        self.data = data


@dataclass(frozen=True, slots=True)
class PathChallengeFrame:
    data: bytes


@dataclass(frozen=True, slots=True)
class PathResponseFrame:
    data: bytes


@dataclass(frozen=True, slots=True)
class CloseFrame:
    error_code: int
    reason: str


@dataclass(frozen=True, slots=True)
class HandshakeDoneFrame:
    pass


@dataclass(frozen=True, slots=True)
class RepairFrame:
    """A REPAIR frame; the body is opaque here and parsed by :func:`seam.fec.parse_repair_body`."""

    body: bytes


Frame = (
    PingFrame
    | AckFrame
    | ResetStreamFrame
    | StopSendingFrame
    | MaxDataFrame
    | MaxStreamDataFrame
    | MaxStreamsFrame
    | StreamFrame
    | DatagramFrame
    | PathChallengeFrame
    | PathResponseFrame
    | CloseFrame
    | HandshakeDoneFrame
    | RepairFrame
)

_PING = PingFrame()
_HANDSHAKE_DONE = HandshakeDoneFrame()


def _parse_ack(data: bytes, pos: int, end: int, *, with_ecn: bool) -> tuple[AckFrame, int]:
    largest, pos = pull_varint_at(data, pos, end)
    delay, pos = pull_varint_at(data, pos, end)
    count, pos = pull_varint_at(data, pos, end)
    if count > MAX_ACK_RANGES:
        raise ParseError("too many ACK ranges")
    first, pos = pull_varint_at(data, pos, end)
    if first > largest:
        raise ParseError("ACK range below zero")
    smallest = largest - first
    ranges = [(smallest, largest)]
    for _ in range(count):
        gap, pos = pull_varint_at(data, pos, end)
        length, pos = pull_varint_at(data, pos, end)
        high = smallest - gap - 2
        low = high - length
        if low < 0:
            raise ParseError("ACK range below zero")
        ranges.append((low, high))
        smallest = low
    if with_ecn:
        ect0, pos = pull_varint_at(data, pos, end)
        ect1, pos = pull_varint_at(data, pos, end)
        ce, pos = pull_varint_at(data, pos, end)
        return AckFrame(tuple(ranges), delay, EcnCounts(ect0, ect1, ce)), pos
    return AckFrame(tuple(ranges), delay), pos


# Frame types as plain ints: parse_frames runs per packet, and IntEnum lookups cost.
_T_PADDING, _T_PING = FrameType.PADDING.value, FrameType.PING.value
_T_ACK, _T_ACK_ECN = FrameType.ACK.value, FrameType.ACK_ECN.value
_T_STREAM, _T_STREAM_FIN = FrameType.STREAM.value, FrameType.STREAM_FIN.value


def parse_frames(payload: bytes) -> list[Frame]:
    """Decode every frame of a decrypted payload (PADDING is skipped).

    Index-based rather than through :class:`Reader`: this runs for every
    packet received, and STREAM and ACK frames come first in the chain.
    """
    frames: list[Frame] = []
    end = len(payload)
    pos = 0
    while pos < end:
        kind = payload[pos]
        if kind < 0x40:
            pos += 1
        else:
            kind, pos = pull_varint_at(payload, pos, end)
        if kind == _T_STREAM or kind == _T_STREAM_FIN:
            stream_id, pos = pull_varint_at(payload, pos, end)
            offset, pos = pull_varint_at(payload, pos, end)
            length, pos = pull_varint_at(payload, pos, end)
            data, pos = pull_bytes_at(payload, pos, length, end)
            if offset + length > VARINT_MAX:
                raise ParseError("stream offset overflow")
            frames.append(StreamFrame(stream_id, offset, data, kind == _T_STREAM_FIN))
        elif kind == _T_ACK or kind == _T_ACK_ECN:
            ack, pos = _parse_ack(payload, pos, end, with_ecn=kind == _T_ACK_ECN)
            frames.append(ack)
        elif kind == _T_PADDING:
            pos = end - len(payload[pos:end].lstrip(b"\x00"))  # a run of padding in one step
        elif kind == _T_PING:
            frames.append(_PING)
        else:
            pos = _parse_rare_frame(kind, payload, pos, end, frames.append)
    return frames


# Frames made of their type and a fixed number of varints, the inverse of encode_varints.
_VARINT_FRAMES: dict[int, tuple[Callable[..., Frame], int]] = {
    FrameType.MAX_DATA: (MaxDataFrame, 1),
    FrameType.MAX_STREAM_DATA: (MaxStreamDataFrame, 2),
    FrameType.MAX_STREAMS: (MaxStreamsFrame, 1),
    FrameType.RESET_STREAM: (ResetStreamFrame, 3),
    FrameType.STOP_SENDING: (StopSendingFrame, 2),
}
_PATH_FRAMES: dict[int, Callable[[bytes], Frame]] = {
    FrameType.PATH_CHALLENGE: PathChallengeFrame,
    FrameType.PATH_RESPONSE: PathResponseFrame,
}


def _parse_rare_frame(kind: int, payload: bytes, pos: int, end: int, append: Callable[[Frame], None]) -> int:
    """Every frame type but STREAM, ACK, PADDING and PING; returns the position after it."""
    if kind in _VARINT_FRAMES:
        make, count = _VARINT_FRAMES[kind]
        values = []
        for _ in range(count):
            value, pos = pull_varint_at(payload, pos, end)
            values.append(value)
        append(make(*values))
    elif kind in _PATH_FRAMES:
        data, pos = pull_bytes_at(payload, pos, 8, end)
        append(_PATH_FRAMES[kind](data))
    elif kind == FrameType.DATAGRAM:
        data, pos = pull_varint_bytes_at(payload, pos, 65535, end)
        append(DatagramFrame(data))
    elif kind == FrameType.CLOSE:
        code, pos = pull_varint_at(payload, pos, end)
        raw, pos = pull_varint_bytes_at(payload, pos, MAX_REASON_LEN, end)
        append(CloseFrame(code, raw.decode("utf-8", errors="replace")))
    elif kind == FrameType.HANDSHAKE_DONE:
        append(_HANDSHAKE_DONE)
    elif kind == FrameType.REPAIR:
        body, pos = pull_varint_bytes_at(payload, pos, MAX_REPAIR_BODY, end)
        append(RepairFrame(body))
    else:
        raise ParseError(f"unknown frame type 0x{kind:x}")
    return pos


def encode_ack(ranges: Sequence[tuple[int, int]], ack_delay_us: int, ecn: EcnCounts | None = None) -> bytes:
    """Encode an ACK frame from inclusive ranges given largest first; ACK_ECN when ``ecn`` is given."""
    largest_low, largest = ranges[0]
    out = bytearray((FrameType.ACK if ecn is None else FrameType.ACK_ECN,))
    out += encode_varint(largest)
    out += encode_varint(ack_delay_us)
    out += encode_varint(len(ranges) - 1)
    out += encode_varint(largest - largest_low)
    smallest = largest_low
    for low, high in ranges[1:]:
        out += encode_varint(smallest - high - 2)
        out += encode_varint(high - low)
        smallest = low
    if ecn is not None:
        out += encode_varint(ecn.ect0)
        out += encode_varint(ecn.ect1)
        out += encode_varint(ecn.ce)
    return bytes(out)


def stream_frame_overhead(stream_id: int, offset: int, length: int) -> int:
    """Bytes a STREAM frame adds around ``length`` bytes of data."""
    return 1 + varint_size(stream_id) + varint_size(offset) + varint_size(length)


_STREAM_HEAD = struct.Struct("!BBIH")  # type, 1-byte stream id, 4-byte offset, 2-byte length varints
_STREAM_HEAD_FAR = struct.Struct("!BBQH")  # the same with an 8-byte offset: past the first GiB


def encode_stream_header(stream_id: int, offset: int, length: int, fin: bool) -> bytes:
    """A STREAM frame up to its data: the caller appends ``length`` bytes (one copy fewer)."""
    if stream_id < 0x40 and 0x4000 <= offset < 0x4000_0000 and 0x40 <= length < 0x4000:
        # The bulk-transfer shape, in one pack (the same bytes as the general form below).
        return _STREAM_HEAD.pack(
            _T_STREAM_FIN if fin else _T_STREAM, stream_id, offset | 0x8000_0000, length | 0x4000
        )
    if stream_id < 0x40 and 0x4000_0000 <= offset <= VARINT_MAX and 0x40 <= length < 0x4000:
        return _STREAM_HEAD_FAR.pack(
            _T_STREAM_FIN if fin else _T_STREAM, stream_id, offset | 0xC000_0000_0000_0000, length | 0x4000
        )
    return (
        (_STREAM_FIN_TYPE if fin else _STREAM_TYPE)
        + encode_varint(stream_id)
        + encode_varint(offset)
        + encode_varint(length)
    )


def encode_stream(stream_id: int, offset: int, data: bytes, fin: bool) -> bytes:
    return encode_stream_header(stream_id, offset, len(data), fin) + data


def encode_varints(kind: FrameType, values: Iterable[int]) -> bytes:
    """A frame made of its type and a list of varints (MAX_DATA, RESET_STREAM, ...)."""
    return bytes((kind,)) + b"".join(encode_varint(v) for v in values)


def encode_datagram(data: bytes) -> bytes:
    return bytes((FrameType.DATAGRAM,)) + encode_varint(len(data)) + data


def encode_repair(body: bytes) -> bytes:
    """A REPAIR frame around a body from :func:`seam.fec.encode_repair_body`."""
    return bytes((FrameType.REPAIR,)) + encode_varint(len(body)) + body


def encode_path(kind: FrameType, data: bytes) -> bytes:
    return bytes((kind,)) + data


def encode_close(error_code: int, reason: str) -> bytes:
    raw = reason.encode("utf-8")[:MAX_REASON_LEN]
    return bytes((FrameType.CLOSE,)) + encode_varint(error_code) + encode_varint(len(raw)) + raw


PING_BYTES = bytes((FrameType.PING,))
_STREAM_TYPE = bytes((FrameType.STREAM,))
_STREAM_FIN_TYPE = bytes((FrameType.STREAM_FIN,))
HANDSHAKE_DONE_BYTES = bytes((FrameType.HANDSHAKE_DONE,))
