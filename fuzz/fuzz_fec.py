"""Fuzz the REPAIR frame parser and FecDecoder: arbitrary bytes are processed or raise FecError, nothing else.

The input is a parse target followed by a little program for a fresh decoder:
each step is an opcode byte, a packet number byte and a length byte, then that
many bytes of source payload or REPAIR body. Packet numbers stay small so
sources, repairs and blocks collide and the decoding paths run.
"""

from __future__ import annotations

from fuzz._harness import fuzz
from seam.fec import FecDecoder, FecError, encode_repairs, parse_repair_body

# A consistent block (3 sources of packets 1..3, 2 repairs), so the fuzzer starts next to real decoding.
_SEED_REPAIRS = encode_repairs([b"alpha", b"bravo!", b"c"], 2)


def TestOneInput(data: bytes) -> None:
    try:
        parse_repair_body(data)
    except FecError:
        pass
    decoder = FecDecoder(max_blocks=4, window=32, max_bytes=4096)
    if data[:1] == b"\xff":  # a real block to perturb
        decoder.receive_repair(4, parse_repair_body(b"\x00\x01\x03\x02\x00" + _SEED_REPAIRS[0]))
    pos = 1
    while pos + 3 <= len(data):
        op, pn, length = data[pos], data[pos + 1], data[pos + 2]
        chunk = data[pos + 3 : pos + 3 + length]
        pos += 3 + length
        try:
            if op & 1:
                recovered = decoder.feed(pn, chunk)
            else:
                recovered = decoder.receive_source(pn, chunk)
        except FecError:
            continue
        for packet_number, payload in recovered:
            assert isinstance(packet_number, int) and isinstance(payload, bytes)
        assert decoder.open_blocks <= 4
        assert decoder.buffered_bytes <= 4096


def main() -> None:
    fuzz(TestOneInput)


if __name__ == "__main__":
    main()
