"""The hybrid Noise XX + ML-KEM-768 handshake (docs/protocol.md section 5).

Theory of operation
-------------------
Noise's XX pattern (``-> e; <- e, ee, s, es; -> s, se``) over X25519, with two
ML-KEM-768 exchanges added in the manner of Noise's ``hfs`` modifier and
PQNoise:

- msg1 carries an *ephemeral* ML-KEM public key beside ``e``. The server
  encapsulates to it in msg2, and that shared secret enters the chaining key
  before anything secret is sent: post-quantum forward secrecy.
- msg2 sends the server's static X25519 and ML-KEM keys, encrypted. The
  client compares both with its pinned keys before it goes on, then
  encapsulates to the static ML-KEM key in msg3: only the real server can
  decapsulate, so the server is authenticated even against a quantum
  adversary (implicitly, confirmed by the first DATA packet it sends).

Every KEM public key and ciphertext is hashed into the transcript ``h``;
every shared secret (three X25519, two ML-KEM) is mixed into the chaining
key ``ck`` with HKDF, so the session keys are secret as long as *either*
X25519 or ML-KEM-768 holds. ``h`` is the associated data of every handshake
AEAD, binding the whole transcript (and the prologue: version and both
connection IDs). The final keys are one per direction.

Objects here are single-use state machines. Reading msg2 or msg3 is
transactional: if the message is damaged or forged, :class:`HandshakeError`
is raised and the state is rolled back, so the genuine message can still be
read afterwards. The one final failure is a relay whose keys do not match the
pinned ones (``reason="authentication"``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from seam.crypto import Cipher, hkdf_expand
from seam.errors import HandshakeError, LocalProtocolError
from seam.identity import KEM_PUBLIC_KEY_LEN, X25519_KEY_LEN, Identity, PublicKeys

PROTOCOL_NAME = b"Seam1_XXhfs_25519+MLKEM768_ChaChaPoly_SHA256"
KEM_CIPHERTEXT_LEN = 1088  # bytes, FIPS 203 ML-KEM-768
TAG_LEN = 16
PAYLOAD1_LEN = 2  # cipher id, flags
MSG1_LEN = X25519_KEY_LEN + KEM_PUBLIC_KEY_LEN + PAYLOAD1_LEN  # 1218
MSG2_LEN = (
    X25519_KEY_LEN
    + KEM_CIPHERTEXT_LEN
    + (X25519_KEY_LEN + TAG_LEN)
    + (KEM_PUBLIC_KEY_LEN + TAG_LEN)
    + (1 + TAG_LEN)
)  # 2385
MSG3_MIN_LEN = (KEM_CIPHERTEXT_LEN + TAG_LEN) + (X25519_KEY_LEN + TAG_LEN) + TAG_LEN  # 1168 + payload
MAX_PAYLOAD3 = 1024  # bytes of application payload the client may attach to msg3
LABEL_C2S = b"seam 1 c2s"
LABEL_S2C = b"seam 1 s2c"

KemEncapsulate = Callable[[MLKEM768PublicKey], tuple[bytes, bytes]]
KemDecapsulate = Callable[[MLKEM768PrivateKey, bytes], bytes]


def _real_encapsulate(public: MLKEM768PublicKey) -> tuple[bytes, bytes]:
    return public.encapsulate()


def _real_decapsulate(private: MLKEM768PrivateKey, ciphertext: bytes) -> bytes:
    return private.decapsulate(ciphertext)


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    client_to_server: bytes  # 32-byte traffic secret
    server_to_client: bytes
    handshake_hash: bytes
    cipher: Cipher
    peer_x25519: bytes  # the peer's static X25519 public key
    peer_payload: bytes


class SymmetricState:
    """Noise's SymmetricState (Noise spec section 5.2) with SHA-256 and ChaCha20-Poly1305."""

    __slots__ = ("_aead", "_n", "ck", "h")

    def __init__(self, prologue: bytes) -> None:
        self.h = hashlib.sha256(PROTOCOL_NAME).digest()
        self.ck = self.h
        self._aead: ChaCha20Poly1305 | None = None
        self._n = 0
        self.mix_hash(prologue)

    def copy(self) -> SymmetricState:
        clone = SymmetricState.__new__(SymmetricState)
        clone.h, clone.ck, clone._aead, clone._n = self.h, self.ck, self._aead, self._n
        return clone

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, ikm: bytes) -> None:
        temp = hmac.digest(self.ck, ikm, hashlib.sha256)
        self.ck = hmac.digest(temp, b"\x01", hashlib.sha256)
        key = hmac.digest(temp, self.ck + b"\x02", hashlib.sha256)
        self._aead = ChaCha20Poly1305(key)
        self._n = 0

    def _nonce(self) -> bytes:
        return bytes(4) + self._n.to_bytes(8, "big")

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        if self._aead is None:
            ciphertext = plaintext
        else:
            ciphertext = self._aead.encrypt(self._nonce(), plaintext, self.h)
            self._n += 1
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        if self._aead is None:
            plaintext = ciphertext
        else:
            try:
                plaintext = self._aead.decrypt(self._nonce(), ciphertext, self.h)
            except InvalidTag:
                raise HandshakeError(
                    "handshake message failed authentication", reason="invalid-message"
                ) from None
            self._n += 1
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        """(client-to-server, server-to-client) traffic secrets, bound to the final hash."""
        return hkdf_expand(self.ck, LABEL_C2S + self.h, 32), hkdf_expand(self.ck, LABEL_S2C + self.h, 32)


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    """X25519 that refuses low-order points (an all-zero result)."""
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        raise HandshakeError("invalid X25519 public key (low-order point)", reason="invalid-key") from None
    if not any(shared):
        raise HandshakeError("invalid X25519 public key (low-order point)", reason="invalid-key")
    return shared


