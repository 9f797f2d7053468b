"""Fuzz the frame parser and the whole receive path of a live connection.

Contract: ``parse_frames`` raises only ParseError; ``Connection.receive_datagram``
raises nothing at all, whatever the bytes.
"""

from __future__ import annotations

from fuzz._harness import fuzz
from seam.errors import ParseError
from seam.packet import parse_frames

_PAIR = None


def _established_pair():  # type: ignore[no-untyped-def]
    global _PAIR
    if _PAIR is None:
        from seam.testing import Pair

        pair = Pair()
        pair.handshake()
        _PAIR = pair
    return _PAIR


def TestOneInput(data: bytes) -> None:
    try:
        parse_frames(data)
    except ParseError:
        pass
    pair = _established_pair()
    for conn in (pair.client, pair.server):
        conn.receive_datagram(data, ("127.0.0.1", 1), pair.now)
        if data:
            # Also as a DATA packet for this connection, so the CID lookup passes.
            forged = bytes((0x20 | (data[0] & 1),)) + conn.local_cid + data[1:]
            conn.receive_datagram(forged, ("127.0.0.1", 1), pair.now)


def main() -> None:
    fuzz(TestOneInput)


if __name__ == "__main__":
    main()
