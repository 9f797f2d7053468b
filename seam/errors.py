"""The whole Seam exception hierarchy.

Local errors mean *our caller* misused the API; remote errors mean the *peer*
misbehaved. The core translates parse failures into ``RemoteProtocolError``
once, at the receive boundary, and never lets one escape
``Connection.receive_datagram``.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Wire error codes carried in CLOSE and RESET_STREAM frames (docs/protocol.md section 9)."""

    NO_ERROR = 0x00
    INTERNAL_ERROR = 0x01
    PROTOCOL_VIOLATION = 0x02
    FLOW_CONTROL_ERROR = 0x03
    STREAM_LIMIT_ERROR = 0x04
    STREAM_STATE_ERROR = 0x05
    FINAL_SIZE_ERROR = 0x06
    FRAME_ENCODING_ERROR = 0x07
    IDLE_TIMEOUT = 0x08
    KEY_UPDATE_ERROR = 0x09
    AEAD_LIMIT_REACHED = 0x0A
    APPLICATION_ERROR = 0x0B
    STREAM_CANCELLED = 0x0C


class SeamError(Exception):
    """Base class of every exception Seam raises."""


class ParseError(SeamError):
    """Bytes from the wire could not be decoded (truncated, oversized, unknown type)."""


class LocalProtocolError(SeamError):
    """Our caller used the API wrongly (e.g. wrote to a stream it already finished)."""


class RemoteProtocolError(SeamError):
    """The peer violated the protocol in an authenticated packet."""

    def __init__(self, message: str, *, code: ErrorCode = ErrorCode.PROTOCOL_VIOLATION) -> None:
        super().__init__(message)
        self.code = code


class CryptoError(SeamError):
    """An AEAD open failed or key material was invalid."""


class HandshakeError(SeamError):
    """The handshake could not complete.

    ``reason`` is one of ``"authentication"`` (the relay's keys did not match
    the pinned ones), ``"timeout"`` (no answer within the handshake deadline),
    ``"invalid-key"`` (a malformed or low-order public key, a bad KEM
    ciphertext), ``"invalid-message"`` (a damaged or forged handshake message,
    which the connection drops and counts) or ``"refused"`` (no common cipher).
    """

    def __init__(self, message: str, *, reason: str = "authentication") -> None:
        super().__init__(message)
        self.reason = reason


class ConnectionClosed(SeamError):
    """The connection is closed; ``reason`` says why and ``code`` carries the wire code."""

    def __init__(self, reason: str, *, code: int = ErrorCode.NO_ERROR, by_peer: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.by_peer = by_peer


class StreamReset(SeamError):
    """The peer reset the stream (RESET_STREAM) or asked us to stop sending (STOP_SENDING)."""

    def __init__(self, stream_id: int, code: int) -> None:
        super().__init__(f"stream {stream_id} reset by peer with code {code}")
        self.stream_id = stream_id
        self.code = code
