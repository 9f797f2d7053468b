"""ECN (docs/protocol.md 7.6): the sender's validation, CE as a congestion signal, counts end to end."""

from __future__ import annotations

import random

import pytest

from seam import packet as pk
from seam.config import SeamConfig
from seam.congestion import create
from seam.congestion.base import initial_window
from seam.ecn import TESTING_PACKETS, Codepoint, EcnState, EcnValidator
from seam.recovery import LossRecovery, SentPacket
from seam.testing import LossyNetwork, Pair, transfer

MDS = 1200


def counts(ect0: int = 0, ect1: int = 0, ce: int = 0) -> pk.EcnCounts:
    return pk.EcnCounts(ect0, ect1, ce)


def validator_after_test_period() -> EcnValidator:
    v = EcnValidator()
    for _ in range(TESTING_PACKETS):
        assert v.codepoint is Codepoint.ECT0
        v.on_packet_sent()
        v.on_tracked_sent()
    v.begin_flight()
    return v


# --- the validator (RFC 9000 section 13.4.2) --------------------------------------------------------


def test_test_period_then_unknown_then_capable() -> None:
    v = validator_after_test_period()
    assert v.state is EcnState.UNKNOWN and v.codepoint is Codepoint.NOT_ECT  # waits, unmarked
    assert v.on_ack(counts(ect0=3), newly_acked_marked=3, largest_advanced=True) == 0
    assert v.state is EcnState.CAPABLE and v.codepoint is Codepoint.ECT0
    assert v.on_ack(counts(ect0=5, ce=2), newly_acked_marked=4, largest_advanced=True) == 2
    assert v.ce_marks == 2


@pytest.mark.parametrize(
    ("ack", "newly", "reason"),
    [
        (None, 2, "without ECN counts"),  # the peer (or its I/O) does not report counts
        (counts(ect0=1), 2, "bleached"),  # two marked packets acked, one count
        (counts(ect0=4, ect1=1), 2, "exceed"),  # ECT(1): we never send it
        (counts(ect0=TESTING_PACKETS + 1), 2, "exceed"),  # more than we ever marked
    ],
)
def test_validation_fails_on_missing_bleached_or_mangled_counts(
    ack: pk.EcnCounts | None, newly: int, reason: str
) -> None:
    v = validator_after_test_period()
    assert v.on_ack(ack, newly_acked_marked=newly, largest_advanced=True) == 0
    assert v.state is EcnState.FAILED and reason in v.failure
    assert v.codepoint is Codepoint.NOT_ECT
    v.begin_flight()
    assert v.codepoint is Codepoint.NOT_ECT  # for good


def test_counts_going_backwards_fail_but_a_late_ack_is_not_judged() -> None:
    v = validator_after_test_period()
    v.on_ack(counts(ect0=4, ce=1), newly_acked_marked=5, largest_advanced=True)
    # An older ACK arriving late (largest acknowledged not raised) carries smaller counts: skipped.
    assert v.on_ack(counts(ect0=2), newly_acked_marked=0, largest_advanced=False) == 0
    assert v.state is EcnState.CAPABLE
    v.on_ack(counts(ect0=6, ce=0), newly_acked_marked=1, largest_advanced=True)
    assert v.state is EcnState.FAILED and "backwards" in v.failure


def test_losing_every_test_packet_fails_validation() -> None:
    """A path that drops ECT packets: nothing marked is ever acknowledged."""
    v = validator_after_test_period()
    v.on_marked_lost(TESTING_PACKETS - 1)
    assert v.state is EcnState.UNKNOWN
    v.on_marked_lost(1)
    assert v.state is EcnState.FAILED and "lost" in v.failure


def test_disabled_validator_never_marks() -> None:
    v = EcnValidator(enabled=False)
    assert v.codepoint is Codepoint.NOT_ECT and v.state is EcnState.FAILED
    assert v.on_ack(counts(ect0=1, ce=1), newly_acked_marked=0, largest_advanced=True) == 0


# --- CE through loss recovery (RFC 9002 section 7.1, B.7) ------------------------------------------


@pytest.mark.parametrize("name", ["newreno", "cubic"])
def test_ce_is_one_congestion_event_per_recovery_period(name: str) -> None:
    cc = create(name, max_datagram_size=MDS)
    rec = LossRecovery(congestion=cc)
    for pn in range(20):
        rec.ecn.on_packet_sent()
        rec.on_packet_sent(
            SentPacket(pn, pn * 0.001, MDS, ack_eliciting=True, in_flight=True, ecn=True), pn * 0.001
        )
    before = cc.congestion_window
    acked, lost = rec.on_ack_received([(0, 4)], 0.0, 0.1, counts(ect0=4, ce=1))
    assert len(acked) == 5 and not lost
    grown = before + 5 * MDS  # slow start's growth for the five packets, before the CE cut
    assert cc.congestion_window <= round(0.7 * grown) and cc.ssthresh == cc.congestion_window
    assert rec.ecn.state is EcnState.CAPABLE and rec.ecn.ce_marks == 1
    assert rec.delivered_ce == MDS  # one CE mark among five equal packets
    cut = cc.congestion_window
    rec.on_ack_received([(0, 9)], 0.0, 0.101, counts(ect0=7, ce=3))  # sent before the cut: same episode
    assert cc.congestion_window >= cut
    for pn in range(20, 30):
        rec.ecn.on_packet_sent()
        rec.on_packet_sent(SentPacket(pn, 0.2, MDS, ack_eliciting=True, in_flight=True, ecn=True), 0.2)
    rec.on_ack_received([(0, 25)], 0.0, 0.3, counts(ect0=22, ce=4))  # sent after it: a new one
    assert cc.congestion_window < cut
    assert rec.packets_lost == 0


