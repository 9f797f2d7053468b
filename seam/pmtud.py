"""Datagram packetization layer path MTU discovery (DPLPMTUD, RFC 8899), sans-IO.

Seam starts every connection at 1200-byte datagrams, which any path that
carries IPv6 delivers. Bigger datagrams cost the same per-packet work for
more bytes, which is most of what a pure-Python transport pays for, so the
connection probes for a bigger size the path allows:

* A **probe** is a DATA packet of exactly the size being tried, holding PING
  and PADDING only. Nothing in it is retransmitted, and losing it is not a
  congestion signal: a probe above the path MTU is simply dropped by the
  network (or refused by the sender's kernel, which sets DF).
* The search tries the ceiling first (most paths carry 1500-byte packets, so
  one round trip usually ends it), then halves the remaining interval:
  an acknowledged probe raises the size in use at once, ``MAX_PROBES`` lost
  probes of one size mark it too big. It ends when the interval is within
  ``SEARCH_GRANULARITY`` bytes, and starts again after
  ``RAISE_INTERVAL`` seconds if it ended below the ceiling (the path may
  have grown).
* **Black holes.** If the path stops delivering (the connection declares
  persistent congestion) while the size in use is above the base, the size
  drops back to the base and the search starts over: a route change to a
  smaller MTU then costs one search, not the connection. The first probe is
  the size that worked before, so a mere outage costs one round trip.

Nothing here knows about packets or time beyond the numbers it is handed;
``seam.connection`` builds and tracks the probe packets.
"""

from __future__ import annotations

import enum

BASE_DATAGRAM_SIZE = 1200  # bytes of UDP payload every Seam path must carry (docs/protocol.md 1)
MAX_PROBES = 3  # lost probes of one size before it counts as too big (RFC 8899 MAX_PROBES)
SEARCH_GRANULARITY = 16  # bytes: the search stops when what is left to learn is this small
RAISE_INTERVAL = 600.0  # seconds before searching above a size below the ceiling again (PMTU_RAISE_TIMER)


class SearchState(enum.Enum):
    SEARCHING = "searching"
    COMPLETE = "complete"
    DISABLED = "disabled"


class PathMtuSearch:
    """Which datagram size to use, and which to probe next, for one path."""

    __slots__ = (
        "_failures",
        "_high",
        "_raise_at",
        "_trying",
        "base",
        "ceiling",
        "current",
        "in_flight",
        "state",
    )

    def __init__(self, base: int, ceiling: int) -> None:
        self.base = base
        self.ceiling = max(ceiling, base)
        self.current = base  # bytes of UDP payload known to get through (the PLPMTU)
        self.in_flight: int | None = None  # the size of the probe awaiting its fate
        self.state = SearchState.DISABLED
        self._high = self.ceiling  # the largest size not yet known to fail
        self._trying: int | None = None  # the size being probed, kept across its retries
        self._failures = 0  # lost probes of ``_trying``
        self._raise_at: float | None = None
        if self.ceiling > base:
            self._start(first=self.ceiling)

    def _start(self, first: int) -> None:
        self.state = SearchState.SEARCHING
        self._high = self.ceiling
        self._trying = first
        self._failures = 0
        self.in_flight = None

    def next_probe(self, now: float) -> int | None:
        """The size to probe now, or None (nothing to learn, or a probe is out)."""
        if self.in_flight is not None or self.state is SearchState.DISABLED:
            return None
        if self.state is SearchState.COMPLETE:
            if self._raise_at is None or now < self._raise_at:
                return None
            self._start(first=self.ceiling)
        if self._trying is None:
            self._trying = (self.current + self._high + 1) // 2  # bisect what is left
        return self._trying

    def on_probe_sent(self, size: int) -> None:
        self.in_flight = size

    def on_probe_acked(self, size: int, now: float) -> bool:
        """A probe of ``size`` got through. Returns whether the size in use grew."""
        if size == self.in_flight:
            self.in_flight = None
        grew = size > self.current
        if grew:
            self.current = size
            self._high = max(self._high, size)
        if size == self._trying:
            self._trying = None
            self._failures = 0
        self._maybe_complete(now)
        return grew

    def on_probe_lost(self, size: int, now: float) -> None:
        """A probe of ``size`` was lost (or refused by the sender's kernel)."""
        if size == self.in_flight:
            self.in_flight = None
        if size != self._trying or self.state is not SearchState.SEARCHING:
            return  # a stale probe: not about the size being tried
        self._failures += 1
        if self._failures < MAX_PROBES:
            return  # try the same size again: one loss may be just loss
        self._high = size - 1  # too big: search below it
        self._trying = None
        self._failures = 0
        self._maybe_complete(now)

    def _maybe_complete(self, now: float) -> None:
        if self.state is not SearchState.SEARCHING:
            return
        if self.current >= self.ceiling or self._high - self.current < SEARCH_GRANULARITY:
            self.state = SearchState.COMPLETE
            self._trying = None
            self._raise_at = None if self.current >= self.ceiling else now + RAISE_INTERVAL

    def on_black_hole(self) -> bool:
        """The path stopped delivering. Returns whether the size in use shrank (to the base)."""
        if self.state is SearchState.DISABLED or self.current <= self.base:
            return False
        previous = self.current
        self.current = self.base
        self._start(first=previous)  # the size that worked before: one round trip after an outage
        return True
