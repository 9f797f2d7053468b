"""Stateless address-validation cookies (docs/protocol.md section 4).

A cookie binds the client's address and both connection IDs to a time, under
a key only the server knows, so the server can check on msg1 that the client
really receives at the address it claims, without remembering anything.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os

COOKIE_MAC_LEN = 16  # bytes of truncated HMAC-SHA-256
COOKIE_LEN = 8 + COOKIE_MAC_LEN
CLOCK_SKEW = 1.0  # seconds a cookie may appear to come from the future


def _pack_address(addr: tuple[str, int]) -> bytes:
    host, port = addr[0], addr[1]
    try:
        packed = ipaddress.ip_address(host.split("%", 1)[0]).packed
    except ValueError:
        packed = host.encode("utf-8", "replace")
    return packed + (port & 0xFFFF).to_bytes(2, "big")


class CookieMinter:
    """Mints and validates cookies with a per-process random key."""

    def __init__(self, key: bytes | None = None, *, lifetime: float = 30.0) -> None:
        self._key = key if key is not None else os.urandom(32)
        self.lifetime = lifetime

    def _mac(self, issued_ms: int, addr: tuple[str, int], client_cid: bytes, server_cid: bytes) -> bytes:
        message = issued_ms.to_bytes(8, "big") + _pack_address(addr) + client_cid + server_cid
        return hmac.digest(self._key, message, hashlib.sha256)[:COOKIE_MAC_LEN]

    def mint(self, addr: tuple[str, int], client_cid: bytes, server_cid: bytes, now: float) -> bytes:
        issued_ms = max(0, int(now * 1000))
        return issued_ms.to_bytes(8, "big") + self._mac(issued_ms, addr, client_cid, server_cid)

    def validate(
        self, cookie: bytes, addr: tuple[str, int], client_cid: bytes, server_cid: bytes, now: float
    ) -> bool:
        """True only for an untampered, unexpired cookie minted for exactly these values."""
        if len(cookie) != COOKIE_LEN:
            return False
        issued_ms = int.from_bytes(cookie[:8], "big")
        age = now - issued_ms / 1000
        if age > self.lifetime or age < -CLOCK_SKEW:
            return False
        return hmac.compare_digest(cookie[8:], self._mac(issued_ms, addr, client_cid, server_cid))
