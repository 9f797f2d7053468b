"""Fuzz the three handshake message readers: only HandshakeError may come out."""

from __future__ import annotations

import sys

from seam.errors import HandshakeError
from seam.handshake import ClientHandshake, ServerHandshake
from seam.testing import shared_identities

PROLOGUE = b"seam/1-fuzz"
SERVER, CLIENT = shared_identities()


def TestOneInput(data: bytes) -> None:
    server = ServerHandshake(SERVER, prologue=PROLOGUE)
    try:
        server.read_message1(data)
        server.write_message2()
    except HandshakeError:
        pass
    client = ClientHandshake(CLIENT, SERVER.public, prologue=PROLOGUE)
    msg1 = client.write_message1()
    try:
        client.read_message2(data)
    except HandshakeError:
        pass
    # A server that answered a real msg1 and now reads a fuzzed msg3.
    server = ServerHandshake(SERVER, prologue=PROLOGUE)
    server.read_message1(msg1)
    server.write_message2()
    try:
        server.read_message3(data)
    except HandshakeError:
        pass


def main() -> None:
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
