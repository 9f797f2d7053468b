"""Packet protection: key schedule, AEAD, replay window, key update.

Shaped like pyca/cryptography: classmethod constructors, explicit nonces
and associated data, one exception type (:class:`CryptoError`) per failure.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import platform
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from seam.errors import CryptoError

KEY_LEN = 32  # bytes, both ciphers
IV_LEN = 12  # bytes, RFC 8439 / RFC 5116 nonce length
LABEL_KEY = b"seam 1 key"
LABEL_IV = b"seam 1 iv"
LABEL_KEY_UPDATE = b"seam 1 ku"


class Cipher(enum.IntEnum):
    """Traffic AEADs, by the id carried in handshake msg1 (docs/protocol.md section 3)."""

    CHACHA20_POLY1305 = 1
    AES_256_GCM = 2

    @property
    def wire_name(self) -> str:
        return _NAMES[self]

    @classmethod
    def from_name(cls, name: str) -> Cipher:
        """``auto``: AES-256-GCM where the CPU has AES instructions, else ChaCha20-Poly1305."""
        if name == "auto":
            return Cipher.AES_256_GCM if cpu_has_aes() else Cipher.CHACHA20_POLY1305
        for cipher, cipher_name in _NAMES.items():
            if cipher_name == name:
                return cipher
        raise ValueError(f"unknown cipher {name!r}; choose one of {', '.join(_NAMES.values())}")


_NAMES = {Cipher.CHACHA20_POLY1305: "chacha20poly1305", Cipher.AES_256_GCM: "aes256gcm"}


def accepted_ciphers(name: str) -> frozenset[Cipher]:
    """What a server accepts: ``auto`` takes either, a named cipher only itself."""
    return frozenset(Cipher) if name == "auto" else frozenset((Cipher.from_name(name),))


@functools.cache
def cpu_has_aes() -> bool:
    """Whether AES runs in hardware here, which makes AES-GCM the faster AEAD (TLS stacks choose alike).

    Measured through cryptography on this project's x86-64 machines (AES-NI, VAES), 1400-byte
    packets: AES-256-GCM seals in 0.9 us and opens in 0.8 us, ChaCha20-Poly1305 in 1.4 and 1.8 us.
    Without AES instructions AES is several times slower, and constant-time only with care.
    """
    if sys.platform == "darwin":
        return platform.machine() == "arm64"  # every Apple silicon core has the ARMv8 crypto extension
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):  # x86 and ARM spell the line differently
                    return "aes" in value.split()
    except OSError:
        pass
    return False


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """RFC 5869 section 2.2 with SHA-256."""
    return hmac.digest(salt, ikm, hashlib.sha256)


def hkdf_expand(secret: bytes, label: bytes, length: int) -> bytes:
    """RFC 5869 section 2.3 with SHA-256; ``label`` is the info string."""
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(secret, block + label + bytes((counter,)), hashlib.sha256)
        out += block
        counter += 1
    return out[:length]


def next_secret(secret: bytes) -> bytes:
    """The traffic secret of the next key generation (docs/protocol.md 6.1)."""
    return hkdf_expand(secret, LABEL_KEY_UPDATE, 32)


class PacketProtection:
    """AEAD for one direction and one key generation."""

    __slots__ = ("_aead", "_iv", "cipher", "secret")

    def __init__(self, cipher: Cipher, secret: bytes) -> None:
        self.cipher = cipher
        self.secret = secret
        key = hkdf_expand(secret, LABEL_KEY, KEY_LEN)
        self._iv = int.from_bytes(hkdf_expand(secret, LABEL_IV, IV_LEN), "big")
        self._aead: ChaCha20Poly1305 | AESGCM = (
            ChaCha20Poly1305(key) if cipher == Cipher.CHACHA20_POLY1305 else AESGCM(key)
        )

    @classmethod
    def from_secret(cls, cipher: Cipher, secret: bytes) -> PacketProtection:
        return cls(cipher, secret)

    def next(self) -> PacketProtection:
        """The protection of the next key generation."""
        return PacketProtection(self.cipher, next_secret(self.secret))

    def seal(self, packet_number: int, header: bytes, plaintext: bytes) -> bytes:
        nonce = (self._iv ^ packet_number).to_bytes(IV_LEN, "big")
        return self._aead.encrypt(nonce, plaintext, header)

    def open(self, packet_number: int, header: bytes | memoryview, ciphertext: bytes | memoryview) -> bytes:
        nonce = (self._iv ^ packet_number).to_bytes(IV_LEN, "big")
        try:
            return self._aead.decrypt(nonce, ciphertext, header)
        except InvalidTag:
            raise CryptoError("packet authentication failed") from None


class ReplayWindow:
    """Which packet numbers were already accepted, over a sliding window.

    ``is_duplicate_or_stale`` is a pure check; ``mark`` is called only after
    a packet authenticated, so forged packets never move the window.
    """

    __slots__ = ("_seen", "largest", "size")

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self.largest = -1
        # A ring: _seen[pn % size] is 1 when pn, within ``size`` of ``largest``, was accepted.
        # (It was one big int shifted per packet: a 256-byte allocation each time.)
        self._seen = bytearray(size)

    def is_duplicate_or_stale(self, packet_number: int) -> bool:
        if packet_number > self.largest:
            return False
        if self.largest - packet_number >= self.size:
            return True
        return self._seen[packet_number % self.size] != 0

    def mark(self, packet_number: int) -> None:
        size = self.size
        if packet_number > self.largest:
            if packet_number - self.largest >= size:
                self._seen = bytearray(size)
            else:
                seen = self._seen
                # The slots of the numbers skipped over held numbers that now fall out of the window.
                for skipped in range(self.largest + 1, packet_number):
                    seen[skipped % size] = 0
            self.largest = packet_number
        self._seen[packet_number % size] = 1


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
