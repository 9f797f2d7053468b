"""Fuzz the three handshake message readers: only HandshakeError may come out.

Random bytes rarely have a message's exact length, so the first input byte
picks a mode: modes 0-2 hand the raw rest to one reader; modes 3-5 apply the
rest as an edit (offset, then bytes XORed in) to a real msg1/msg2/msg3, which
reaches the key checks, ML-KEM decapsulation and the AEAD paths.

Run: ``python -m fuzz.fuzz_handshake -max_total_time=60``.
"""

from __future__ import annotations

from fuzz._harness import fuzz
from seam.errors import HandshakeError
from seam.handshake import ClientHandshake, ServerHandshake
from seam.testing import shared_identities

PROLOGUE = b"seam/1-fuzz"
SERVER, CLIENT = shared_identities()


def _templates() -> tuple[bytes, bytes, bytes]:
    client = ClientHandshake(CLIENT, SERVER.public, prologue=PROLOGUE)
    server = ServerHandshake(SERVER, prologue=PROLOGUE)
    msg1 = client.write_message1()
    server.read_message1(msg1)
    msg2 = server.write_message2()
    client.read_message2(msg2)
    msg3 = client.write_message3()
    return msg1, msg2, msg3


MSG1, MSG2, MSG3 = _templates()


def _edit(template: bytes, edit: bytes) -> bytes:
    """XOR ``edit[2:]`` into the template at offset ``edit[0:2]``; a short edit truncates."""
    if len(edit) < 2:
        return template[: len(edit)]
    offset = int.from_bytes(edit[:2], "big") % len(template)
    out = bytearray(template)
    for index, value in enumerate(edit[2:]):
        if offset + index >= len(out):
            out.append(value)
        else:
            out[offset + index] ^= value
    return bytes(out)


def _read1(data: bytes) -> None:
    server = ServerHandshake(SERVER, prologue=PROLOGUE)
    server.read_message1(data)
    server.write_message2()


def _read2(data: bytes) -> None:
    client = ClientHandshake(CLIENT, SERVER.public, prologue=PROLOGUE)
    client.write_message1()
    client.read_message2(data)


def _read3(data: bytes) -> None:
    server = ServerHandshake(SERVER, prologue=PROLOGUE)
    server.read_message1(MSG1)
    server.write_message2()
    server.read_message3(data)


READERS = (_read1, _read2, _read3)
TEMPLATES = (MSG1, MSG2, MSG3)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 6, data[1:]
    message = rest if mode < 3 else _edit(TEMPLATES[mode - 3], rest)
    try:
        READERS[mode % 3](message)
    except HandshakeError:
        pass


def main() -> None:
    fuzz(TestOneInput)


if __name__ == "__main__":
    main()