def _kem_public(data: bytes) -> MLKEM768PublicKey:
    try:
        return MLKEM768PublicKey.from_public_bytes(data)
    except ValueError:
        raise HandshakeError("malformed ML-KEM-768 public key", reason="invalid-key") from None


def _decapsulate(decapsulate: KemDecapsulate, private: MLKEM768PrivateKey, ciphertext: bytes) -> bytes:
    try:
        return decapsulate(private, ciphertext)
    except ValueError:
        raise HandshakeError("malformed ML-KEM-768 ciphertext", reason="invalid-key") from None


def _encapsulate(encapsulate: KemEncapsulate, public: MLKEM768PublicKey) -> tuple[bytes, bytes]:
    try:
        return encapsulate(public)
    except ValueError:
        raise HandshakeError("ML-KEM-768 encapsulation failed", reason="invalid-key") from None


def _cipher_from_id(value: int) -> Cipher:
    try:
        return Cipher(value)
    except ValueError:
        raise HandshakeError(f"unsupported cipher id {value}", reason="refused") from None


class ClientHandshake:
    """The initiator: ``write_message1``, ``read_message2``, ``write_message3``."""

    def __init__(
        self,
        identity: Identity,
        server_keys: PublicKeys,
        *,
        prologue: bytes,
        cipher: Cipher = Cipher.CHACHA20_POLY1305,
        ephemeral: tuple[X25519PrivateKey, MLKEM768PrivateKey] | None = None,
        kem_encapsulate: KemEncapsulate = _real_encapsulate,
        kem_decapsulate: KemDecapsulate = _real_decapsulate,
    ) -> None:
        """``ephemeral`` and the ``kem_*`` hooks exist for deterministic test vectors only."""
        self._identity = identity
        self._pinned = server_keys
        self._decapsulate = kem_decapsulate
        self._cipher = cipher
        self._state = SymmetricState(prologue)
        self._e, self._ekem = ephemeral or (X25519PrivateKey.generate(), MLKEM768PrivateKey.generate())
        self._encapsulate = kem_encapsulate
        self._step = 0
        self._re = b""
        self._rs = b""
        self._rskem: MLKEM768PublicKey | None = None
        self._payload2 = b""
        self._result: HandshakeResult | None = None

    def _expect(self, step: int) -> None:
        if self._step != step:
            raise LocalProtocolError("handshake methods called out of order")
        self._step = -1  # poisoned until the step completes

    def write_message1(self) -> bytes:
        self._expect(0)
        st = self._state
        e_pub = self._e.public_key().public_bytes_raw()
        ekem_pub = self._ekem.public_key().public_bytes_raw()
        st.mix_hash(e_pub)
        st.mix_hash(ekem_pub)
        payload = st.encrypt_and_hash(bytes((self._cipher, 0)))
        self._step = 1
        return e_pub + ekem_pub + payload

    def read_message2(self, data: bytes) -> None:
        self._expect(1)
        saved = self._state.copy()
        try:
            self._read_message2(data)
        except HandshakeError as exc:
            if exc.reason != "authentication" or "do not match" not in str(exc):
                self._state = saved
                self._step = 1
            raise

    def _read_message2(self, data: bytes) -> None:
        if not MSG2_LEN <= len(data) <= MSG2_LEN + MAX_PAYLOAD3:
            raise HandshakeError(f"msg2 has a bad length ({len(data)})", reason="invalid-message")
        st = self._state
        pos = 0
        self._re = data[pos : pos + X25519_KEY_LEN]
        pos += X25519_KEY_LEN
        st.mix_hash(self._re)
        st.mix_key(_dh(self._e, self._re))  # ee
        ct1 = data[pos : pos + KEM_CIPHERTEXT_LEN]
        pos += KEM_CIPHERTEXT_LEN
        st.mix_hash(ct1)
        st.mix_key(_decapsulate(self._decapsulate, self._ekem, ct1))  # ephemeral KEM
        rs = st.decrypt_and_hash(data[pos : pos + X25519_KEY_LEN + TAG_LEN])
        pos += X25519_KEY_LEN + TAG_LEN
        rskem = st.decrypt_and_hash(data[pos : pos + KEM_PUBLIC_KEY_LEN + TAG_LEN])
        pos += KEM_PUBLIC_KEY_LEN + TAG_LEN
        if not (
            hmac.compare_digest(rs, self._pinned.x25519) and hmac.compare_digest(rskem, self._pinned.kem)
        ):
            raise HandshakeError(
                "the relay's keys do not match the pinned keys "
                f"(relay x25519 {rs.hex()[:16]}..., pinned {self._pinned.x25519_hex[:16]}...)",
                reason="authentication",
            )
        self._rs = rs
        self._rskem = _kem_public(rskem)
        st.mix_key(_dh(self._e, rs))  # es
        payload = st.decrypt_and_hash(data[pos:])
        if not payload or _cipher_from_id(payload[0]) != self._cipher:
            raise HandshakeError("the relay chose a cipher we did not offer", reason="refused")
        self._payload2 = payload[1:]
        self._step = 2

    def write_message3(self, payload: bytes = b"") -> bytes:
        self._expect(2)
        if len(payload) > MAX_PAYLOAD3:
            raise LocalProtocolError(f"msg3 payload is limited to {MAX_PAYLOAD3} bytes")
        assert self._rskem is not None
        st = self._state
        ss2, ct2 = _encapsulate(self._encapsulate, self._rskem)
        out = st.encrypt_and_hash(ct2)
        st.mix_key(ss2)  # static KEM: authenticates the relay post-quantum
        out += st.encrypt_and_hash(self._identity.public.x25519)
        st.mix_key(_dh(self._identity.x25519_private, self._re))  # se
        out += st.encrypt_and_hash(payload)
        c2s, s2c = st.split()
        self._result = HandshakeResult(c2s, s2c, st.h, self._cipher, self._rs, self._payload2)
        self._step = 3
        return out

    @property
    def result(self) -> HandshakeResult:
        if self._result is None:
            raise LocalProtocolError("handshake not finished")
        return self._result


