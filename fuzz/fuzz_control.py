"""Fuzz the control-protocol decoder: arbitrary bytes decode or raise ControlError, nothing else."""

from __future__ import annotations

from fuzz._harness import fuzz
from seamless_relay.control import (
    ControlDecoder,
    ControlError,
    Error,
    NewConn,
    Ping,
    Pong,
    Register,
    Registered,
    encode,
)

# One valid message of each type, and two in one buffer.
SEEDS = [
    encode(Register(kind="http", subdomain="demo", token="t0ken")),
    encode(Register(kind="tcp", remote_port=2222)),
    encode(Registered(kind="http", url="http://a.example", urls=["http://a.example"], subdomain="a")),
    encode(NewConn(client_addr="203.0.113.7:50000", proto="http", request="GET /")),
    encode(Ping(nonce=7)) + encode(Pong(nonce=7)),
    encode(Error(code="bad-token", message="bad token")),
]


def TestOneInput(data: bytes) -> None:
    decoder = ControlDecoder()
    try:
        # Split the input at a point the data chooses, so partial frames are exercised too.
        cut = data[0] % (len(data) + 1) if data else 0
        messages = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
    except ControlError:
        return
    for message in messages:
        again = ControlDecoder().feed(encode(message))
        assert again == [message], (message, again)


def main() -> None:
    fuzz(TestOneInput, SEEDS)


if __name__ == "__main__":
    main()
