"""Events the sans-IO :class:`seam.connection.Connection` emits.

Events are plain frozen records; the core never calls user code, so there is
no re-entrancy and tests can compare events with ``==``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """Keys are established; ``peer_x25519`` is the peer's static public key."""

    peer_x25519: bytes
    cipher: str


@dataclass(slots=True, init=False)  # not frozen: built per packet, and frozen construction costs 3x
class StreamDataReceived:
    """In-order bytes for a stream; ``end_stream`` marks the peer's FIN.

    The receiver must call ``Connection.stream_data_consumed`` once it has
    handed the bytes on, which is what re-opens the flow-control window.
    """

    stream_id: int
    data: bytes
    end_stream: bool

    # init=False: mypyc compiles a written-out __init__, not the one dataclass generates (171 -> 30 ns)
    def __init__(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        self.stream_id = stream_id
        self.data = data
        self.end_stream = end_stream


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer abandoned its send side of the stream (RESET_STREAM)."""

    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class StopSendingReceived:
    """The peer will not read any more of what we send on the stream."""

    stream_id: int
    error_code: int


@dataclass(slots=True, init=False)  # not frozen: built per packet, and frozen construction costs 3x
class DatagramReceived:
    data: bytes

    # init=False: mypyc compiles a written-out __init__, not the one dataclass generates (171 -> 30 ns)
    def __init__(self, data: bytes) -> None:
        self.data = data


@dataclass(frozen=True, slots=True)
class PathMigrated:
    """Authenticated packets now come from ``address`` (NAT rebinding or a new network)."""

    address: tuple[str, int]


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """The connection is over; no datagram will be produced after this one."""

    error_code: int
    reason: str
    by_peer: bool
    handshake_failure: str | None = None  # HandshakeError.reason when the handshake never finished


Event = (
    HandshakeCompleted
    | StreamDataReceived
    | StreamReset
    | StopSendingReceived
    | DatagramReceived
    | PathMigrated
    | ConnectionTerminated
)
