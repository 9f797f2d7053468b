"""FEC on the wire (docs/fec.md section 9.5): sans-IO pairs, explicit time, chosen losses."""

from __future__ import annotations

import os
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seam import fec
from seam import packet as pk
from seam.config import SeamConfig
from seam.events import StreamDataReceived
from seam.testing import LossyNetwork, Pair, transfer


def _established(config: SeamConfig, network: LossyNetwork | None = None) -> Pair:
    pair = Pair(network=network or LossyNetwork(), config=config)
    pair.handshake()
    pair.run(lambda: False, max_time=0.5)  # let the handshake's last ACKs settle
    return pair


def _drop_to_server(pair: Pair, indices: set[int]) -> Callable[[str, bytes], bytes | None]:
    """A tap dropping the client->server DATA datagrams with these 0-based indices."""
    seen = [0]
    dropped: list[bytes] = []

    def tap(towards: str, datagram: bytes) -> bytes | None:
        if towards != "server" or datagram[0] not in (pk.PacketType.DATA_PHASE0, pk.PacketType.DATA_PHASE1):
            return datagram
        index = seen[0]
        seen[0] += 1
        if index in indices:
            dropped.append(datagram)
            return None
        return datagram

    tap.dropped = dropped  # type: ignore[attr-defined]
    pair.tap = tap
    return tap


def _finish_time(pair: Pair, data: bytes) -> tuple[bytes, float]:
    got = transfer(pair, {0: data})
    return got.get(0, b""), pair.now


def test_repair_frame_round_trips_through_the_frame_codec() -> None:
    repair = fec.RepairSymbol(block_id=5, first_pn=300, k=10, m=2, index=1, symbol=bytes(1146))
    body = fec.encode_repair_body(repair)
    encoded = pk.encode_repair(body)
    assert encoded[:3] == bytes.fromhex("0f4480")  # docs/fec.md section 3 example
    assert len(encoded) == fec.repair_frame_size(repair)
    assert pk.parse_frames(encoded + pk.PING_BYTES) == [pk.RepairFrame(body), pk.PingFrame()]
    assert fec.parse_repair_body(body) == repair


def test_single_loss_in_a_block_is_recovered_without_retransmission() -> None:
    data = os.urandom(8000)  # ~7 packets: one short block, flushed when the sender goes idle
    rtt = 2 * LossyNetwork().delay

    # Reference: the same loss without FEC costs a retransmission and at least a round trip.
    plain = _established(SeamConfig(fec="off"))
    start = plain.now
    _drop_to_server(plain, {2})
    got, done = _finish_time(plain, data)
    assert got == data
    assert plain.client.stats().packets_retransmitted == 1
    assert done - start > rtt

    pair = _established(SeamConfig(fec="10,2"))
    start = pair.now
    tap = _drop_to_server(pair, {2})
    got, done = _finish_time(pair, data)
    assert got == data
    assert len(tap.dropped) == 1  # type: ignore[attr-defined]
    # Complete with the first flight: before any retransmission could have arrived.
    assert done - start < rtt
    assert pair.server is not None
    client, server = pair.client.stats(), pair.server.stats()
    assert server.fec_packets_recovered == 1
    assert server.fec_repairs_received >= 1
    assert client.fec_repairs_sent == server.fec_repairs_received
    assert client.packets_retransmitted == 0
    # Recovered (and acknowledged) before the sender's loss detection could declare it lost.
    assert client.packets_lost == 0

    # The original arriving after its recovery is a replay and changes nothing.
    before = dict(server.dropped)
    pair.tap = None
    pair.inject("server", tap.dropped[0])  # type: ignore[attr-defined]
    pair.run(lambda: False, max_time=0.1)
    after = pair.server.stats().dropped
    assert after.get("replay", 0) == before.get("replay", 0) + 1
    assert not any(isinstance(event, StreamDataReceived) and event.data for event in pair.server.events())


def test_a_packet_rebuilt_before_it_was_declared_lost_counts_as_a_retransmission_avoided() -> None:
    """Its ACK comes after a later packet's: the trace a rebuilt packet leaves (docs/fec.md 5).

    The link serialises packets (1 ms each), as a real one does, so the receiver
    acknowledges the gap at once and the rebuilt packet a little later. Before
    this counted, the counter saw only packets declared lost first.
    """
    pair = _established(SeamConfig(fec="10,2"), LossyNetwork(rate=1.2e6))
    _drop_to_server(pair, {4})  # late in the block: its repair comes before 3 later packets' ACKs
    got, _ = _finish_time(pair, os.urandom(8000))
    assert len(got) == 8000
    pair.run(lambda: pair.client.stats().bytes_in_flight == 0, max_time=1.0)  # every ACK back
    assert pair.server is not None
    client = pair.client.stats()
    assert pair.server.stats().fec_packets_recovered == 1
    assert client.packets_retransmitted == 0 and client.packets_lost == 0
    assert client.fec_retransmissions_avoided == 1