# --- end to end through the sans-IO connection ----------------------------------------------------


def test_counts_flow_end_to_end_and_validate_on_a_clean_path() -> None:
    pair = Pair(network=LossyNetwork(seed=1))
    pair.handshake()
    data = random.Random(1).randbytes(200_000)
    assert transfer(pair, {0: data}) == {0: data}
    assert pair.server is not None
    client, server = pair.client.stats(), pair.server.stats()
    assert client.ecn_state == "capable" and pair.client.ecn_codepoint == Codepoint.ECT0
    assert server.ecn_state == "capable"  # the server's ACK-bearing packets validated too
    # the client's data packets, counted as they came, but those of the first flight past the
    # TESTING_PACKETS marked ones, which leave unmarked until the marks are validated
    first_flight = initial_window(1200) // 1200
    assert server.ecn_ect0_received >= len(data) // client.datagram_size - (first_flight - TESTING_PACKETS)
    assert client.ecn_ce_marks == 0 and server.ecn_ce_received == 0


def test_a_path_that_bleaches_marks_disables_ecn() -> None:
    pair = Pair(network=LossyNetwork(seed=2, ecn_bleach=True))
    pair.handshake()
    data = random.Random(2).randbytes(200_000)
    assert transfer(pair, {0: data}) == {0: data}  # nothing else changes
    assert pair.server is not None
    stats = pair.client.stats()
    assert stats.ecn_state == "failed" and "without ECN counts" in stats.ecn_failure
    assert pair.client.ecn_codepoint == Codepoint.NOT_ECT
    assert pair.server.stats().ecn_ect0_received == 0  # every mark was cleared on the way


def test_ce_marks_reach_the_sender_and_newreno_backs_off_without_loss() -> None:
    """A 2 MB/s bottleneck marking above 15 kB of queue: CE, not loss, stops NewReno's growth."""
    network = LossyNetwork(seed=3, delay=0.01, rate=2e6, queue=200_000, ecn_mark_above=15_000)
    pair = Pair(network=network, config=SeamConfig(congestion="newreno"))
    pair.handshake()
    data = random.Random(3).randbytes(3_000_000)
    assert transfer(pair, {0: data}) == {0: data}
    stats = pair.client.stats()
    assert network.ce_marked > 0 and stats.ecn_ce_marks > 0
    assert stats.ecn_state == "capable"
    assert stats.packets_lost == 0 and network.dropped == 0  # the queue never overflowed


def test_only_authenticated_new_packets_are_counted() -> None:
    """Garbage, undecryptable and duplicate datagrams leave the ECN counts alone (docs 7.6)."""
    pair = Pair()
    pair.handshake()
    captured: list[bytes] = []
    pair.tap = lambda towards, d: (captured.append(d) or d) if towards == "server" else d  # type: ignore[func-returns-value]
    stream = pair.client.open_stream()
    pair.client.send_stream_data(stream, b"x" * 100)
    pair.run(lambda: bool(captured))
    pair.run(lambda: False, max_time=0.1)  # the data packet (the first captured) has arrived
    server = pair.server
    assert server is not None
    before = server.stats()
    server.receive_datagram(captured[0], pair.client_address, pair.now, ecn=Codepoint.CE)  # a duplicate
    forged = pk.encode_data_header(0, server.local_cid, 10**6) + bytes(40)  # fails to decrypt
    server.receive_datagram(forged, pair.client_address, pair.now, ecn=3)
    server.receive_datagram(b"garbage", pair.client_address, pair.now, ecn=3)
    after = server.stats()
    assert after.ecn_ce_received == before.ecn_ce_received == 0
    assert after.ecn_ect0_received == before.ecn_ect0_received
    assert after.dropped["replay"] == before.dropped.get("replay", 0) + 1
    assert after.dropped["decrypt-failed"] == before.dropped.get("decrypt-failed", 0) + 1


def test_handshake_datagrams_are_never_marked() -> None:
    """A path that drops ECT packets must not stop a handshake: a batch with one goes Not-ECT."""
    network = LossyNetwork(seed=5)
    seen: list[tuple[int, int]] = []  # (packet type, codepoint)
    impair = network.impair

    def recording_impair(
        datagram: bytes, now: float, towards: str = "", ecn: int = 0
    ) -> list[tuple[float, bytes, int]]:
        seen.append((datagram[0], ecn))
        return impair(datagram, now, towards, ecn)

    network.impair = recording_impair  # type: ignore[method-assign]
    pair = Pair(network=network)
    pair.handshake()
    data = random.Random(5).randbytes(50_000)
    assert transfer(pair, {0: data}) == {0: data}
    handshake = {pk.PacketType.HELLO, pk.PacketType.RETRY, pk.PacketType.HANDSHAKE}
    assert {ecn for kind, ecn in seen if kind in handshake} == {Codepoint.NOT_ECT}
    assert any(ecn == Codepoint.ECT0 for kind, ecn in seen if kind not in handshake)
