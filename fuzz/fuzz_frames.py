"""Fuzz the frame parser and the whole receive path of a live connection.

Contract: ``parse_frames`` raises only ParseError; ``Connection.receive_datagram``
raises nothing at all, whatever the bytes.

The input is also sealed as the payload of an authenticated DATA packet, with
the last byte choosing the IP ECN codepoint it arrives with, so the frame
handlers behind the AEAD (ACK_ECN validation and the CE reaction among them)
see arbitrary frames too. A pair that such a packet closed is replaced.
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
    global _PAIR
    try:
        parse_frames(data)
    except ParseError:
        pass
    pair = _established_pair()
    if data:
        sealed = pair.client._seal(data[:-1], pair.now)
        pair.server.receive_datagram(sealed, ("127.0.0.1", 1), pair.now, ecn=data[-1])
        pair.server.datagrams_to_send(pair.now)
        if pair.server.is_closed:
            _PAIR = None
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
