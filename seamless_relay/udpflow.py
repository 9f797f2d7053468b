"""UDP flows over Seam datagrams: the framing and the flow table, no I/O.

Each public source address is a *flow* with a 32-bit id. Every Seam
datagram of a UDP tunnel is ``flow id (4 bytes, big-endian) || payload``
in both directions. Flows expire after ``IDLE_TIMEOUT`` without traffic;
the table is bounded, and a new source is refused (its datagram dropped)
while it is full, so a flood of spoofed sources costs bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

FLOW_HEADER = 4  # bytes
IDLE_TIMEOUT = 60.0  # seconds a flow lives without a datagram either way
MAX_FLOWS = 4096  # flows per tunnel

K = TypeVar("K")


def frame(flow_id: int, payload: bytes) -> bytes:
    return flow_id.to_bytes(FLOW_HEADER, "big") + payload


def unframe(datagram: bytes) -> tuple[int, bytes] | None:
    """(flow id, payload), or None for a datagram too short to carry a flow id."""
    if len(datagram) < FLOW_HEADER:
        return None
    return int.from_bytes(datagram[:FLOW_HEADER], "big"), datagram[FLOW_HEADER:]


@dataclass
class FlowTable(Generic[K]):
    """Two-way map between flow keys (public addresses) and flow ids, with idle expiry."""

    idle_timeout: float = IDLE_TIMEOUT
    max_flows: int = MAX_FLOWS
    _ids: dict[K, int] = field(default_factory=dict)
    _keys: dict[int, K] = field(default_factory=dict)
    _seen: dict[int, float] = field(default_factory=dict)
    _next: int = 1
    refused: int = 0

    def id_for(self, key: K, now: float) -> int | None:
        """The flow id for ``key``, creating the flow if there is room; None when full."""
        flow_id = self._ids.get(key)
        if flow_id is None:
            if len(self._ids) >= self.max_flows:
                self.refused += 1
                return None
            flow_id = self._next
            self._next = (self._next % 0xFFFFFFFF) + 1
            self._ids[key] = flow_id
            self._keys[flow_id] = key
        self._seen[flow_id] = now
        return flow_id

    def key_for(self, flow_id: int, now: float) -> K | None:
        key = self._keys.get(flow_id)
        if key is not None:
            self._seen[flow_id] = now
        return key

    def expire(self, now: float) -> list[K]:
        """Forget idle flows; returns their keys."""
        gone = [fid for fid, seen in self._seen.items() if now - seen >= self.idle_timeout]
        keys = []
        for flow_id in gone:
            key = self._keys.pop(flow_id)
            del self._ids[key]
            del self._seen[flow_id]
            keys.append(key)
        return keys

    def __len__(self) -> int:
        return len(self._ids)
