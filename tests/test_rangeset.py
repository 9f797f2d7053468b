"""RangeSet against a plain ``set[int]`` model.

Packet-number ACK ranges, stream ack/loss bookkeeping and handshake reassembly
all trust RangeSet to stay canonical: sorted, disjoint, never touching, so that
``len()`` is the number of ranges an ACK frame must encode.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from seam.rangeset import RangeSet

LIMIT = 64  # small universe, so random operations overlap, touch and nest often

bounds = st.tuples(st.integers(-2, LIMIT), st.integers(-2, LIMIT))
operations = st.lists(st.tuples(st.sampled_from(["add", "subtract"]), bounds), max_size=40)


def runs(model: set[int]) -> list[tuple[int, int]]:
    """The canonical half-open ranges of a set of integers: maximal runs, ascending."""
    out: list[tuple[int, int]] = []
    for value in sorted(model):
        if out and out[-1][1] == value:
            out[-1] = (out[-1][0], value + 1)
        else:
            out.append((value, value + 1))
    return out


def check_matches(rs: RangeSet, model: set[int], probes: set[int] | None = None) -> None:
    """Compare with the model; membership is checked at ``probes`` plus every range edge."""
    expected = runs(model)
    assert list(rs) == expected
    assert list(reversed(rs)) == expected[::-1]
    assert len(rs) == len(expected)
    assert bool(rs) == bool(model)
    assert rs.total() == len(model)
    edges = {v + d for start, stop in expected for v in (start, stop) for d in (-1, 0)}
    for value in edges | (probes if probes is not None else set(range(-4, LIMIT + 4))):
        assert (value in rs) == (value in model), value
    if model:
        assert rs.bounds() == (min(model), max(model) + 1)
        assert rs.first() == expected[0]


@settings(max_examples=200, deadline=None)
@given(operations)
def test_add_and_subtract_match_a_set_model(ops: list[tuple[str, tuple[int, int]]]) -> None:
    """The representation stays canonical, so each operation adds at most one range (a subtract
    can split one in two) and an ACK frame never carries redundant ranges."""
    rs = RangeSet()
    model: set[int] = set()
    for count, (op, (start, stop)) in enumerate(ops, start=1):
        if op == "add":
            rs.add(start, stop)
            model |= set(range(start, stop))
        else:
            rs.subtract(start, stop)
            model -= set(range(start, stop))
        check_matches(rs, model, {start - 1, start, stop - 1, stop})
        assert len(rs) <= count
    check_matches(rs, model)


@settings(max_examples=100, deadline=None)
@given(st.lists(bounds, max_size=30), st.randoms(use_true_random=False))
def test_result_does_not_depend_on_insertion_order(adds: list[tuple[int, int]], rng: random.Random) -> None:
    shuffled = list(adds)
    rng.shuffle(shuffled)
    assert RangeSet(adds) == RangeSet(shuffled)
    model = {v for start, stop in adds for v in range(start, stop)}
    check_matches(RangeSet(shuffled), model)


def test_touching_ranges_merge_from_either_side() -> None:
    rs = RangeSet()
    rs.add(10, 20)
    rs.add(20, 30)  # touches on the right (in-order fast path)
    rs.add(0, 10)  # touches on the left
    assert list(rs) == [(0, 30)]
    rs.add(40, 50)
    rs.add(30, 40)  # fills the gap exactly: three ranges become one
    assert list(rs) == [(0, 50)]


def test_add_spanning_many_ranges_collapses_them() -> None:
    rs = RangeSet([(0, 1), (3, 4), (6, 7), (9, 10), (20, 21)])
    rs.add(2, 9)
    assert list(rs) == [(0, 1), (2, 10), (20, 21)]


def test_subtract_splits_a_range_in_two() -> None:
    rs = RangeSet([(0, 100)])
    rs.subtract(40, 60)
    assert list(rs) == [(0, 40), (60, 100)]
    rs.subtract(0, 100)
    assert list(rs) == []
    assert not rs


def test_empty_and_inverted_ranges_are_ignored() -> None:
    rs = RangeSet([(5, 5), (9, 3)])
    assert list(rs) == []
    rs.add(0, 10)
    rs.add(7, 7)
    rs.subtract(4, 4)
    rs.subtract(8, 2)
    assert list(rs) == [(0, 10)]
    rs.subtract(50, 60)  # entirely outside: no effect
    assert list(rs) == [(0, 10)]


def test_pop_smallest_removes_the_first_range() -> None:
    rs = RangeSet([(30, 40), (0, 10), (15, 20)])
    assert rs.pop_smallest() == (0, 10)
    assert list(rs) == [(15, 20), (30, 40)]
    assert 5 not in rs


def test_large_packet_numbers() -> None:
    """Packet numbers are 62-bit varints; nothing may be sized by the value."""
    top = (1 << 62) - 1
    rs = RangeSet([(top - 10, top + 1), (0, 1)])
    assert top in rs and (top - 11) not in rs
    assert rs.total() == 12
    assert rs.bounds() == (0, top + 1)


def test_equality_is_by_content() -> None:
    assert RangeSet([(0, 5), (5, 9)]) == RangeSet([(0, 9)])
    assert RangeSet([(0, 5)]) != RangeSet([(0, 6)])
    assert RangeSet() != [(0, 5)]
    assert repr(RangeSet([(1, 2)])) == "RangeSet([(1, 2)])"