class ServerHandshake:
    """The responder: ``read_message1``, ``write_message2``, ``read_message3``."""

    def __init__(
        self,
        identity: Identity,
        *,
        prologue: bytes,
        ciphers: frozenset[Cipher] = frozenset(Cipher),
        ephemeral: X25519PrivateKey | None = None,
        kem_encapsulate: KemEncapsulate = _real_encapsulate,
        kem_decapsulate: KemDecapsulate = _real_decapsulate,
        payload: bytes = b"",
    ) -> None:
        """``ephemeral`` and the ``kem_*`` hooks exist for deterministic test vectors only."""
        self._identity = identity
        self._decapsulate = kem_decapsulate
        self._ciphers = ciphers
        self._state = SymmetricState(prologue)
        self._e = ephemeral or X25519PrivateKey.generate()
        self._encapsulate = kem_encapsulate
        self._payload = payload
        self._step = 0
        self._re = b""
        self._rekem: MLKEM768PublicKey | None = None
        self._cipher = Cipher.CHACHA20_POLY1305

    def _expect(self, step: int) -> None:
        if self._step != step:
            raise LocalProtocolError("handshake methods called out of order")
        self._step = -1

    def read_message1(self, data: bytes) -> None:
        self._expect(0)
        if len(data) != MSG1_LEN:
            raise HandshakeError(f"msg1 must be {MSG1_LEN} bytes, got {len(data)}", reason="invalid-message")
        st = self._state
        self._re = data[:X25519_KEY_LEN]
        rekem = data[X25519_KEY_LEN : X25519_KEY_LEN + KEM_PUBLIC_KEY_LEN]
        st.mix_hash(self._re)
        st.mix_hash(rekem)
        self._rekem = _kem_public(rekem)
        payload = st.decrypt_and_hash(data[X25519_KEY_LEN + KEM_PUBLIC_KEY_LEN :])
        cipher = _cipher_from_id(payload[0])
        if cipher not in self._ciphers:
            raise HandshakeError(f"cipher {cipher.wire_name} is not allowed here", reason="refused")
        self._cipher = cipher
        self._step = 1

    def write_message2(self) -> bytes:
        self._expect(1)
        assert self._rekem is not None
        st = self._state
        e_pub = self._e.public_key().public_bytes_raw()
        st.mix_hash(e_pub)
        st.mix_key(_dh(self._e, self._re))  # ee
        ss1, ct1 = _encapsulate(self._encapsulate, self._rekem)
        st.mix_hash(ct1)
        st.mix_key(ss1)  # ephemeral KEM: post-quantum forward secrecy
        out = e_pub + ct1
        out += st.encrypt_and_hash(self._identity.public.x25519)
        out += st.encrypt_and_hash(self._identity.public.kem)
        st.mix_key(_dh(self._identity.x25519_private, self._re))  # es
        out += st.encrypt_and_hash(bytes((self._cipher,)) + self._payload)
        self._step = 2
        return out

    def read_message3(self, data: bytes) -> HandshakeResult:
        self._expect(2)
        saved = self._state.copy()
        try:
            return self._read_message3(data)
        except HandshakeError:
            self._state = saved
            self._step = 2
            raise

    def _read_message3(self, data: bytes) -> HandshakeResult:
        if not MSG3_MIN_LEN <= len(data) <= MSG3_MIN_LEN + MAX_PAYLOAD3:
            raise HandshakeError(f"msg3 has a bad length ({len(data)})", reason="invalid-message")
        st = self._state
        pos = KEM_CIPHERTEXT_LEN + TAG_LEN
        ct2 = st.decrypt_and_hash(data[:pos])
        st.mix_key(_decapsulate(self._decapsulate, self._identity.kem_private, ct2))  # static KEM
        rs = st.decrypt_and_hash(data[pos : pos + X25519_KEY_LEN + TAG_LEN])
        pos += X25519_KEY_LEN + TAG_LEN
        st.mix_key(_dh(self._e, rs))  # se
        payload = st.decrypt_and_hash(data[pos:])
        c2s, s2c = st.split()
        self._step = 3
        return HandshakeResult(c2s, s2c, st.h, self._cipher, rs, payload)
