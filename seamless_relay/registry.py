"""Who owns which public name or port: pure logic, no I/O, time passed in.

Names are bound to a client's Seam identity key, never to an IP address. A
name released by a disconnect stays reserved for its owner for a grace
period, so a stranger cannot grab it while the owner reconnects.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # RFC 1035 label, lowercase
RANDOM_ALPHABET = string.ascii_lowercase + string.digits
DEFAULT_GRACE = 300.0  # seconds a released name stays with its owner


class RegistryError(Exception):
    """A claim was refused; ``code`` is a control-protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Entry(Generic[T]):
    owner: bytes
    value: T | None  # None while only reserved (owner disconnected)
    reserved_until: float = 0.0


class Registry(Generic[T]):
    """Maps keys (subdomains or ports) to live values, with per-owner reservations."""

    def __init__(self, *, grace: float = DEFAULT_GRACE) -> None:
        self.grace = grace
        self._entries: dict[object, _Entry[T]] = {}

    def get(self, key: object) -> T | None:
        entry = self._entries.get(key)
        return entry.value if entry is not None else None

    def owner(self, key: object) -> bytes | None:
        entry = self._entries.get(key)
        return entry.owner if entry is not None else None

    def is_reserved(self, key: object) -> bool:
        """True while the key waits for its disconnected owner (no live value)."""
        entry = self._entries.get(key)
        return entry is not None and entry.value is None

    def available(self, key: object, owner: bytes, now: float) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return True
        if entry.value is None and (entry.owner == owner or now >= entry.reserved_until):
            return True
        return False

    def claim(self, key: object, owner: bytes, value: T, now: float) -> None:
        entry = self._entries.get(key)
        if entry is not None and not self.available(key, owner, now):
            if entry.value is not None and entry.owner == owner:
                raise RegistryError("name-taken", f"{key} is already in use by another of your tunnels")
            raise RegistryError("name-taken", f"{key} is taken")
        self._entries[key] = _Entry(owner, value)

    def release(self, key: object, value: T, now: float) -> None:
        """The tunnel is gone: keep the key for its owner for the grace period."""
        entry = self._entries.get(key)
        if entry is None or entry.value is not value:
            return
        entry.value = None
        entry.reserved_until = now + self.grace

    def expire(self, now: float) -> None:
        for key in [k for k, e in self._entries.items() if e.value is None and now >= e.reserved_until]:
            del self._entries[key]

    def reserve(self, key: object, owner: bytes, until: float) -> None:
        """Hold ``key`` for ``owner`` until ``until`` (restoring reservations after a restart)."""
        if key not in self._entries:
            self._entries[key] = _Entry(owner, None, until)

    def snapshot(self) -> list[tuple[object, bytes, float | None]]:
        """(key, owner, reserved_until or None while live) for every entry, for persisting."""
        return [
            (k, e.owner, None if e.value is not None else e.reserved_until) for k, e in self._entries.items()
        ]

    def reserved_for(self, owner: bytes) -> list[object]:
        return [k for k, e in self._entries.items() if e.owner == owner]

    def __len__(self) -> int:
        return sum(1 for e in self._entries.values() if e.value is not None)


def validate_subdomain(name: str, *, reserved: frozenset[str]) -> str:
    """A requested subdomain as a lowercase DNS label; RegistryError('invalid'/'forbidden') otherwise."""
    label = name.strip().lower()
    if not LABEL_RE.match(label):
        raise RegistryError(
            "invalid",
            f"subdomain {name!r} is not a valid DNS label (a-z, 0-9 and inner '-', 1-63 characters)",
        )
    if label in reserved:
        raise RegistryError("forbidden", f"subdomain {label!r} is reserved on this relay")
    return label


def random_subdomain(rng: random.Random, *, length: int, prefix: str = "") -> str:
    return prefix + "".join(rng.choice(RANDOM_ALPHABET) for _ in range(length))
