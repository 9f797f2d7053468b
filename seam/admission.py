"""Server-side admission of new connections (docs/protocol.md sections 1.2-1.3 and 4).

Theory of operation
-------------------
Datagrams for a connection ID the server does not know come here. A HELLO of
at least 1200 bytes is answered with a RETRY carrying a stateless cookie: no
state is kept and the answer is under 64 bytes, so a spoofed source gets at
most a small fraction of what the spoofer sent. Only HANDSHAKE fragments of
msg1 whose cookie validates for their source address and connection IDs may
create state: a bounded reassembly entry, then, once msg1 is complete, the
ML-KEM and X25519 work of :meth:`Connection.accept`. Everything else is
dropped and counted by reason.
"""

from __future__ import annotations

import os
import random
from collections import OrderedDict
from collections.abc import Callable

from seam import packet as pk
from seam.config import SeamConfig
from seam.connection import Address, Connection, _Reassembly
from seam.cookie import CookieMinter
from seam.errors import HandshakeError, ParseError
from seam.identity import Identity

MAX_PENDING_HANDSHAKES = 1024  # partially reassembled msg1s held at once
MAX_HANDSHAKING_CONNECTIONS = 4096  # admitted connections still without msg3
PENDING_LIFETIME = 10.0  # seconds a partial msg1 is kept


class Admission:
    """Turns cookie-validated msg1s into server :class:`Connection` objects."""

    def __init__(
        self,
        identity: Identity,
        config: SeamConfig,
        *,
        cookie_key: bytes | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.identity = identity
        self.config = config
        self._cookies = CookieMinter(cookie_key)
        self._rng = rng or random.Random()
        self._pending: OrderedDict[tuple[Address, bytes], tuple[float, _Reassembly]] = OrderedDict()
        self.dropped: dict[str, int] = {}
        self.refused = 0
        self.handshaking: Callable[[], int] = lambda: 0  # set by the endpoint that owns the connections

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def receive_datagram(
        self, data: bytes, addr: Address, now: float
    ) -> tuple[list[tuple[bytes, Address]], Connection | None]:
        """Handle a datagram for an unknown connection; never raises."""
        try:
            header = pk.parse_header(data)
        except ParseError:
            self._drop("malformed")
            return [], None
        if isinstance(header, pk.Hello):
            if len(data) < pk.MIN_HELLO_SIZE:
                self._drop("short-hello")
                return [], None
            server_cid = self._new_cid()
            cookie = self._cookies.mint(addr, header.scid, server_cid, now)
            return [(pk.encode_retry(header.scid, server_cid, cookie), addr)], None
        if not isinstance(header, pk.HandshakeFragment):
            self._drop("unknown-cid")
            return [], None
        if header.message != 1:
            self._drop("unknown-cid")
            return [], None
        if not self._cookies.validate(header.cookie, addr, header.scid, header.dcid, now):
            self._drop("bad-cookie")
            return [], None
        return [], self._reassemble(header, addr, now)

    def _new_cid(self) -> bytes:
        return os.urandom(pk.CID_LEN)

    def _expire(self, now: float) -> None:
        while self._pending:
            key, (started, _) = next(iter(self._pending.items()))
            if now - started < PENDING_LIFETIME:
                break
            del self._pending[key]

    def _reassemble(self, frag: pk.HandshakeFragment, addr: Address, now: float) -> Connection | None:
        self._expire(now)
        key = (addr, frag.dcid)
        entry = self._pending.get(key)
        if entry is None:
            if len(self._pending) >= MAX_PENDING_HANDSHAKES:
                self._drop("handshake-backlog")
                return None
            entry = (now, _Reassembly(frag.total_len))
            self._pending[key] = entry
        held = entry[1]
        if held.total != frag.total_len:
            self._drop("handshake-fragment-mismatch")
        message = held.add(frag)
        if message is None:
            return None
        del self._pending[key]
        if self.handshaking() >= MAX_HANDSHAKING_CONNECTIONS:
            self._drop("handshake-backlog")  # the client retries; no ML-KEM work now
            return None
        try:
            return Connection.accept(
                identity=self.identity,
                config=self.config,
                local_cid=frag.dcid,
                remote_cid=frag.scid,
                peer_address=addr,
                message1=message,
                now=now,
                rng=self._rng,
            )
        except HandshakeError:
            self.refused += 1
            self._drop("handshake-refused")
            return None
