"""Forward error correction: the field, the MDS code, the wire format, encoder/decoder and policy."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seam import fec
from seam.buffer import encode_varint
from seam.errors import ParseError
from seam.fec import (
    FecDecoder,
    FecEncoder,
    FecError,
    FecPolicy,
    RepairSymbol,
    encode_repair_body,
    encode_repairs,
    gf_div,
    gf_inv,
    gf_mul,
    parse_fec_spec,
    parse_repair_body,
    recover_payloads,
)

elements = st.integers(min_value=0, max_value=255)
nonzero = st.integers(min_value=1, max_value=255)


def reference_mul(a: int, b: int) -> int:
    """Carry-less multiplication reduced by x^8 + x^4 + x^3 + x^2 + 1, bit by bit."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        b >>= 1
        a <<= 1
        if a & 0x100:
            a ^= 0x11D
    return product


# ---------------------------------------------------------------- the field


@given(elements, elements, elements)
def test_field_axioms(a: int, b: int, c: int) -> None:
    assert gf_mul(a, b) == gf_mul(b, a) == reference_mul(a, b)
    assert gf_mul(gf_mul(a, b), c) == gf_mul(a, gf_mul(b, c))
    assert gf_mul(a, b ^ c) == gf_mul(a, b) ^ gf_mul(a, c)  # addition is XOR
    assert gf_mul(a, 1) == a
    assert gf_mul(a, 0) == 0
    assert a ^ a == 0


@given(nonzero, elements)
def test_field_inverse_and_division(a: int, b: int) -> None:
    assert gf_mul(a, gf_inv(a)) == 1
    assert gf_mul(gf_div(b, a), a) == b


def test_zero_has_no_inverse() -> None:
    with pytest.raises(ZeroDivisionError):
        gf_inv(0)
    with pytest.raises(ZeroDivisionError):
        gf_div(1, 0)


def test_multiplication_tables_match_the_field() -> None:
    for c in range(256):
        table = fec.MUL[c]
        assert len(table) == 256
        assert list(table) == [gf_mul(c, x) for x in range(256)]
    assert bytes(range(256)).translate(fec.MUL[7]) == bytes(gf_mul(7, x) for x in range(256))


def test_repair_zero_is_plain_xor() -> None:
    assert all(c == 1 for c in fec.COEF[0])
    payloads = [b"abc", b"", b"\xff" * 5]
    (repair,) = encode_repairs(payloads, 1)
    symbols = [len(p).to_bytes(2, "big") + p for p in payloads]
    expected = bytearray(max(map(len, symbols)))
    for symbol in symbols:
        for i, byte in enumerate(symbol):
            expected[i] ^= byte
    assert repair == bytes(expected)


# ------------------------------------------------------------------- the code


@settings(max_examples=150, deadline=None)
@given(
    k=st.integers(min_value=1, max_value=20),
    m=st.integers(min_value=1, max_value=6),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    data=st.data(),
)
def test_any_m_erasures_are_recovered(k: int, m: int, seed: int, data: st.DataObject) -> None:
    rng = random.Random(seed)
    lengths = data.draw(st.lists(st.integers(min_value=0, max_value=1200), min_size=k, max_size=k))
    payloads = [rng.randbytes(n) for n in lengths]
    repairs = encode_repairs(payloads, m)
    assert len(repairs) == m
    assert all(len(r) == max(lengths) + 2 for r in repairs)
    erased = data.draw(st.sets(st.integers(min_value=0, max_value=k + m - 1), max_size=m))
    sources = {j: p for j, p in enumerate(payloads) if j not in erased}
    kept = {i: r for i, r in enumerate(repairs) if k + i not in erased}
    recovered = recover_payloads(k, m, sources, kept)
    assert recovered == {j: payloads[j] for j in range(k) if j in erased}


def test_every_erasure_pattern_of_a_small_block() -> None:
    k, m = 5, 3
    payloads = [bytes([j]) * (10 * j) for j in range(k)]
    repairs = encode_repairs(payloads, m)
    for size in range(m + 1):
        for erased in itertools.combinations(range(k + m), size):
            sources = {j: p for j, p in enumerate(payloads) if j not in erased}
            kept = {i: r for i, r in enumerate(repairs) if k + i not in erased}
            assert recover_payloads(k, m, sources, kept) == {j: payloads[j] for j in erased if j < k}


def test_largest_block_recovers_m_erasures() -> None:
    rng = random.Random(7)
    k, m = fec.MAX_K, fec.MAX_M
    payloads = [rng.randbytes(rng.randrange(0, 300)) for _ in range(k)]
    repairs = encode_repairs(payloads, m)
    erased = set(rng.sample(range(k), m))
    sources = {j: p for j, p in enumerate(payloads) if j not in erased}
    assert recover_payloads(k, m, sources, dict(enumerate(repairs))) == {j: payloads[j] for j in erased}


@given(st.integers(min_value=1, max_value=12), st.integers(min_value=1, max_value=4), st.data())
def test_fewer_than_k_symbols_raise_fec_error(k: int, m: int, data: st.DataObject) -> None:
    payloads = [bytes([j]) * j for j in range(k)]
    repairs = encode_repairs(payloads, m)
    erased_sources = data.draw(st.sets(st.integers(0, k - 1), min_size=1))
    kept_repairs = data.draw(st.sets(st.integers(0, m - 1), max_size=len(erased_sources) - 1))
    sources = {j: p for j, p in enumerate(payloads) if j not in erased_sources}
    with pytest.raises(FecError):
        recover_payloads(k, m, sources, {i: repairs[i] for i in kept_repairs})


def test_inconsistent_symbols_raise_fec_error() -> None:
    payloads = [b"a" * 10, b"b" * 20, b"c" * 30]
    repairs = encode_repairs(payloads, 2)
    with pytest.raises(FecError, match="differ in length"):
        recover_payloads(3, 2, {0: payloads[0]}, {0: repairs[0], 1: repairs[1][:-1]})
    with pytest.raises(FecError, match="longer than"):
        recover_payloads(3, 2, {0: b"x" * 40, 1: payloads[1]}, {0: repairs[0]})
    # A source that differs from what was encoded yields an impossible length prefix or padding.
    with pytest.raises(FecError, match="inconsistent"):
        recover_payloads(3, 2, {0: b"a" * 10, 1: b"b" * 19}, {0: repairs[0]})


def test_encode_rejects_oversized_payloads_and_bad_shapes() -> None:
    with pytest.raises(ValueError):
        encode_repairs([bytes(fec.MAX_PAYLOAD + 1)], 1)
    with pytest.raises(ValueError):
        encode_repairs([b"x"] * (fec.MAX_K + 1), 1)
    with pytest.raises(ValueError):
        encode_repairs([b"x"], fec.MAX_M + 1)


# ------------------------------------------------------------------ the wire


repair_symbols = st.builds(
    RepairSymbol,
    block_id=st.integers(min_value=0, max_value=(1 << 62) - 1),
    first_pn=st.integers(min_value=0, max_value=(1 << 61)),
    k=st.integers(min_value=1, max_value=fec.MAX_K),
    m=st.just(fec.MAX_M),
    index=st.integers(min_value=0, max_value=fec.MAX_M - 1),
    symbol=st.binary(min_size=2, max_size=300),
)


@given(repair_symbols)
def test_repair_body_round_trip(repair: RepairSymbol) -> None:
    body = encode_repair_body(repair)
    assert parse_repair_body(body) == repair
    assert fec.repair_frame_size(repair) == 1 + len(encode_varint(len(body))) + len(body)


def test_repair_body_layout() -> None:
    body = encode_repair_body(RepairSymbol(5, 300, 10, 2, 1, b"\x00\x03abc"))
    assert body == b"\x05" + encode_varint(300) + bytes([10, 2, 1]) + b"\x00\x03abc"


def body(block_id: int = 0, first_pn: int = 0, k: int = 2, m: int = 1, index: int = 0, n: int = 4) -> bytes:
    return encode_varint(block_id) + encode_varint(first_pn) + bytes([k, m, index]) + bytes(n)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated"),
        (body()[:4], "truncated"),
        (b"\x40", "truncated"),
        (body(k=0), "sources"),
        (body(k=fec.MAX_K + 1), "sources"),
        (body(m=0), "repairs"),
        (body(m=fec.MAX_M + 1), "repairs"),
        (body(m=2, index=2), "index"),
        (body(n=1), "shorter"),
        (body(first_pn=(1 << 62) - 1), "largest packet number"),
        (body(n=fec.MAX_REPAIR_BODY), "exceeds"),
    ],
)
def test_repair_body_errors(data: bytes, message: str) -> None:
    with pytest.raises(FecError, match=message):
        parse_repair_body(data)


def test_fec_error_is_a_parse_error() -> None:
    assert issubclass(FecError, ParseError)


