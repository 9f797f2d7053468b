"""The hybrid Noise XX + ML-KEM-768 handshake: vectors, agreement, refusals."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from seam.crypto import Cipher
from seam.errors import HandshakeError
from seam.handshake import MSG1_LEN, MSG2_LEN, MSG3_MIN_LEN, ClientHandshake, ServerHandshake
from seam.identity import Identity
from seam.testing import shared_identities

PROLOGUE = b"seam/1" + bytes(4) + bytes(range(8)) + bytes(range(8, 16))
SERVER, CLIENT = shared_identities()


def _fixed(n: int, label: bytes) -> bytes:
    return hashlib.sha256(label + bytes([n])).digest()


def _vector_run() -> tuple[bytes, bytes, bytes, object]:
    """The handshake with every random input fixed (docs/protocol.md, appendix A).

    ML-KEM encapsulation is randomised inside the library, so the KEM is a
    fixed stand-in here: shared secret = SHA-256("ss" || pk), ciphertext =
    SHAKE-256("ct" || pk, 1088 bytes). Everything else is the real code.
    """
    server = Identity.from_private_bytes(_fixed(1, b"x"), _fixed(1, b"k") + _fixed(2, b"k"))
    client = Identity.from_private_bytes(_fixed(2, b"x"), _fixed(3, b"k") + _fixed(4, b"k"))
    client_e = X25519PrivateKey.from_private_bytes(_fixed(3, b"x"))
    client_ekem = MLKEM768PrivateKey.from_seed_bytes(_fixed(5, b"k") + _fixed(6, b"k"))
    server_e = X25519PrivateKey.from_private_bytes(_fixed(4, b"x"))
    secrets: dict[bytes, bytes] = {}

    def encapsulate(public: MLKEM768PublicKey) -> tuple[bytes, bytes]:
        ss = hashlib.sha256(b"ss" + public.public_bytes_raw()).digest()
        ct = hashlib.shake_256(b"ct" + public.public_bytes_raw()).digest(1088)
        secrets[ct] = ss
        return ss, ct

    def decapsulate(private: MLKEM768PrivateKey, ct: bytes) -> bytes:
        return secrets[ct]

    hooks = {"kem_encapsulate": encapsulate, "kem_decapsulate": decapsulate}
    c = ClientHandshake(client, server.public, prologue=PROLOGUE, ephemeral=(client_e, client_ekem), **hooks)
    s = ServerHandshake(server, prologue=PROLOGUE, ephemeral=server_e, **hooks)
    m1 = c.write_message1()
    s.read_message1(m1)
    m2 = s.write_message2()
    c.read_message2(m2)
    m3 = c.write_message3()
    return m1, m2, m3, s.read_message3(m3)


def test_deterministic_vectors() -> None:
    m1, m2, m3, result = _vector_run()
    digest = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    assert (len(m1), len(m2), len(m3)) == (MSG1_LEN, MSG2_LEN, MSG3_MIN_LEN) == (1218, 2385, 1168)
    assert digest(m1) == "c84bd77e6fa189ffa4c71bf58ec4124c6caac27ad4646b2dd7c37dd0a656e229"
    assert digest(m2) == "5d4914709e4c856dfc767aa310b38b50d94d91a2ca9c54678bf407f6c14672e1"
    assert digest(m3) == "322675934236140d9d1b7306bde2517713a25daceab26895c068396d78e831e2"
    assert result.client_to_server.hex() == "a17581c86fbe1d492b22adaae328702b86d3580d2a636ff4f1fc85f89064ba57"  # type: ignore[attr-defined]
    assert result.server_to_client.hex() == "ab93bfec632eef4c565ce3f47f784c42576bdc69995796e56e09401acd4fe70e"  # type: ignore[attr-defined]
    assert result.handshake_hash.hex() == "cc2914a992c377a716f7d2630c32dd08ddac39e13b0de53da7ee5fe5e6f478bc"  # type: ignore[attr-defined]


def _full(cipher: Cipher = Cipher.CHACHA20_POLY1305) -> tuple[ClientHandshake, ServerHandshake, object]:
    c = ClientHandshake(CLIENT, SERVER.public, prologue=PROLOGUE, cipher=cipher)
    s = ServerHandshake(SERVER, prologue=PROLOGUE)
    s.read_message1(c.write_message1())
    c.read_message2(s.write_message2())
    return c, s, s.read_message3(c.write_message3(b"hello"))


@pytest.mark.parametrize("cipher", list(Cipher))
def test_real_handshake_agrees(cipher: Cipher) -> None:
    c, _, result = _full(cipher)
    assert result == type(result)(  # type: ignore[call-arg]
        c.result.client_to_server,
        c.result.server_to_client,
        c.result.handshake_hash,
        cipher,
        CLIENT.public.x25519,
        b"hello",
    )
    assert c.result.peer_x25519 == SERVER.public.x25519
    assert c.result.client_to_server != c.result.server_to_client  # one key per direction


def test_every_session_has_fresh_keys() -> None:
    """Fresh ephemerals (X25519 and ML-KEM) per handshake: forward secrecy."""
    (_, _, a), (_, _, b) = _full(), _full()
    assert a.client_to_server != b.client_to_server  # type: ignore[attr-defined]


def test_both_kem_secrets_reach_the_keys() -> None:
    """Changing either ML-KEM shared secret changes the traffic keys (hybrid, never X25519 alone)."""

    def run(flip: int) -> bytes:
        secrets: dict[bytes, bytes] = {}
        calls = [0]

        def enc(public: MLKEM768PublicKey) -> tuple[bytes, bytes]:
            calls[0] += 1
            ss, ct = public.encapsulate()
            secrets[ct] = bytes(32) if calls[0] == flip else ss
            return secrets[ct], ct

        def dec(private: MLKEM768PrivateKey, ct: bytes) -> bytes:
            return secrets[ct]

        ce = X25519PrivateKey.from_private_bytes(_fixed(9, b"e"))
        cek = MLKEM768PrivateKey.from_seed_bytes(bytes(64))
        se = X25519PrivateKey.from_private_bytes(_fixed(8, b"e"))
        c = ClientHandshake(
            CLIENT,
            SERVER.public,
            prologue=PROLOGUE,
            ephemeral=(ce, cek),
            kem_encapsulate=enc,
            kem_decapsulate=dec,
        )
        s = ServerHandshake(SERVER, prologue=PROLOGUE, ephemeral=se, kem_encapsulate=enc, kem_decapsulate=dec)
        s.read_message1(c.write_message1())
        c.read_message2(s.write_message2())
        return s.read_message3(c.write_message3()).client_to_server

    # The ciphertexts are random, so compare the effect of zeroing each secret.
    assert len({run(0), run(1), run(2)}) == 3


def test_wrong_pinned_keys_are_refused_with_a_clear_message() -> None:
    other = Identity.generate()
    c = ClientHandshake(CLIENT, other.public, prologue=PROLOGUE)
    s = ServerHandshake(SERVER, prologue=PROLOGUE)
    s.read_message1(c.write_message1())
    with pytest.raises(HandshakeError, match="do not match the pinned keys") as info:
        c.read_message2(s.write_message2())
    assert info.value.reason == "authentication"


def test_low_order_x25519_point_is_refused() -> None:
    c = ClientHandshake(CLIENT, SERVER.public, prologue=PROLOGUE)
    msg1 = bytearray(c.write_message1())
    msg1[:32] = bytes(32)  # the all-zero point has low order
    s = ServerHandshake(SERVER, prologue=PROLOGUE)
    s.read_message1(bytes(msg1))
    with pytest.raises(HandshakeError) as info:
        s.write_message2()
    assert info.value.reason == "invalid-key"


def test_prologue_mismatch_fails() -> None:
    c = ClientHandshake(CLIENT, SERVER.public, prologue=PROLOGUE)
    s = ServerHandshake(SERVER, prologue=PROLOGUE + b"x")
    s.read_message1(c.write_message1())
    with pytest.raises(HandshakeError):
        c.read_message2(s.write_message2())


def test_damaged_msg2_is_rolled_back_and_the_real_one_still_works() -> None:
    c = ClientHandshake(CLIENT, SERVER.public, prologue=PROLOGUE)
    s = ServerHandshake(SERVER, prologue=PROLOGUE)
    s.read_message1(c.write_message1())
    msg2 = s.write_message2()
    damaged = bytearray(msg2)
    damaged[1500] ^= 1
    with pytest.raises(HandshakeError) as info:
        c.read_message2(bytes(damaged))
    assert info.value.reason == "invalid-message"
    c.read_message2(msg2)
    assert s.read_message3(c.write_message3()).handshake_hash == c.result.handshake_hash


@given(st.binary(max_size=3000))
@settings(max_examples=60, deadline=None)
def test_arbitrary_bytes_only_raise_handshake_error(data: bytes) -> None:
    s = ServerHandshake(SERVER, prologue=PROLOGUE)
    try:
        s.read_message1(data)
        s.write_message2()
    except HandshakeError:
        pass
    c = ClientHandshake(CLIENT, SERVER.public, prologue=PROLOGUE)
    c.write_message1()
    try:
        c.read_message2(data)
    except HandshakeError:
        pass
    _, s2, _ = _fresh_at_msg3()
    try:
        s2.read_message3(data)
    except HandshakeError:
        pass


def _fresh_at_msg3() -> tuple[ClientHandshake, ServerHandshake, None]:
    c = ClientHandshake(CLIENT, SERVER.public, prologue=PROLOGUE)
    s = ServerHandshake(SERVER, prologue=PROLOGUE)
    s.read_message1(c.write_message1())
    c.read_message2(s.write_message2())
    return c, s, None


def test_fuzz_harness_contract() -> None:
    from fuzz.fuzz_handshake import TestOneInput

    for sample in (b"", b"\x00" * 1218, bytes(range(256)) * 10):
        TestOneInput(sample)
