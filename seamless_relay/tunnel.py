"""One registered tunnel: a client's Seam connection plus what it exposes.

A ``Tunnel`` is created when a client's Register is accepted and lives
exactly as long as the client's connection. Everything it runs (its TCP
listener, its UDP socket, the public connections it forwards) lives in
the tunnel's own nursery, so one tunnel's failure never touches another.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import trio

from seam import ConnectionClosed, SeamConnection, SeamStream
from seamless_relay.control import NewConn, TunnelKind, encode

logger = logging.getLogger("seamless.relay")


class TunnelGone(Exception):
    """The client's connection closed while a public connection wanted to use it."""


@dataclass(eq=False)
class Tunnel:
    """A live tunnel: the client connection, its kind and public name or port."""

    conn: SeamConnection
    owner: bytes  # the client's static X25519 key: names and ports are bound to it
    kind: TunnelKind
    name: str  # public hostname (http) or "tcp:PORT" / "udp:PORT"
    url: str
    remote_port: int | None = None
    subdomain: str | None = None
    socket: Any = None  # the bound TCP listener or UDP socket until its server task takes it over
    paused: bool = False
    nursery: trio.Nursery | None = None
    connections: int = 0  # forwarded connections so far
    active: int = 0  # forwarded connections open now
    bytes_in: int = 0
    bytes_out: int = 0
    registry_keys: list[object] = field(default_factory=list)
    control: Any = None  # the ControlChannel, to tell the client why its tunnel ends
    released: trio.Event = field(default_factory=trio.Event)  # set once its names and ports are free

    @property
    def owner_hex(self) -> str:
        return self.owner.hex()[:16]

    async def open_stream(self, client_addr: str, *, request: str | None = None) -> SeamStream:
        """A new stream to the client, announced with NewConn; TunnelGone if the client left."""
        try:
            stream = await self.conn.open_stream()
            message = NewConn(client_addr=client_addr[:64], proto=self.kind, request=request)
            await stream.send_all(encode(message))
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TunnelGone(f"tunnel {self.name} is gone") from exc
        self.connections += 1
        return stream


def format_address(address: object) -> str:
    """A socket peer address as ``host:port`` ("[v6]:port" for IPv6)."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = str(address[0]), int(address[1])
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)


def address_host(address: object) -> str:
    """The IP of a socket peer address, the key for limits and forwarding headers."""
    if isinstance(address, tuple) and address:
        return str(address[0])
    return str(address)
