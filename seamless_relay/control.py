"""The Seamless control protocol (docs/protocol.md, "Tunnel control protocol").

Sans-IO: :class:`ControlDecoder` takes bytes and yields validated messages;
:func:`encode` turns a message into bytes. Both the relay and the client
import this module, so the two ends cannot drift apart.

Framing: each message is a 4-byte big-endian length followed by that many
bytes of UTF-8 JSON, an object whose ``type`` field names the message. The
control stream is the first stream the client opens; every forwarded
connection then travels on a stream the relay opens, starting with one
``new_conn`` message and continuing as raw bytes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

PROTOCOL_VERSION = 1
MAX_MESSAGE = 64 * 1024  # bytes of JSON in one control message
LENGTH_PREFIX = 4  # bytes

TunnelKind = Literal["http", "tcp", "udp"]
ErrorCode = Literal[
    "unsupported-version",
    "bad-token",
    "forbidden",
    "name-taken",
    "limit-reached",
    "invalid",
    "internal",
    "replaced",
]


class ControlError(Exception):
    """Bytes on the control stream that are not a valid message."""


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Register(_Message):
    """Client → relay: open a tunnel."""

    type: Literal["register"] = "register"
    version: int = PROTOCOL_VERSION
    token: str | None = Field(default=None, max_length=512)
    kind: TunnelKind
    subdomain: str | None = Field(default=None, max_length=63)
    hostname: str | None = Field(default=None, max_length=253)  # a custom domain, if the relay allows them
    remote_port: int | None = Field(default=None, ge=0, le=65535)


class Registered(_Message):
    """Relay → client: the tunnel is live at ``url`` (HTTP) or ``remote_port`` (TCP/UDP)."""

    type: Literal["registered"] = "registered"
    kind: TunnelKind
    url: str | None = None
    urls: list[str] = Field(default_factory=list)  # every public URL (http and https) of an HTTP tunnel
    subdomain: str | None = None
    remote_port: int | None = None


class NewConn(_Message):
    """Relay → client, first message of each relay-opened stream: who is connecting."""

    type: Literal["new_conn"] = "new_conn"
    client_addr: str = Field(max_length=64)
    proto: TunnelKind
    request: str | None = Field(default=None, max_length=2048)  # "GET /path" for HTTP, for the client's log


class Ping(_Message):
    """Either side: are you still there? (The transport has its own keepalive; this checks the relay's
    tunnel logic end to end.)"""

    type: Literal["ping"] = "ping"
    nonce: int = Field(default=0, ge=0, lt=2**63)


class Pong(_Message):
    type: Literal["pong"] = "pong"
    nonce: int = Field(default=0, ge=0, lt=2**63)


class Error(_Message):
    """Relay → client: why a request was refused. The client does not retry these."""

    type: Literal["error"] = "error"
    code: ErrorCode
    message: str = Field(max_length=1024)


Message = Annotated[Register | Registered | NewConn | Ping | Pong | Error, Field(discriminator="type")]
_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)


def encode(message: _Message) -> bytes:
    body = message.model_dump_json(exclude_none=True).encode("utf-8")
    return len(body).to_bytes(LENGTH_PREFIX, "big") + body


def decode_body(body: bytes) -> Message:
    """One message from its JSON body; ControlError names what was wrong."""
    try:
        return _ADAPTER.validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "message"
        raise ControlError(f"invalid control message ({where}: {first.get('msg')})") from None


class ControlDecoder:
    """Incremental decoder; bounded by ``MAX_MESSAGE`` whatever the peer sends."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        out: list[Message] = []
        while len(self._buffer) >= LENGTH_PREFIX:
            length = int.from_bytes(self._buffer[:LENGTH_PREFIX], "big")
            if length > MAX_MESSAGE:
                raise ControlError(f"control message of {length} bytes exceeds {MAX_MESSAGE}")
            if len(self._buffer) < LENGTH_PREFIX + length:
                break
            body = bytes(self._buffer[LENGTH_PREFIX : LENGTH_PREFIX + length])
            del self._buffer[: LENGTH_PREFIX + length]
            out.append(decode_body(body))
        return out

    def take_rest(self) -> bytes:
        """Bytes after the last whole message (raw data following a ``new_conn``)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest
