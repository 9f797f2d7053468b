"""The per-datagram half of the endpoint's receive loop: each datagram to its connection's core.

Sync and free of trio, so setup.py compiles it with the core: the call into
``Connection.receive_datagram`` is then a C call, not an interpreted loop
iteration and a Python call per datagram (about 6 % of a receiver's CPU at
200 MB/s). The endpoint's async loop keeps the waiting and the pumping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from seam import packet as pk
from seam.connection import Address, Connection

logger = logging.getLogger("seam.endpoint")


class Routable(Protocol):
    """What the endpoint keeps per connection ID: the trio connection, holding its sans-IO core."""

    @property
    def core(self) -> Connection: ...


R = TypeVar("R", bound=Routable)


def route_datagrams(
    batch: list[tuple[bytes, Address]],
    codepoints: list[int],
    connections: Mapping[bytes, R],
    now: float,
    on_unknown: Callable[[bytes, Address, float], None] | None,
    count_drop: Callable[[str], None],
) -> list[R]:
    """Give every datagram of ``batch`` (``codepoints`` in step) to its connection, in order.

    Returns the connections that received any, each once, in first-touched
    order, for the caller to pump. A datagram for no known connection goes to
    ``on_unknown`` (the server's admission gate), or is counted and dropped.
    """
    touched: dict[int, R] = {}
    for index in range(len(batch)):
        data, addr = batch[index]
        cid = pk.destination_cid(data)
        conn = connections.get(cid) if cid is not None else None
        if conn is not None:
            conn.core.receive_datagram(data, addr, now, ecn=codepoints[index])
            touched[id(conn)] = conn
        elif on_unknown is not None:
            try:
                on_unknown(data, addr, now)
            except Exception:  # a bug of ours must not stop every connection on this socket
                logger.exception("internal error admitting a datagram from %s", addr)
                count_drop("internal-error")
        else:
            count_drop("unknown-cid")
    return list(touched.values())
