"""The relay's store file: its Seam identity plus the names and ports it holds for clients.

One JSON file, written atomically with mode 0600 (it holds the private
keys). Reservations survive a restart, so a relay that comes back does not
hand a disconnected client's name or port to a stranger before the owner
has had its grace period to reconnect. Times on disk are wall-clock seconds;
in memory the registries use trio's monotonic clock.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seam import Identity
from seam.identity import write_private_file
from seamless_relay.registry import Registry

logger = logging.getLogger("seamless.relay.store")

HTTP = "http"
PORTS = "ports"


@dataclass(frozen=True)
class Reservation:
    registry: str  # HTTP or PORTS
    key: str | tuple[str, int]
    owner: bytes
    until: float  # wall-clock seconds


def _key_to_json(key: object) -> Any:
    return list(key) if isinstance(key, tuple) else key


def _key_from_json(value: Any) -> str | tuple[str, int]:
    if isinstance(value, str):
        return value
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    ):
        return (value[0], value[1])
    raise ValueError(f"bad reservation key {value!r}")


class RelayStore:
    """Load and save the store file; a corrupt reservation list is logged and ignored, never fatal."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load_identity(self) -> Identity:
        """The relay's identity, created (0600) on first start; ValueError names a corrupt file."""
        return Identity.load_or_create(self.path)

    def load_reservations(self) -> list[Reservation]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            out = []
            for item in doc.get("reservations", []):
                out.append(
                    Reservation(
                        registry=str(item["registry"]),
                        key=_key_from_json(item["key"]),
                        owner=bytes.fromhex(item["owner"]),
                        until=float(item["until"]),
                    )
                )
            return out
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("ignoring the reservations in %s: %s", self.path, exc)
            return []

    def save(
        self, identity: Identity, registries: dict[str, Registry[Any]], *, now: float, grace: float
    ) -> None:
        """Write identity and reservations; a live name is saved as reserved for ``grace`` from now."""
        wall = time.time()
        reservations = []
        for name, registry in registries.items():
            for key, owner, until in registry.snapshot():
                wall_until = wall + (grace if until is None else until - now)
                reservations.append(
                    {
                        "registry": name,
                        "key": _key_to_json(key),
                        "owner": owner.hex(),
                        "until": round(wall_until, 3),
                    }
                )
        doc = json.loads(self.path.read_text(encoding="utf-8"))  # the identity fields, as Identity wrote them
        doc["reservations"] = reservations
        try:
            write_private_file(self.path, json.dumps(doc, indent=1))
        except OSError as exc:
            logger.error("cannot write the store %s: %s", self.path, exc)

    @staticmethod
    def restore(reservations: list[Reservation], registries: dict[str, Registry[Any]], *, now: float) -> int:
        """Put unexpired reservations back into the registries; returns how many."""
        wall = time.time()
        restored = 0
        for item in reservations:
            registry = registries.get(item.registry)
            if registry is None or item.until <= wall:
                continue
            registry.reserve(item.key, item.owner, now + (item.until - wall))
            restored += 1
        return restored