@pytest.mark.parametrize("max_payload", [100, 1167, 1200, 16_000, 16_404, 65_000, 70_000])
def test_max_source_payload_leaves_room_for_the_repair_frame(max_payload: int) -> None:
    size = fec.max_source_payload(max_payload)
    worst = RepairSymbol((1 << 62) - 1, (1 << 62) - 1 - fec.MAX_K, fec.MAX_K, 1, 0, bytes(size + 2))
    assert fec.repair_frame_size(worst) <= max_payload
    bigger = RepairSymbol(worst.block_id, worst.first_pn, worst.k, 1, 0, bytes(size + 3))
    assert fec.repair_frame_size(bigger) > max_payload or size == fec.MAX_SOURCE


# ------------------------------------------------------------------ the policy


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("off", FecPolicy("off")),
        (" AUTO ", FecPolicy("auto")),
        ("10,2", FecPolicy("fixed", 10, 2)),
        (" 20 , 4 ", FecPolicy("fixed", 20, 4)),
        ("1,16", FecPolicy("fixed", 1, 16)),
    ],
)
def test_parse_fec_spec(spec: str, expected: FecPolicy) -> None:
    policy = parse_fec_spec(spec)
    assert policy == expected
    assert parse_fec_spec(str(policy)) == policy


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "must be 'off', 'auto' or 'K,M'"),
        ("on", "must be 'off', 'auto' or 'K,M'"),
        ("10", "must be 'off', 'auto' or 'K,M'"),
        ("1,2,3", "must be 'off', 'auto' or 'K,M'"),
        ("a,b", "whole numbers"),
        ("1.5,2", "whole numbers"),
        ("0,2", r"K \(source packets per block\) must be 1\.\.64"),
        ("65,2", r"K \(source packets per block\) must be 1\.\.64"),
        ("-1,2", r"K \(source packets per block\)"),
        ("10,0", "use 'off'"),
        ("10,17", r"M \(repair packets per block\) must be 1\.\.16"),
    ],
)
def test_parse_fec_spec_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_fec_spec(spec)


