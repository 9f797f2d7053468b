"""Reading and writing control messages on a trio stream (the relay and the client share it)."""

from __future__ import annotations

from collections import deque

import trio

from seamless_relay.control import (
    LENGTH_PREFIX,
    MAX_MESSAGE,
    ControlDecoder,
    ControlError,
    Message,
    _Message,
    decode_body,
    encode,
)


class ControlChannel:
    """A control stream: whole messages in, whole messages out."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._decoder = ControlDecoder()
        self._pending: deque[Message] = deque()

    async def send(self, message: _Message) -> None:
        await self.stream.send_all(encode(message))

    async def receive(self) -> Message | None:
        """The next message, or None at EOF. ControlError for bytes that are not a message."""
        while not self._pending:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self._pending.extend(self._decoder.feed(data))
        return self._pending.popleft()


async def read_preamble(stream: trio.abc.ReceiveStream) -> tuple[Message, bytes] | None:
    """The one message that opens a forwarded stream, and the raw bytes already read after it.

    None if the stream ended first; ControlError if the bytes are not a message.
    """
    buffer = bytearray()
    while True:
        if len(buffer) >= LENGTH_PREFIX:
            length = int.from_bytes(buffer[:LENGTH_PREFIX], "big")
            if length > MAX_MESSAGE:
                raise ControlError(f"control message of {length} bytes exceeds {MAX_MESSAGE}")
            if len(buffer) >= LENGTH_PREFIX + length:
                message = decode_body(bytes(buffer[LENGTH_PREFIX : LENGTH_PREFIX + length]))
                return message, bytes(buffer[LENGTH_PREFIX + length :])
        data = await stream.receive_some(65536)
        if not data:
            return None
        buffer += data
