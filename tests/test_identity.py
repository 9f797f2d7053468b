"""Identity files and public-key parsing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from seam.identity import Identity, PublicKeys


def test_save_load_round_trip_with_mode_0600(tmp_path: Path) -> None:
    identity = Identity.generate()
    path = tmp_path / "sub" / "id.json"
    identity.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Identity.load(path).public == identity.public
    assert not [p for p in path.parent.iterdir() if p.name != "id.json"]  # no temp files left


def test_existing_file_with_loose_mode_is_rewritten_0600(tmp_path: Path) -> None:
    path = tmp_path / "id.json"
    path.write_text("{}")
    os.chmod(path, 0o644)
    Identity.generate().save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_repr_hides_secrets() -> None:
    identity = Identity.generate()
    assert identity._x25519_bytes.hex() not in repr(identity)
    assert identity.public.fingerprint in repr(identity)


def test_malformed_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"format": "seam-identity-v1", "x25519_private": "zz"}')
    with pytest.raises(ValueError, match=r"bad\.json"):
        Identity.load(path)


def test_public_keys_hex_round_trip_and_errors() -> None:
    keys = Identity.generate().public
    assert len(keys.x25519_hex) == 64 and len(keys.kem_hex) == 2368
    assert PublicKeys.from_hex(keys.x25519_hex, keys.kem_hex) == keys
    with pytest.raises(ValueError, match="x25519 key must be 64 hex characters"):
        PublicKeys.from_hex("abcd", keys.kem_hex)
    with pytest.raises(ValueError, match="kem key must be 2368 hex characters"):
        PublicKeys.from_hex(keys.x25519_hex, "00")
    with pytest.raises(ValueError, match="not valid hex"):
        PublicKeys.from_hex("zz" * 32, keys.kem_hex)


def test_load_or_create_is_stable(tmp_path: Path) -> None:
    path = tmp_path / "id.json"
    first = Identity.load_or_create(path)
    assert Identity.load_or_create(path).public == first.public