def test_policy_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="mode"):
        FecPolicy("sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="K"):
        FecPolicy("fixed", 0, 1)
    with pytest.raises(ValueError, match="M"):
        FecPolicy("fixed", 10, 0)


def test_binomial_tail_matches_brute_force() -> None:
    n, p = 6, 0.2
    for t in range(n + 2):
        brute = sum(
            p ** sum(bits) * (1 - p) ** (n - sum(bits))
            for bits in itertools.product((0, 1), repeat=n)
            if sum(bits) >= t
        )
        assert math.isclose(fec.binomial_tail(n, p, t), brute, abs_tol=1e-12)
    assert fec.binomial_tail(5, 0.0, 1) == 0.0
    assert fec.binomial_tail(5, 0.3, 0) == 1.0


def test_auto_policy_meets_the_block_loss_target_under_the_overhead_cap() -> None:
    policy = FecPolicy("auto", k=10, m=16)
    previous = 0
    for loss in (0.0, 0.0005, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5):
        m = policy.repair_count(loss)
        assert m >= previous  # more loss, never fewer repairs
        previous = m
        assert m <= 3  # 30 % of K = 10
        if loss < fec.LOSS_ON:
            assert m == 0
        elif m < 3:
            assert fec.binomial_tail(10 + m, loss, m + 1) <= fec.TARGET_BLOCK_LOSS
            if m > 1:  # once on, at least one repair; beyond that, the fewest that meet the target
                assert fec.binomial_tail(10 + m - 1, loss, m) > fec.TARGET_BLOCK_LOSS
    assert policy.repair_count(0.5) == 3
    assert policy.repair_count(0.5, k=1) == 1  # a lone packet still gets one repair


def test_auto_policy_has_hysteresis() -> None:
    policy = FecPolicy("auto")
    between = (fec.LOSS_OFF + fec.LOSS_ON) / 2
    assert policy.repair_count(between, was_on=False) == 0
    assert policy.repair_count(between, was_on=True) >= 1
    assert policy.repair_count(fec.LOSS_OFF / 2, was_on=True) == 0


def test_fixed_policy_scales_short_blocks() -> None:
    policy = FecPolicy("fixed", 10, 2)
    assert [policy.repair_count(0.0, k) for k in (1, 5, 6, 10)] == [1, 1, 2, 2]
    assert FecPolicy("off").repair_count(0.5) == 0


def test_loss_estimator_is_per_packet() -> None:
    one = fec.LossEstimator()
    batch = fec.LossEstimator()
    for _ in range(100):
        one.on_sample(0, 1)
    one.on_sample(1, 1)
    batch.on_sample(0, 100)
    batch.on_sample(1, 1)
    assert math.isclose(one.rate, batch.rate)
    batch.on_sample(5, 0)  # nothing resolved: no change
    batch.on_sample(9, 3)  # clamped to 3 of 3
    assert 0 < batch.rate <= 1


# ------------------------------------------------------------------ encoder


def drain(encoder: FecEncoder) -> list[RepairSymbol]:
    out = []
    while (repair := encoder.pop_repair()) is not None:
        out.append(repair)
    return out


def test_encoder_groups_consecutive_packets_into_blocks() -> None:
    encoder = FecEncoder(FecPolicy("fixed", 4, 2))
    for pn in range(4):
        encoder.add(pn, b"p%d" % pn)
    repairs = drain(encoder)
    assert [(r.block_id, r.first_pn, r.k, r.m, r.index) for r in repairs] == [
        (0, 0, 4, 2, 0),
        (0, 0, 4, 2, 1),
    ]
    assert encoder.repairs_sent == 2 and encoder.blocks_encoded == 1
    # A gap closes the open block early, with proportionally fewer repairs.
    encoder.add(6, b"a")
    encoder.add(7, b"b")
    encoder.add(9, b"c")
    (repair,) = drain(encoder)
    assert (repair.block_id, repair.first_pn, repair.k, repair.m) == (1, 6, 2, 1)
    assert encoder.block_open
    encoder.flush()
    (repair,) = drain(encoder)
    assert (repair.first_pn, repair.k, repair.m) == (9, 1, 1)
    assert not encoder.block_open and not encoder.has_repair


def test_encoder_ack_only_packets_join_but_never_open_a_block() -> None:
    encoder = FecEncoder(FecPolicy("fixed", 3, 1))
    encoder.add(0, b"ack only", ack_eliciting=False)
    assert not encoder.block_open
    encoder.add(1, b"data")
    encoder.add(2, b"ack only", ack_eliciting=False)
    encoder.add(3, b"data")
    (repair,) = drain(encoder)
    assert (repair.first_pn, repair.k) == (1, 3)


def test_encoder_off_sends_nothing_and_rejects_huge_payloads() -> None:
    encoder = FecEncoder(FecPolicy("off"))
    for pn in range(50):
        encoder.add(pn, b"x")
    encoder.flush()
    assert drain(encoder) == [] and encoder.repair_count == 0


def test_encoder_leaves_payloads_too_long_for_a_repair_frame_unprotected() -> None:
    encoder = FecEncoder(FecPolicy("fixed", 4, 1), max_source=100)
    encoder.add(0, bytes(100))
    encoder.add(1, bytes(101))  # closes the block holding packet 0, and is not protected itself
    (repair,) = drain(encoder)
    assert (repair.first_pn, repair.k) == (0, 1)
    assert not encoder.block_open
    assert not encoder.defer_loss(1)


def test_deferred_retransmissions_and_the_avoided_counter() -> None:
    encoder = FecEncoder(FecPolicy("fixed", 4, 2))
    for pn in range(4):
        encoder.add(pn, b"p")
    assert len(drain(encoder)) == 2  # sent as packets 4 and 5
    assert encoder.defer_loss(1) and encoder.defer_loss(2)
    assert encoder.defer_loss(2)  # idempotent
    assert encoder.packets_deferred == 2
    assert not encoder.defer_loss(40)  # not protected: retransmit at once
    # The ACK of repair packet 4 also acknowledges packet 2, recovered by the peer.
    assert encoder.on_ack_ranges([(4, 4), (2, 2), (0, 0)]) == [2]
    assert encoder.retransmissions_avoided == 1
    assert encoder.on_repair_resolved(0) == []  # packet 4 acked; packet 5 still in flight
    assert encoder.on_repair_resolved(0) == [1]  # packet 5 lost: packet 1 was not recovered
    assert encoder.tracked_blocks == 0
    assert not encoder.defer_loss(1)
    assert encoder.on_repair_resolved(0) == []


def test_loss_in_the_open_block_sends_its_repairs_now() -> None:
    encoder = FecEncoder(FecPolicy("fixed", 10, 2))
    encoder.add(0, b"a")
    encoder.add(1, b"b")
    assert encoder.defer_loss(0)
    (repair,) = drain(encoder)
    assert (repair.first_pn, repair.k, repair.m) == (0, 2, 1)


# ------------------------------------------------------------------ decoder


def test_decoder_recovers_late_and_ignores_complete_blocks() -> None:
    payloads = [b"zero", b"one!", b"two..."]
    repairs = encode_repairs(payloads, 2)
    decoder = FecDecoder()
    r0 = RepairSymbol(0, 10, 3, 2, 0, repairs[0])
    r1 = RepairSymbol(0, 10, 3, 2, 1, repairs[1])
    assert decoder.receive_source(10, payloads[0]) == []  # before any REPAIR: not kept
    assert decoder.buffered_sources == 0
    assert decoder.receive_repair(13, r0) == []  # sources 10..12 all missing, 1 of 3 symbols
    assert decoder.receive_source(11, payloads[1]) == []  # 2 of 3
    assert decoder.receive_repair(14, r1) == [(10, payloads[0]), (12, payloads[2])]
    assert decoder.packets_recovered == 2 and decoder.blocks_recovered == 1
    assert decoder.open_blocks == 0
    assert decoder.receive_repair(15, r1) == []  # a late copy finds nothing missing
    # The common case: every source arrived, the REPAIR costs nothing.
    decoder.receive_source(20, payloads[0])
    decoder.receive_source(21, payloads[1])
    decoder.receive_source(22, payloads[2])
    assert decoder.feed(23, encode_repair_body(RepairSymbol(1, 20, 3, 2, 0, repairs[0]))) == []
    assert decoder.open_blocks == 0


def test_decoder_rejects_inconsistent_repairs() -> None:
    decoder = FecDecoder()
    symbol = encode_repairs([b"abc", b"de"], 1)[0]
    with pytest.raises(FecError, match="covers"):
        decoder.receive_repair(1, RepairSymbol(0, 0, 2, 1, 0, symbol))
    decoder.receive_repair(5, RepairSymbol(0, 0, 2, 2, 0, symbol))
    with pytest.raises(FecError, match="disagrees"):
        decoder.receive_repair(6, RepairSymbol(0, 0, 3, 2, 1, symbol))
    assert decoder.open_blocks == 0  # the offending block is dropped; the decoder stays usable
    decoder.receive_repair(7, RepairSymbol(1, 2, 2, 1, 0, symbol))
    with pytest.raises(FecError, match="longer"):
        decoder.receive_source(2, b"far too long for the block")
    assert decoder.open_blocks == 0


def test_decoder_memory_is_bounded_against_a_flood_of_repairs() -> None:
    decoder = FecDecoder()
    symbol = bytes(1200)
    for block_id in range(5000):
        first = 1000 + block_id * 3
        decoder.receive_repair(first + 200, RepairSymbol(block_id, first, fec.MAX_K, 4, 0, symbol))
        assert decoder.open_blocks <= fec.MAX_OPEN_BLOCKS
        assert decoder.buffered_bytes <= fec.MAX_BUFFERED_BYTES
    assert decoder.blocks_abandoned >= 5000 - fec.MAX_OPEN_BLOCKS
    # Same carrier, thousands of blocks claiming the same packets, and huge symbols.
    for block_id in range(3000):
        big = bytes(60_000)
        decoder.receive_repair(50_000, RepairSymbol(block_id, 49_000, fec.MAX_K, fec.MAX_M, 3, big))
        assert decoder.open_blocks <= fec.MAX_OPEN_BLOCKS
        assert decoder.buffered_bytes <= fec.MAX_BUFFERED_BYTES
    assert len(decoder._missing) <= fec.MAX_OPEN_BLOCKS * fec.MAX_K


def test_decoder_keeps_only_a_window_of_sources() -> None:
    decoder = FecDecoder()
    decoder.receive_repair(1, RepairSymbol(0, 0, 1, 1, 0, b"\x00\x00"))  # engage
    for pn in range(2, 3000):
        decoder.receive_source(pn, bytes(1200))
        assert decoder.buffered_sources <= fec.SOURCE_WINDOW
        assert decoder.buffered_bytes <= fec.MAX_BUFFERED_BYTES
    for pn in range(2, 100):  # old packet numbers are not kept at all
        decoder.receive_source(pn, b"old")
    assert min(decoder._sources) >= 3000 - 1 - fec.SOURCE_WINDOW
    # A REPAIR for a block that fell out of the window is ignored.
    before = decoder.repairs_ignored
    assert decoder.receive_repair(3000, RepairSymbol(1, 100, 2, 1, 0, bytes(4))) == []
    assert decoder.repairs_ignored == before + 1 and decoder.open_blocks == 0


# -------------------------------------------------------------- end to end


class Link:
    """A sender and a receiver over a seeded lossy channel, for FecEncoder/FecDecoder."""

    def __init__(self, policy: FecPolicy, seed: int) -> None:
        self.rng = random.Random(seed)
        self.encoder = FecEncoder(policy)
        self.decoder = FecDecoder()
        self.pn = 0
        self.sent: dict[int, bytes] = {}
        self.arrived: set[int] = set()
        self.recovered: set[int] = set()
        self.repairs_on_wire = 0

    def _deliver(self, loss: float) -> bool:
        return self.rng.random() >= loss

    def run(self, packets: int, loss: float) -> None:
        lost = resolved = 0
        for _ in range(packets):
            payload = self.rng.randbytes(self.rng.randrange(20, 1200))
            pn = self.pn
            self.pn += 1
            self.sent[pn] = payload
            self.encoder.add(pn, payload)
            resolved += 1
            if self._deliver(loss):
                self.arrived.add(pn)
                self._collect(self.decoder.receive_source(pn, payload))
            else:
                lost += 1
            while (repair := self.encoder.pop_repair()) is not None:
                carrier = self.pn
                self.pn += 1
                self.repairs_on_wire += 1
                resolved += 1
                if self._deliver(loss):
                    self._collect(self.decoder.feed(carrier, encode_repair_body(repair)))
                else:
                    lost += 1
            if resolved >= 20:  # the sender learns of losses in batches, as ACKs arrive
                self.encoder.on_loss_sample(lost, resolved)
                lost = resolved = 0

    def _collect(self, recovered: list[tuple[int, bytes]]) -> None:
        for pn, payload in recovered:
            assert payload == self.sent[pn]  # recovered bytes are exactly what was sent
            assert pn not in self.arrived
            self.recovered.add(pn)

    def missing(self, since: int = 0) -> int:
        return sum(1 for pn in self.sent if pn >= since and pn not in self.arrived | self.recovered)


def test_auto_fec_adapts_to_loss_and_switches_off_on_a_clean_path() -> None:
    link = Link(FecPolicy("auto"), seed=4)
    link.run(300, loss=0.0)
    assert link.repairs_on_wire == 0 and link.encoder.repair_count == 0  # clean: FEC idle

    link.run(1500, loss=0.005)
    light = link.encoder.repair_count
    assert light >= 1

    start = link.pn
    link.run(3000, loss=0.05)
    heavy = link.encoder.repair_count
    assert heavy > light  # more loss, more repairs (within the 30 % cap)
    lost = sum(1 for pn in link.sent if pn >= start and pn not in link.arrived)
    assert lost > 100
    assert link.missing(since=start) < lost / 4  # most losses repaired without a retransmission
    assert link.decoder.packets_recovered == len(link.recovered) > 0
    assert link.encoder.repairs_sent == link.repairs_on_wire

    link.run(4000, loss=0.0)
    assert link.encoder.repair_count == 0
    before = link.repairs_on_wire
    link.run(500, loss=0.0)
    assert link.repairs_on_wire == before  # switched off again
    assert link.decoder.open_blocks <= fec.MAX_OPEN_BLOCKS


def test_fixed_fec_recovers_every_block_within_its_budget() -> None:
    link = Link(FecPolicy("fixed", 10, 3), seed=9)
    link.run(2000, loss=0.03)
    link.encoder.flush()
    # With K=10, M=3 and 3 % loss almost every block has at most 3 erasures.
    lost = sum(1 for pn in link.sent if pn not in link.arrived)
    assert link.missing() <= lost // 10


def test_hidden_losses_are_protected_packets_acknowledged_after_a_later_one() -> None:
    """A packet the peer rebuilt is acked as received; only its lateness tells the sender."""
    encoder = FecEncoder(FecPolicy("fixed", 4, 1))
    for pn in range(10, 14):
        encoder.add(pn, b"payload %d" % pn)  # one full block: 10..13
    assert encoder.pop_repair() is not None
    # 11 was lost and rebuilt: its ACK comes after 12's and 13's (largest acked then 14).
    assert encoder.hidden_losses([11], largest_acked_before=14) == 1
    assert encoder.hidden_losses([10, 11, 12, 13], largest_acked_before=9) == 0  # in order
    assert encoder.hidden_losses([5, 20], largest_acked_before=30) == 0  # not protected
    assert encoder.retransmissions_avoided == 1  # 11: it would have been declared lost and resent
