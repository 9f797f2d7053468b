"""A sorted set of disjoint half-open integer ranges.

Used for received packet numbers (ACK frames), acknowledged and lost stream
byte ranges, and handshake reassembly. ``add`` is O(log n + merged).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator


class RangeSet:
    __slots__ = ("_starts", "_stops")

    def __init__(self, ranges: list[tuple[int, int]] | None = None) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []
        for start, stop in ranges or ():
            self.add(start, stop)

    def __len__(self) -> int:
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._stops, strict=True))

    def __reversed__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(reversed(self._starts), reversed(self._stops), strict=True))

    def __contains__(self, value: int) -> bool:
        i = bisect.bisect_right(self._starts, value) - 1
        return i >= 0 and value < self._stops[i]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"RangeSet({list(self)!r})"

    def add(self, start: int, stop: int) -> None:
        if start >= stop:
            return
        starts, stops = self._starts, self._stops
        # Fast path: appending at or past the end (in-order arrival).
        if not starts or start > stops[-1]:
            starts.append(start)
            stops.append(stop)
            return
        if start == stops[-1]:
            stops[-1] = max(stops[-1], stop)
            return
        lo = bisect.bisect_left(stops, start)  # first range whose stop >= start
        hi = bisect.bisect_right(starts, stop)  # ranges with start <= stop overlap or touch
        if lo == hi:
            starts.insert(lo, start)
            stops.insert(lo, stop)
            return
        new_start = min(start, starts[lo])
        new_stop = max(stop, stops[hi - 1])
        starts[lo:hi] = [new_start]
        stops[lo:hi] = [new_stop]

    def subtract(self, start: int, stop: int) -> None:
        if start >= stop or not self._starts:
            return
        starts, stops = self._starts, self._stops
        lo = bisect.bisect_right(stops, start)  # first range with stop > start
        hi = bisect.bisect_left(starts, stop)  # ranges with start < stop
        if lo >= hi:
            return
        pieces_start: list[int] = []
        pieces_stop: list[int] = []
        if starts[lo] < start:
            pieces_start.append(starts[lo])
            pieces_stop.append(start)
        if stops[hi - 1] > stop:
            pieces_start.append(stop)
            pieces_stop.append(stops[hi - 1])
        starts[lo:hi] = pieces_start
        stops[lo:hi] = pieces_stop

    def bounds(self) -> tuple[int, int]:
        return self._starts[0], self._stops[-1]

    def first(self) -> tuple[int, int]:
        return self._starts[0], self._stops[0]

    def pop_smallest(self) -> tuple[int, int]:
        return self._starts.pop(0), self._stops.pop(0)

    def total(self) -> int:
        return sum(b - a for a, b in self)
