"""Fuzz the packet header parser: arbitrary bytes parse or raise ParseError, nothing else."""

from __future__ import annotations

from fuzz._harness import fuzz
from seam.errors import ParseError
from seam.packet import (
    AEAD_TAG_LEN,
    encode_data_header,
    encode_handshake_message,
    encode_hello,
    encode_retry,
    parse_header,
)

_DCID, _SCID = bytes(range(8)), bytes(range(8, 16))
# A header of each packet type.
SEEDS = [
    encode_hello(_DCID, _SCID),
    encode_retry(_DCID, _SCID, b"cookie" * 4),
    encode_handshake_message(_DCID, _SCID, b"cookie", 2, bytes(300))[0],
    encode_data_header(1, _DCID, 70000) + bytes(AEAD_TAG_LEN),
]


def TestOneInput(data: bytes) -> None:
    try:
        parse_header(data)
    except ParseError:
        pass


def main() -> None:
    fuzz(TestOneInput, SEEDS)


if __name__ == "__main__":
    main()
