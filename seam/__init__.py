"""Seam: a post-quantum encrypted, multiplexed transport over UDP.

The public API::

    identity = seam.Identity.generate()
    async with seam.listen("0.0.0.0", 4443, identity=identity) as listener:
        conn = await listener.accept()
        stream = await conn.accept_stream()

    async with seam.connect(host, 4443, server_keys=identity.public) as conn:
        stream = await conn.open_stream()
        await stream.send_all(b"hello")

The sans-IO core (:class:`seam.Connection`) is usable without trio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from seam.build import warn_if_stale
from seam.config import SeamConfig
from seam.connection import Connection, ConnectionStats
from seam.errors import (
    ConnectionClosed,
    CryptoError,
    ErrorCode,
    HandshakeError,
    LocalProtocolError,
    ParseError,
    RemoteProtocolError,
    SeamError,
    StreamReset,
)
from seam.identity import Identity, PublicKeys

if TYPE_CHECKING:
    from seam._trio.connection import SeamConnection, SeamListener, connect, listen, serve
    from seam._trio.stream import SeamStream

    Stream = SeamStream
    Listener = SeamListener

warn_if_stale()

_TRIO_NAMES = {
    "SeamConnection": ("seam._trio.connection", "SeamConnection"),
    "SeamListener": ("seam._trio.connection", "SeamListener"),
    "Listener": ("seam._trio.connection", "SeamListener"),
    "connect": ("seam._trio.connection", "connect"),
    "listen": ("seam._trio.connection", "listen"),
    "serve": ("seam._trio.connection", "serve"),
    "SeamStream": ("seam._trio.stream", "SeamStream"),
    "Stream": ("seam._trio.stream", "SeamStream"),
}


def __getattr__(name: str) -> Any:
    """Import the trio layer on first use, so the sans-IO core never pulls in trio."""
    try:
        module_name, attr = _TRIO_NAMES[name]
    except KeyError:
        raise AttributeError(f"module 'seam' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


__all__ = [
    "Connection",
    "ConnectionClosed",
    "ConnectionStats",
    "CryptoError",
    "ErrorCode",
    "HandshakeError",
    "Identity",
    "Listener",
    "LocalProtocolError",
    "ParseError",
    "PublicKeys",
    "RemoteProtocolError",
    "SeamConfig",
    "SeamConnection",
    "SeamError",
    "SeamListener",
    "SeamStream",
    "Stream",
    "StreamReset",
    "connect",
    "listen",
    "serve",
]
