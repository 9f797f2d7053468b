"""RTT estimation, loss detection and the probe timeout (RFC 9002 sections 5 and 6).

All times are explicit seconds; a recording controller stands in for congestion
control so each test can see exactly which packets were reported acked or lost.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seam.congestion.base import CongestionController
from seam.recovery import (
    K_GRANULARITY,
    K_INITIAL_RTT,
    K_PACKET_THRESHOLD,
    K_TIME_THRESHOLD,
    MAX_PTO_BACKOFF,
    PTO_PROBES,
    LossRecovery,
    RttEstimator,
    SentPacket,
)

MAX_ACK_DELAY = 0.025
SIZE = 1200


class RecordingController(CongestionController):
    """Never limits sending; remembers what recovery told it."""

    name = "recording"  # deliberately not registered

    def __init__(self, *, max_datagram_size: int = SIZE) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self.sent: list[tuple[int, int]] = []  # (packet number, bytes in flight after it)
        self.acked: list[list[int]] = []
        self.lost: list[list[int]] = []

    def on_packet_sent(self, packet: SentPacket, bytes_in_flight: int, now: float) -> None:
        self.sent.append((packet.packet_number, bytes_in_flight))

    def on_packets_acked(self, packets: list[SentPacket], now: float, rtt: RttEstimator) -> None:
        self.acked.append([p.packet_number for p in packets])

    def on_packets_lost(self, packets: list[SentPacket], now: float, rtt: RttEstimator) -> None:
        self.lost.append([p.packet_number for p in packets])


def make_recovery() -> tuple[LossRecovery, RecordingController]:
    cc = RecordingController()
    return LossRecovery(congestion=cc, max_ack_delay=MAX_ACK_DELAY), cc


def send(rec: LossRecovery, pn: int, now: float, *, size: int = SIZE, in_flight: bool = True) -> SentPacket:
    packet = SentPacket(pn, now, size, ack_eliciting=True, in_flight=in_flight)
    rec.on_packet_sent(packet, now)
    return packet


def pns(packets: list[SentPacket]) -> list[int]:
    return [p.packet_number for p in packets]


# --- RttEstimator (RFC 9002 section 5) ------------------------------------------------------------


def test_initial_estimate_before_any_sample() -> None:
    rtt = RttEstimator()
    assert not rtt.has_sample
    assert rtt.smoothed_rtt == K_INITIAL_RTT == 0.333
    assert rtt.rttvar == pytest.approx(0.333 / 2)
    # RFC 9002 6.2.2: before a sample the PTO uses the initial RTT.
    assert rtt.pto(MAX_ACK_DELAY) == pytest.approx(0.333 + 4 * 0.1665 + 0.025)


def test_first_sample_replaces_the_initial_estimate_and_ignores_ack_delay() -> None:
    rtt = RttEstimator()
    rtt.update(0.1, 0.02, MAX_ACK_DELAY)
    assert rtt.has_sample
    assert (rtt.latest_rtt, rtt.min_rtt, rtt.smoothed_rtt) == (0.1, 0.1, 0.1)
    assert rtt.rttvar == pytest.approx(0.05)


def test_subsequent_samples_follow_the_ewma_with_known_numbers() -> None:
    """RFC 9002 5.3 with errata 7539 (and appendix A.7, RFC 6298): rttvar uses the old smoothed_rtt."""
    rtt = RttEstimator()
    rtt.update(0.1, 0.0, MAX_ACK_DELAY)
    # 0.2 >= min_rtt 0.1 + 0.02, so adjusted_rtt = 0.18.
    rtt.update(0.2, 0.02, MAX_ACK_DELAY)
    assert rtt.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * abs(0.1 - 0.18))  # 0.0575
    assert rtt.smoothed_rtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.18)  # 0.11
    assert rtt.latest_rtt == 0.2
    assert rtt.min_rtt == 0.1
    rtt.update(0.05, 0.0, MAX_ACK_DELAY)
    assert rtt.min_rtt == 0.05
    assert rtt.rttvar == pytest.approx(0.75 * 0.0575 + 0.25 * abs(0.11 - 0.05))  # 0.058125
    assert rtt.smoothed_rtt == pytest.approx(0.875 * 0.11 + 0.125 * 0.05)  # 0.1025


def test_ack_delay_is_capped_at_max_ack_delay() -> None:
    rtt = RttEstimator()
    rtt.update(0.1, 0.0, MAX_ACK_DELAY)
    rtt.update(0.3, 0.1, MAX_ACK_DELAY)  # only 0.025 of the reported 0.1 s is believed
    assert rtt.smoothed_rtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.275)


def test_ack_delay_is_not_subtracted_below_min_rtt() -> None:
    rtt = RttEstimator()
    rtt.update(0.1, 0.0, MAX_ACK_DELAY)
    rtt.update(0.11, 0.02, MAX_ACK_DELAY)  # 0.11 < 0.1 + 0.02: the delay is implausible
    assert rtt.smoothed_rtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.11)


def test_min_rtt_ignores_ack_delay() -> None:
    rtt = RttEstimator()
    rtt.update(0.1, 0.0, MAX_ACK_DELAY)
    rtt.update(0.08, 0.02, MAX_ACK_DELAY)
    assert rtt.min_rtt == 0.08  # not 0.06
    rtt.update(0.5, 0.0, MAX_ACK_DELAY)
    assert rtt.min_rtt == 0.08


def test_pto_has_a_granularity_floor_on_the_variance_term() -> None:
    rtt = RttEstimator()
    for _ in range(100):
        rtt.update(0.05, 0.0, MAX_ACK_DELAY)  # a perfectly steady path: rttvar decays to ~0
    assert 4 * rtt.rttvar < K_GRANULARITY
    assert rtt.pto(MAX_ACK_DELAY) == pytest.approx(0.05 + K_GRANULARITY + MAX_ACK_DELAY)


# --- Acknowledgements -----------------------------------------------------------------------------


def test_ack_removes_packets_and_samples_rtt_from_the_largest() -> None:
    rec, cc = make_recovery()
    for pn in range(3):
        send(rec, pn, pn * 0.01)
    assert rec.bytes_in_flight == 3 * SIZE
    assert cc.sent == [(0, SIZE), (1, 2 * SIZE), (2, 3 * SIZE)]
    acked, lost = rec.on_ack_received([(0, 2)], 0.0, 0.12)
    assert (pns(acked), lost) == ([0, 1, 2], [])
    assert rec.rtt.latest_rtt == pytest.approx(0.1)  # from packet 2, sent at 0.02
    assert rec.bytes_in_flight == 0
    assert rec.largest_acked == 2
    assert cc.acked == [[0, 1, 2]]
    assert cc.lost == []


def test_ack_delay_reaches_the_estimator_in_seconds() -> None:
    rec, _ = make_recovery()
    send(rec, 0, 0.0)
    rec.on_ack_received([(0, 0)], 0.0, 0.1)
    send(rec, 1, 1.0)
    rec.on_ack_received([(1, 1)], 0.02, 1.2)
    assert rec.rtt.smoothed_rtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.18)


def test_no_rtt_sample_unless_the_largest_acknowledged_is_newly_acked() -> None:
    """RFC 9002 5.1: an ACK whose largest packet was already acknowledged gives no sample."""
    rec, _ = make_recovery()
    for pn in range(3):
        send(rec, pn, 0.0)
    rec.on_ack_received([(2, 2)], 0.0, 0.1)
    before = (rec.rtt.latest_rtt, rec.rtt.smoothed_rtt, rec.rtt.rttvar)
    acked, _ = rec.on_ack_received([(0, 2)], 0.0, 5.0)
    assert pns(acked) == [0, 1]
    assert (rec.rtt.latest_rtt, rec.rtt.smoothed_rtt, rec.rtt.rttvar) == before


def test_duplicate_and_unknown_acks_are_harmless() -> None:
    rec, cc = make_recovery()
    assert rec.on_ack_received([(0, 10)], 0.0, 0.0) == ([], [])  # nothing ever sent
    for pn in range(4):
        send(rec, pn, 0.0)
    send(rec, 4, 0.05)
    assert pns(rec.on_ack_received([(3, 3)], 0.0, 0.1)[1]) == [0]
    assert pns(rec.on_loss_detection_timeout(rec.get_loss_detection_timer() or 0.0)[0]) == [1, 2]
    assert rec.on_loss_detection_timeout(rec.get_loss_detection_timer() or 0.0) == ([], PTO_PROBES)
    assert rec.pto_count == 1
    state = (
        rec.bytes_in_flight,
        rec.packets_in_flight,
        rec.largest_acked,
        rec.pto_count,
        rec.packets_lost,
        rec.rtt.latest_rtt,
        rec.rtt.smoothed_rtt,
        rec.get_loss_detection_timer(),
    )
    calls = (len(cc.acked), len(cc.lost))
    for ranges in ([(3, 3)], [(1, 2)], [(3, 3), (0, 0)]):  # already acked, already lost, both
        assert rec.on_ack_received(ranges, 0.0, 0.5) == ([], [])
    assert rec.on_ack_received([(100, 200)], 0.0, 0.5) == ([], [])  # never sent
    assert (
        rec.bytes_in_flight,
        rec.packets_in_flight,
        rec.largest_acked,
        rec.pto_count,
        rec.packets_lost,
        rec.rtt.latest_rtt,
        rec.rtt.smoothed_rtt,
        rec.get_loss_detection_timer(),
    ) == state
    assert (len(cc.acked), len(cc.lost)) == calls


def test_packets_not_in_flight_do_not_count_towards_bytes_in_flight() -> None:
    rec, _ = make_recovery()
    send(rec, 0, 0.0, in_flight=False)
    send(rec, 1, 0.0)
    assert rec.bytes_in_flight == SIZE
    assert rec.packets_in_flight == 2
    rec.on_ack_received([(0, 1)], 0.0, 0.1)
    assert rec.bytes_in_flight == 0


# --- Loss detection (RFC 9002 section 6.1) --------------------------------------------------------


def test_packet_threshold_declares_loss_three_behind_the_largest_acked() -> None:
    assert K_PACKET_THRESHOLD == 3
    rec, cc = make_recovery()
    for pn in range(5):
        send(rec, pn, pn * 0.001)
    acked, lost = rec.on_ack_received([(3, 3)], 0.0, 0.1)
    assert (pns(acked), pns(lost)) == ([3], [0])  # 3 - 0 >= 3; 1 and 2 are too close and too young
    acked, lost = rec.on_ack_received([(4, 4)], 0.0, 0.1001)
    assert (pns(acked), pns(lost)) == ([4], [1])
    assert cc.lost == [[0], [1]]
    assert rec.packets_lost == 2
    assert rec.bytes_in_flight == SIZE  # packet 2 is still outstanding


def test_time_threshold_arms_a_timer_that_declares_the_loss() -> None:
    assert K_TIME_THRESHOLD == 9 / 8
    rec, cc = make_recovery()
    send(rec, 0, 0.0)
    send(rec, 1, 0.001)
    acked, lost = rec.on_ack_received([(1, 1)], 0.0, 0.101)  # latest_rtt = smoothed_rtt = 0.1
    assert (pns(acked), lost) == ([1], [])
    deadline = 0.0 + 9 / 8 * 0.1
    assert rec.get_loss_detection_timer() == pytest.approx(deadline)
    lost, probes = rec.on_loss_detection_timeout(rec.get_loss_detection_timer() or 0.0)
    assert (pns(lost), probes) == ([0], 0)
    assert cc.lost == [[0]]
    assert rec.bytes_in_flight == 0
    assert rec.get_loss_detection_timer() is None


def test_time_threshold_uses_smoothed_rtt_when_it_is_larger() -> None:
    rec, _ = make_recovery()
    send(rec, 0, 0.0)
    rec.on_ack_received([(0, 0)], 0.0, 0.2)
    send(rec, 1, 1.0)
    send(rec, 2, 1.001)
    rec.on_ack_received([(2, 2)], 0.0, 1.051)  # latest 0.05, smoothed 0.18125
    assert rec.rtt.smoothed_rtt > rec.rtt.latest_rtt
    assert rec.get_loss_detection_timer() == pytest.approx(1.0 + 9 / 8 * (0.875 * 0.2 + 0.125 * 0.05))


def test_time_threshold_uses_latest_rtt_when_it_is_larger() -> None:
    rec, _ = make_recovery()
    send(rec, 0, 0.0)
    rec.on_ack_received([(0, 0)], 0.0, 0.05)
    send(rec, 1, 1.0)
    send(rec, 2, 1.001)
    acked, lost = rec.on_ack_received([(2, 2)], 0.0, 1.201)  # latest 0.2, smoothed 0.06875
    # With smoothed_rtt the deadline would be 1.077, already past: packet 1 must survive.
    assert (pns(acked), lost) == ([2], [])
    assert rec.get_loss_detection_timer() == pytest.approx(1.0 + 9 / 8 * 0.2)


def test_loss_delay_has_a_granularity_floor() -> None:
    rec, _ = make_recovery()
    send(rec, 0, 0.0)
    send(rec, 1, 0.00001)
    rec.on_ack_received([(1, 1)], 0.0, 0.00011)  # a 100 microsecond path
    assert rec.get_loss_detection_timer() == pytest.approx(K_GRANULARITY)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_loss_detection_matches_the_rfc_thresholds(data: st.DataObject) -> None:
    """Once due timers have run and an ACK is processed, a packet is lost exactly when it meets
    one of the RFC 9002 6.1 thresholds, and nothing is ever reported twice."""
    rec, _ = make_recovery()
    count = data.draw(st.integers(1, 40))
    gaps = data.draw(st.lists(st.floats(0, 0.05), min_size=count, max_size=count))
    sent_at: dict[int, float] = {}
    now = 0.0
    for pn, gap in enumerate(gaps):
        now += gap
        send(rec, pn, now)
        sent_at[pn] = now
    outstanding = set(sent_at)
    reported: set[int] = set()
    for _ in range(data.draw(st.integers(1, 8))):
        now += data.draw(st.floats(0.001, 0.3))
        timed_out: list[SentPacket] = []
        for _ in range(20):  # the connection runs every timer due before it reads the ACK
            timer = rec.get_loss_detection_timer()
            if timer is None or timer > now:
                break
            timed_out += rec.on_loss_detection_timeout(timer)[0]
        assert not set(pns(timed_out)) & reported, "a packet was reported twice"
        reported |= set(pns(timed_out))
        outstanding -= set(pns(timed_out))
        low = data.draw(st.integers(0, count - 1))
        high = data.draw(st.integers(low, count - 1))
        acked, lost = rec.on_ack_received([(low, high)], 0.0, now)
        assert set(pns(acked)) == outstanding & set(range(low, high + 1))
        newly = set(pns(acked)) | set(pns(lost))
        assert len(newly) == len(acked) + len(lost)
        assert not newly & reported, "a packet was reported twice"
        reported |= newly
        outstanding -= newly
        rtt = rec.rtt
        loss_delay = max(K_TIME_THRESHOLD * max(rtt.latest_rtt, rtt.smoothed_rtt), K_GRANULARITY)

        def meets_threshold(pn: int, delay: float = loss_delay, at: float = now) -> bool:
            return pn < rec.largest_acked and (
                sent_at[pn] + delay <= at or rec.largest_acked - pn >= K_PACKET_THRESHOLD
            )

        assert all(meets_threshold(pn) for pn in pns(lost))
        assert not any(meets_threshold(pn) for pn in outstanding)
        assert rec.bytes_in_flight == SIZE * len(outstanding)
        candidates = [sent_at[pn] + loss_delay for pn in outstanding if pn < rec.largest_acked]
        if candidates:
            assert rec.get_loss_detection_timer() == pytest.approx(min(candidates))


# --- Probe timeout (RFC 9002 section 6.2) ---------------------------------------------------------


def test_pto_fires_after_the_initial_rtt_based_period_and_backs_off() -> None:
    rec, _ = make_recovery()
    assert rec.get_loss_detection_timer() is None  # nothing in flight: no timer
    send(rec, 0, 1.0)
    period = K_INITIAL_RTT + 4 * (K_INITIAL_RTT / 2) + MAX_ACK_DELAY
    assert rec.get_loss_detection_timer() == pytest.approx(1.0 + period)
    fired = 1.0 + period
    assert rec.on_loss_detection_timeout(fired) == ([], PTO_PROBES)
    assert rec.pto_count == 1
    assert rec.packets_in_flight == 1  # a PTO declares nothing lost
    expected = [2, 4, 8, 16, 32, 64, 64, 64]  # doubles per PTO, capped at 2**MAX_PTO_BACKOFF
    assert expected[-1] == 1 << MAX_PTO_BACKOFF
    for factor in expected:
        timer = rec.get_loss_detection_timer()
        assert timer == pytest.approx(fired + period * factor)
        fired = timer or 0.0
        rec.on_loss_detection_timeout(fired)


def test_pto_counts_from_the_last_ack_eliciting_packet_sent() -> None:
    rec, _ = make_recovery()
    send(rec, 0, 0.0)
    rec.on_ack_received([(0, 0)], 0.0, 0.1)
    pto = 0.1 + 4 * 0.05 + MAX_ACK_DELAY
    assert rec.rtt.pto(MAX_ACK_DELAY) == pytest.approx(pto)
    send(rec, 1, 1.0)
    send(rec, 2, 1.5)
    assert rec.get_loss_detection_timer() == pytest.approx(1.5 + pto)
    rec.on_loss_detection_timeout(1.5 + pto)
    send(rec, 3, 1.5 + pto + 0.001)  # the probe
    assert rec.get_loss_detection_timer() == pytest.approx(1.5 + pto + 0.001 + 2 * pto)


def test_a_new_ack_resets_the_backoff() -> None:
    rec, _ = make_recovery()
    send(rec, 0, 0.0)
    send(rec, 1, 0.0)
    for _ in range(3):
        rec.on_loss_detection_timeout(rec.get_loss_detection_timer() or 0.0)
    assert rec.pto_count == 3
    send(rec, 2, 10.0)
    rec.on_ack_received([(2, 2)], 0.0, 10.1)
    assert rec.pto_count == 0


def test_timeout_with_nothing_in_flight_does_nothing() -> None:
    rec, cc = make_recovery()
    assert rec.on_loss_detection_timeout(5.0) == ([], 0)
    assert rec.pto_count == 0
    assert cc.lost == []


# --- Bookkeeping ----------------------------------------------------------------------------------


def test_can_send_respects_the_congestion_window() -> None:
    rec, cc = make_recovery()
    cc.congestion_window = 3 * SIZE
    send(rec, 0, 0.0)
    send(rec, 1, 0.0)
    assert rec.can_send(SIZE)
    assert not rec.can_send(SIZE + 1)
    send(rec, 2, 0.0)
    assert not rec.can_send(1)


def test_discard_all_forgets_everything_in_flight() -> None:
    rec, cc = make_recovery()
    for pn in range(3):
        send(rec, pn, 0.0)
    assert pns(rec.discard_all()) == [0, 1, 2]
    assert (rec.bytes_in_flight, rec.packets_in_flight) == (0, 0)
    assert rec.get_loss_detection_timer() is None
    assert rec.on_ack_received([(0, 2)], 0.0, 1.0) == ([], [])
    assert cc.lost == []
