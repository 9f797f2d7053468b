"""The control protocol codec: round trips, strict validation, bounded buffering."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from seamless_relay.control import (
    MAX_MESSAGE,
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
from seamless_relay.control_io import ControlChannel, read_preamble

MESSAGES = [
    Register(kind="http", subdomain="app", token="t0k"),
    Register(kind="tcp", remote_port=0),
    Registered(
        kind="http", url="http://app.localhost:8080", urls=["http://app.localhost:8080"], subdomain="app"
    ),
    Registered(kind="udp", url="udp://127.0.0.1:5353", remote_port=5353),
    NewConn(client_addr="203.0.113.5:40000", proto="http", request="GET /"),
    Ping(nonce=7),
    Pong(nonce=7),
    Error(code="name-taken", message="app.localhost is taken"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.type)
def test_round_trip(message: object) -> None:
    assert ControlDecoder().feed(encode(message)) == [message]  # type: ignore[arg-type]


def test_byte_by_byte_feeding_gives_the_same_messages() -> None:
    wire = b"".join(encode(m) for m in MESSAGES)
    decoder = ControlDecoder()
    out = []
    for index in range(len(wire)):
        out += decoder.feed(wire[index : index + 1])
    assert out == MESSAGES


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"type": "launch"}',
        b'{"type": "register", "kind": "ftp"}',
        b'{"type": "register", "kind": "tcp", "remote_port": 70000}',
        b'{"type": "register", "kind": "tcp", "extra": 1}',
        b'{"type": "error", "code": "nope", "message": "x"}',
        b"not json",
        b"\xff\xfe",
    ],
)
def test_invalid_messages_raise_control_error(body: bytes) -> None:
    with pytest.raises(ControlError):
        ControlDecoder().feed(len(body).to_bytes(4, "big") + body)


def test_oversized_length_is_refused_before_buffering() -> None:
    with pytest.raises(ControlError, match="exceeds"):
        ControlDecoder().feed((MAX_MESSAGE + 1).to_bytes(4, "big"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_decode_or_raise_control_error(data: bytes) -> None:
    try:
        ControlDecoder().feed(data)
    except ControlError:
        pass


async def test_preamble_then_raw_bytes_on_one_stream() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(encode(NewConn(client_addr="1.2.3.4:5", proto="tcp")) + b"\x00\x00\x00\x05raw")
    result = await read_preamble(right)
    assert result == (NewConn(client_addr="1.2.3.4:5", proto="tcp"), b"\x00\x00\x00\x05raw")


async def test_channel_reads_whole_messages_and_eof() -> None:
    left, right = trio.testing.memory_stream_pair()
    sender, receiver = ControlChannel(left), ControlChannel(right)
    await sender.send(Ping(nonce=1))
    await sender.send(Pong(nonce=2))
    await left.send_eof()
    assert await receiver.receive() == Ping(nonce=1)
    assert await receiver.receive() == Pong(nonce=2)
    assert await receiver.receive() is None
