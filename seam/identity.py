"""Long-term keys: an X25519 key pair and an ML-KEM-768 key pair.

The relay's public keys are what a client pins; the client's X25519 public
key is what the relay binds names to. Private keys never appear in ``repr``
and files holding them are created with mode 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

X25519_KEY_LEN = 32  # bytes, RFC 7748
KEM_PUBLIC_KEY_LEN = 1184  # bytes, FIPS 203 ML-KEM-768
KEM_SEED_LEN = 64  # bytes, FIPS 203 (d || z)
FILE_FORMAT = "seam-identity-v1"


@dataclass(frozen=True, slots=True)
class PublicKeys:
    """A peer's static public keys, as pinned by a client."""

    x25519: bytes
    kem: bytes

    def __post_init__(self) -> None:
        if len(self.x25519) != X25519_KEY_LEN:
            raise ValueError(f"x25519 key must be {X25519_KEY_LEN} bytes, got {len(self.x25519)}")
        if len(self.kem) != KEM_PUBLIC_KEY_LEN:
            raise ValueError(f"kem key must be {KEM_PUBLIC_KEY_LEN} bytes, got {len(self.kem)}")

    @classmethod
    def from_hex(cls, x25519_hex: str, kem_hex: str) -> PublicKeys:
        return cls(
            _from_hex(x25519_hex, "x25519", X25519_KEY_LEN),
            _from_hex(kem_hex, "kem", KEM_PUBLIC_KEY_LEN),
        )

    @property
    def x25519_hex(self) -> str:
        return self.x25519.hex()

    @property
    def kem_hex(self) -> str:
        return self.kem.hex()

    @property
    def fingerprint(self) -> str:
        """A short, log-friendly digest of both keys."""
        return hashlib.sha256(self.x25519 + self.kem).hexdigest()[:16]


def _from_hex(text: str, name: str, length: int) -> bytes:
    text = text.strip()
    if len(text) != 2 * length:
        raise ValueError(f"{name} key must be {2 * length} hex characters, got {len(text)}")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{name} key is not valid hex") from None


class Identity:
    """A long-term Seam identity (both private keys)."""

    __slots__ = ("_kem_seed", "_public", "_x25519_bytes", "kem_private", "x25519_private")

    def __init__(self, x25519_private: bytes, kem_seed: bytes) -> None:
        if len(x25519_private) != X25519_KEY_LEN:
            raise ValueError("x25519 private key must be 32 bytes")
        if len(kem_seed) != KEM_SEED_LEN:
            raise ValueError("ML-KEM seed must be 64 bytes")
        self._x25519_bytes = x25519_private
        self._kem_seed = kem_seed
        self.x25519_private = X25519PrivateKey.from_private_bytes(x25519_private)
        self.kem_private = MLKEM768PrivateKey.from_seed_bytes(kem_seed)
        self._public = PublicKeys(
            self.x25519_private.public_key().public_bytes_raw(),
            self.kem_private.public_key().public_bytes_raw(),
        )

    def __repr__(self) -> str:
        return f"<Identity {self._public.fingerprint}>"

    @classmethod
    def generate(cls) -> Identity:
        return cls(os.urandom(X25519_KEY_LEN), os.urandom(KEM_SEED_LEN))

    @classmethod
    def from_private_bytes(cls, x25519_private: bytes, kem_seed: bytes) -> Identity:
        return cls(x25519_private, kem_seed)

    @property
    def public(self) -> PublicKeys:
        return self._public

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        """Read an identity file; a malformed one raises ValueError naming the file."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("format") != FILE_FORMAT:
                raise ValueError(f"format is not {FILE_FORMAT}")
            return cls(bytes.fromhex(doc["x25519_private"]), bytes.fromhex(doc["kem_seed"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path}: not a valid Seam identity file ({exc})") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically with mode 0600 from the first byte on."""
        write_private_file(
            Path(path),
            json.dumps(
                {
                    "format": FILE_FORMAT,
                    "x25519_private": self._x25519_bytes.hex(),
                    "kem_seed": self._kem_seed.hex(),
                    "x25519_public": self._public.x25519_hex,
                },
                indent=1,
            ),
        )

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> Identity:
        path = Path(path)
        if path.exists():
            return cls.load(path)
        identity = cls.generate()
        identity.save(path)
        return identity


def write_private_file(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``; the file is 0600 at every moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp creates 0600
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
