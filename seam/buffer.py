"""Bounds-checked byte reader and writer with QUIC variable-length integers.

Every ``pull_*`` raises :class:`seam.errors.ParseError` rather than
``IndexError`` or ``struct.error``, so parsers can catch one exception type.
Variable-length integers follow RFC 9000 section 16: the two high bits of the
first byte give the length (1, 2, 4 or 8 bytes) and the value is at most
2**62 - 1.
"""

from __future__ import annotations

from seam.errors import ParseError

VARINT_MAX = (1 << 62) - 1  # RFC 9000 section 16


def varint_size(value: int) -> int:
    """Number of bytes ``push_varint`` will use for ``value``."""
    if value < 0x40:
        return 1
    if value < 0x4000:
        return 2
    if value < 0x4000_0000:
        return 4
    if value <= VARINT_MAX:
        return 8
    raise ValueError(f"varint out of range: {value}")


def encode_varint(value: int) -> bytes:
    """Encode ``value`` (0 <= value < 2**62) as a QUIC varint."""
    if value < 0:
        raise ValueError(f"varint out of range: {value}")
    if value < 0x40:
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x4000_0000:
        return (value | 0x8000_0000).to_bytes(4, "big")
    if value <= VARINT_MAX:
        return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")
    raise ValueError(f"varint out of range: {value}")


def pull_varint_at(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``data[pos]`` and the position after it, reading no further than ``end``.

    The cursor-free form of :meth:`Reader.pull_varint`, for the per-packet
    frame parser, where a method call per field is measurable.
    """
    if pos >= end:
        raise ParseError("truncated varint")
    first = data[pos]
    if first < 0x40:
        return first, pos + 1
    if first < 0x80:
        if pos + 2 > end:
            raise ParseError("truncated varint")
        return ((first & 0x3F) << 8) | data[pos + 1], pos + 2
    length = 1 << (first >> 6)
    stop = pos + length
    if stop > end:
        raise ParseError("truncated varint")
    # Byte by byte: compiled, this is a C loop over small ints (57 ns for 8 bytes, struct 134 ns).
    value = first & 0x3F
    for index in range(pos + 1, stop):
        value = (value << 8) | data[index]
    return value, stop


def pull_bytes_at(data: bytes, pos: int, length: int, end: int) -> tuple[bytes, int]:
    """``length`` bytes at ``data[pos]`` and the position after them (the cursor-free ``pull_bytes``)."""
    stop = pos + length
    if length < 0 or stop > end:
        raise ParseError(f"need {length} bytes, have {end - pos}")
    return data[pos:stop], stop


def pull_varint_bytes_at(data: bytes, pos: int, limit: int, end: int) -> tuple[bytes, int]:
    """A varint length, at most ``limit``, then that many bytes (the cursor-free ``pull_varint_bytes``)."""
    length, pos = pull_varint_at(data, pos, end)
    if length > limit:
        raise ParseError(f"length {length} exceeds limit {limit}")
    return pull_bytes_at(data, pos, length, end)


class Reader:
    """A cursor over bytes (bytes only: typed so, the compiled parser indexes and slices them in C).

    After a :class:`ParseError` the cursor position is unspecified; callers
    discard the reader.
    """

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end

    @property
    def position(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return self._end - self._pos

    def eof(self) -> bool:
        return self._pos >= self._end

    def pull_bytes(self, length: int) -> bytes:
        value, self._pos = pull_bytes_at(self._data, self._pos, length, self._end)
        return value

    def pull_rest(self) -> bytes:
        start = self._pos
        self._pos = self._end
        return self._data[start : self._end]

    def pull_uint8(self) -> int:
        if self._pos >= self._end:
            raise ParseError("need 1 byte, have 0")
        value = self._data[self._pos]
        self._pos += 1
        return value

    def pull_uint16(self) -> int:
        return int.from_bytes(self.pull_bytes(2), "big")

    def pull_uint32(self) -> int:
        return int.from_bytes(self.pull_bytes(4), "big")

    def pull_uint64(self) -> int:
        return int.from_bytes(self.pull_bytes(8), "big")

    def pull_varint(self) -> int:
        value, self._pos = pull_varint_at(self._data, self._pos, self._end)
        return value

    def pull_varint_bytes(self, limit: int) -> bytes:
        """A varint length followed by that many bytes; the length must not exceed ``limit``."""
        value, self._pos = pull_varint_bytes_at(self._data, self._pos, limit, self._end)
        return value


class Writer:
    """An append-only byte builder; ``data`` returns the bytes written so far."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    @property
    def data(self) -> bytes:
        return bytes(self._buf)

    def push_bytes(self, value: bytes | bytearray | memoryview) -> None:
        self._buf += value

    def push_uint8(self, value: int) -> None:
        self._buf.append(value)

    def push_uint16(self, value: int) -> None:
        self._buf += value.to_bytes(2, "big")

    def push_uint32(self, value: int) -> None:
        self._buf += value.to_bytes(4, "big")

    def push_uint64(self, value: int) -> None:
        self._buf += value.to_bytes(8, "big")

    def push_varint(self, value: int) -> None:
        self._buf += encode_varint(value)

    def push_varint_bytes(self, value: bytes | bytearray | memoryview) -> None:
        self._buf += encode_varint(len(value))
        self._buf += value
