"""Packet protection, key update and the replay window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seam.crypto import Cipher, PacketProtection, ReplayWindow, hkdf_expand, next_secret
from seam.errors import CryptoError

SECRET = bytes(range(32))


@pytest.mark.parametrize("cipher", list(Cipher))
def test_seal_open_round_trip_and_tamper(cipher: Cipher) -> None:
    tx = PacketProtection.from_secret(cipher, SECRET)
    rx = PacketProtection.from_secret(cipher, SECRET)
    sealed = tx.seal(7, b"header", b"payload")
    assert rx.open(7, b"header", sealed) == b"payload"
    with pytest.raises(CryptoError):
        rx.open(8, b"header", sealed)  # other packet number -> other nonce
    with pytest.raises(CryptoError):
        rx.open(7, b"Header", sealed)  # header is authenticated
    with pytest.raises(CryptoError):
        rx.open(7, b"header", sealed[:-1] + bytes([sealed[-1] ^ 1]))


def test_nonces_differ_per_packet_number() -> None:
    tx = PacketProtection.from_secret(Cipher.CHACHA20_POLY1305, SECRET)
    assert tx.seal(1, b"", b"same") != tx.seal(2, b"", b"same")


def test_key_update_vector_and_independence() -> None:
    """docs/protocol.md 6.1: secret_{n+1} = HKDF-Expand(secret_n, "seam 1 ku", 32)."""
    assert next_secret(SECRET) == hkdf_expand(SECRET, b"seam 1 ku", 32)
    assert next_secret(SECRET).hex() == "1c11f7d394ecfde98417b2b425adf74f0e820a2ffe0305578bfeff1de1cc34ce"
    gen0 = PacketProtection.from_secret(Cipher.CHACHA20_POLY1305, SECRET)
    gen1 = gen0.next()
    with pytest.raises(CryptoError):
        gen1.open(0, b"", gen0.seal(0, b"", b"x"))


def test_hkdf_expand_rfc5869_case_1() -> None:
    """RFC 5869 appendix A.1, expand step."""
    prk = bytes.fromhex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = hkdf_expand(prk, info, 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_cipher_names() -> None:
    assert Cipher.from_name("aes256gcm") is Cipher.AES_256_GCM
    with pytest.raises(ValueError, match="chacha20poly1305"):
        Cipher.from_name("rot13")


@given(st.lists(st.integers(0, 5000), max_size=300))
def test_replay_window_matches_a_set_model(numbers: list[int]) -> None:
    window = ReplayWindow(size=1024)
    seen: set[int] = set()
    largest = -1
    for pn in numbers:
        expected = pn in seen or (largest >= 0 and pn <= largest - 1024)
        assert window.is_duplicate_or_stale(pn) == expected
        if not expected:
            window.mark(pn)
            seen.add(pn)
            largest = max(largest, pn)
    assert window.largest == largest


def test_replay_check_changes_nothing() -> None:
    window = ReplayWindow()
    window.mark(10)
    for _ in range(3):
        assert not window.is_duplicate_or_stale(11)
    assert window.largest == 10