def test_more_losses_than_repairs_fall_back_to_retransmission() -> None:
    pair = _established(SeamConfig(fec="10,2"))
    _drop_to_server(pair, {1, 2, 3})  # M + 1 = 3 sources of the first block
    data = os.urandom(64 * 1024)
    got = transfer(pair, {0: data, 1: data[::-1]})
    assert got == {0: data, 1: data[::-1]}  # every byte once and in order
    assert pair.server is not None
    client = pair.client.stats()
    assert client.fec_repairs_sent > 0
    assert client.packets_retransmitted >= 1  # the block could not be recovered
    # The three were parked first, and retransmitted once the block's repairs were resolved.
    assert pair.client._fec_tx.packets_deferred == 3
    assert not pair.client._fec_deferred
    assert client.packets_lost >= 3


def test_fec_off_sends_no_repairs() -> None:
    network = LossyNetwork(seed=5, loss=0.05, jitter=0.003)
    pair = _established(SeamConfig(fec="off"), network)
    data = os.urandom(200_000)
    assert transfer(pair, {0: data}) == {0: data}
    assert pair.server is not None
    for stats in (pair.client.stats(), pair.server.stats()):
        assert stats.fec_repairs_sent == 0
        assert stats.fec_repairs_received == 0
        assert stats.fec_packets_recovered == 0
    assert pair.client.stats().packets_retransmitted > 0


def test_auto_sends_nothing_on_a_clean_path_and_repairs_on_a_lossy_one() -> None:
    clean = _established(SeamConfig(fec="auto"))
    data = os.urandom(300_000)
    assert transfer(clean, {0: data}) == {0: data}
    assert clean.client.stats().fec_repairs_sent == 0

    # A 16 Mbit/s bottleneck: on an unlimited link BBR (which no longer slows for random loss)
    # sends so fast that 2 ms of jitter reorders past the packet threshold, and spurious
    # losses, not FEC, decide the retransmission count.
    lossy = _established(
        SeamConfig(fec="auto"), LossyNetwork(seed=9, loss=0.05, jitter=0.002, rate=2e6, queue=100_000)
    )
    data = os.urandom(2_000_000)
    assert transfer(lossy, {0: data}) == {0: data}
    assert lossy.server is not None
    client = lossy.client.stats()
    assert client.fec_repair_count > 0 and client.fec_loss_rate > 0.01
    assert client.fec_repairs_sent > 0
    assert client.fec_retransmissions_avoided > 0  # declared lost, then recovered: not resent
    assert lossy.server.stats().fec_packets_recovered > 0

    # The same seed without FEC retransmits far more.
    plain = _established(
        SeamConfig(fec="off"), LossyNetwork(seed=9, loss=0.05, jitter=0.002, rate=2e6, queue=100_000)
    )
    assert transfer(plain, {0: data}) == {0: data}
    assert client.packets_retransmitted < plain.client.stats().packets_retransmitted / 4


def test_datagram_payload_leaves_room_for_repairs() -> None:
    off = _established(SeamConfig(fec="off"))
    on = _established(SeamConfig(fec="auto"))
    assert on.client.max_datagram_payload < off.client.max_datagram_payload
    assert off.client.max_datagram_payload - on.client.max_datagram_payload <= 24


@settings(
    max_examples=int(os.environ.get("SEAMLESS_HYPOTHESIS_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0, 0.1),
    reorder=st.floats(0, 0.1),
    spec=st.sampled_from(["auto", "10,2", "4,1", "20,4"]),
    sizes=st.lists(st.integers(0, 150_000), min_size=1, max_size=4),
)
def test_every_byte_arrives_exactly_once_with_fec(
    seed: int, loss: float, reorder: float, spec: str, sizes: list[int]
) -> None:
    network = LossyNetwork(seed=seed, loss=loss, reorder=reorder, duplicate=0.01, jitter=0.004)
    pair = Pair(network=network, config=SeamConfig(fec=spec, handshake_timeout=120))
    pair.handshake()
    rng = network.rng
    payloads = {i: rng.randbytes(size) for i, size in enumerate(sizes)}
    got = transfer(pair, payloads, max_time=3600)
    assert got == payloads
    assert not pair.client.is_closed


def test_auto_over_three_percent_loss_delivers_exactly_once() -> None:
    for seed in range(3):
        network = LossyNetwork(seed=seed, loss=0.03, jitter=0.003)
        pair = Pair(network=network, config=SeamConfig(fec="auto", handshake_timeout=120))
        pair.handshake()
        payloads = {i: network.rng.randbytes(300_000 + i) for i in range(3)}
        assert transfer(pair, payloads, max_time=3600) == payloads
        assert pair.server is not None
        assert pair.server.stats().fec_packets_recovered > 0
