"""Stateless address-validation cookies."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from seam.cookie import CookieMinter

ADDR = ("127.0.0.1", 5000)
C1, C2 = b"c" * 8, b"s" * 8


def test_round_trip() -> None:
    minter = CookieMinter(bytes(32))
    cookie = minter.mint(ADDR, C1, C2, 100.0)
    assert minter.validate(cookie, ADDR, C1, C2, 100.5)


def test_bound_to_address_cids_key_and_time() -> None:
    minter = CookieMinter(bytes(32))
    cookie = minter.mint(ADDR, C1, C2, 100.0)
    assert not minter.validate(cookie, ("127.0.0.1", 5001), C1, C2, 100.0)
    assert not minter.validate(cookie, ("127.0.0.2", 5000), C1, C2, 100.0)
    assert not minter.validate(cookie, ADDR, C2, C2, 100.0)
    assert not minter.validate(cookie, ADDR, C1, C1, 100.0)
    assert not minter.validate(cookie, ADDR, C1, C2, 131.0)  # expired after 30 s
    assert not minter.validate(cookie, ADDR, C1, C2, 98.0)  # from the future
    assert not CookieMinter(b"k" * 32).validate(cookie, ADDR, C1, C2, 100.0)


@given(st.binary(max_size=80))
def test_garbage_never_validates_or_raises(data: bytes) -> None:
    assert not CookieMinter(bytes(32)).validate(data, ADDR, C1, C2, 100.0)
