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
    LOST_MEMORY,
    MAX_PACKET_THRESHOLD,
    MAX_PTO_BACKOFF,
    MAX_PTO_PERIOD,
    PTO_PROBES,
    REORDERING_DECAY_RTTS,
    TIME_THRESHOLD_STEPS,
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
        self.persistent_congestion: list[float] = []

    def on_packet_sent(self, packet: SentPacket, bytes_in_flight: int, now: float) -> None:
        self.sent.append((packet.packet_number, bytes_in_flight))

    def on_packets_acked(self, packets: list[SentPacket], now: float, rtt: RttEstimator) -> None:
        self.acked.append([p.packet_number for p in packets])

    def on_packets_lost(self, packets: list[SentPacket], now: float, rtt: RttEstimator) -> None:
        self.lost.append([p.packet_number for p in packets])

    def on_persistent_congestion(self, now: float) -> None:
        self.persistent_congestion.append(now)


def make_recovery(*, adapt_packet_threshold: bool = False) -> tuple[LossRecovery, RecordingController]:
    cc = RecordingController()
    rec = LossRecovery(
        congestion=cc, max_ack_delay=MAX_ACK_DELAY, adapt_packet_threshold=adapt_packet_threshold
    )
    return rec, cc


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
        # Acknowledging a packet already declared lost may have widened the thresholds.
        loss_delay = max(rec.time_threshold * max(rtt.latest_rtt, rtt.smoothed_rtt), K_GRANULARITY)

        def meets_threshold(pn: int, delay: float = loss_delay, at: float = now) -> bool:
            return pn < rec.largest_acked and (
                sent_at[pn] + delay <= at or rec.largest_acked - pn >= rec.packet_threshold
            )

        assert all(meets_threshold(pn) for pn in pns(lost))
        assert not any(meets_threshold(pn) for pn in outstanding)
        assert rec.bytes_in_flight == SIZE * len(outstanding)
        candidates = [sent_at[pn] + loss_delay for pn in outstanding if pn < rec.largest_acked]
        if candidates:
            assert rec.get_loss_detection_timer() == pytest.approx(min(candidates))


# --- Reordering adaptation (RFC 9002 section 6.1, RFC 8985 section 6.2) ---------------------------


def reorder_round(rec: LossRecovery, first_pn: int, start: float, depth: int) -> tuple[list[int], list[int]]:
    """Send ``depth + 1`` packets 1 ms apart; the first arrives last, ``depth`` behind the newest.

    The ACK of the others comes 100 ms after the first was sent and that of the
    straggler 1 ms later. Returns (packets declared lost, packets acknowledged).
    """
    last = first_pn + depth
    for pn in range(first_pn, last + 1):
        send(rec, pn, start + (pn - first_pn) * 0.001)
    acked, lost = rec.on_ack_received([(first_pn + 1, last)], 0.0, start + 0.1)
    late, lost_late = rec.on_ack_received([(first_pn, last)], 0.0, start + 0.101)
    return pns(lost) + pns(lost_late), pns(acked) + pns(late)


def test_a_spurious_loss_widens_the_thresholds_so_the_same_reordering_is_tolerated() -> None:
    rec, cc = make_recovery(adapt_packet_threshold=True)
    assert (rec.packet_threshold, rec.time_threshold) == (K_PACKET_THRESHOLD, K_TIME_THRESHOLD)
    lost, acked = reorder_round(rec, 0, 0.0, depth=4)
    assert (lost, acked) == ([0], [1, 2, 3, 4])  # 4 behind the largest: declared lost...
    assert rec.packets_spuriously_lost == 1  # ...and then acknowledged after all
    assert rec.packets_lost == 1
    assert rec.packet_threshold == 5  # one past the depth it was declared lost at
    assert rec.time_threshold == TIME_THRESHOLD_STEPS[1] == 5 / 4
    lost, acked = reorder_round(rec, 5, 0.2, depth=4)
    assert (lost, acked) == ([], [6, 7, 8, 9, 5])  # the same reordering is no longer a loss
    assert rec.packets_spuriously_lost == 1
    assert cc.lost == [[0]]


def test_a_late_ack_for_a_packet_lost_by_the_time_threshold_widens_the_time_threshold() -> None:
    rec, _ = make_recovery()
    send(rec, 0, 0.0)
    send(rec, 1, 0.01)
    rec.on_ack_received([(1, 1)], 0.0, 0.11)  # latest RTT 0.1: packet 0 is due at 0.1125
    lost, _ = rec.on_loss_detection_timeout(0.1125)
    assert pns(lost) == [0]
    rec.on_ack_received([(0, 1)], 0.0, 0.12)
    assert rec.packets_spuriously_lost == 1
    assert rec.time_threshold == 5 / 4
    assert rec.packet_threshold == K_PACKET_THRESHOLD  # only 1 behind when declared lost
    # The same delay again: the timer now falls after the straggler's ACK.
    send(rec, 2, 0.2)
    send(rec, 3, 0.21)
    rec.on_ack_received([(3, 3)], 0.0, 0.31)
    assert rec.get_loss_detection_timer() == pytest.approx(0.2 + 5 / 4 * 0.1)
    acked, lost = rec.on_ack_received([(2, 3)], 0.0, 0.32)
    assert (pns(acked), pns(lost)) == ([2], [])
    assert rec.packets_spuriously_lost == 1


def test_by_default_the_packet_threshold_stays_at_three() -> None:
    rec, _ = make_recovery()
    lost, _ = reorder_round(rec, 0, 0.0, depth=4)
    assert lost == [0]
    assert rec.packets_spuriously_lost == 1
    assert (rec.packet_threshold, rec.time_threshold) == (K_PACKET_THRESHOLD, 5 / 4)
    lost, _ = reorder_round(rec, 5, 0.2, depth=4)
    assert lost == [5]  # depth still counts; only the time threshold widened


def test_widening_is_capped() -> None:
    rec, _ = make_recovery(adapt_packet_threshold=True)
    start, pn = 0.0, 0
    for _ in range(len(TIME_THRESHOLD_STEPS) + 2):
        lost, _ = reorder_round(rec, pn, start, depth=20)
        assert lost == [pn]  # deeper than any threshold we would widen to
        pn, start = pn + 21, start + 0.2
    assert rec.time_threshold == TIME_THRESHOLD_STEPS[-1] == 2.0
    assert rec.packet_threshold == MAX_PACKET_THRESHOLD
    assert rec.packets_spuriously_lost == len(TIME_THRESHOLD_STEPS) + 2


def test_thresholds_decay_back_after_round_trips_without_spurious_losses() -> None:
    rec, _ = make_recovery(adapt_packet_threshold=True)
    reorder_round(rec, 0, 0.0, depth=5)  # threshold 6, 5/4
    assert (rec.packet_threshold, rec.time_threshold) == (6, 5 / 4)
    quiet = REORDERING_DECAY_RTTS * 0.1  # the smoothed RTT stays close to 0.1 s
    now, pn = 0.2, 6
    history = []
    for _ in range(4):
        # In-order traffic for not quite the decay period changes nothing...
        send(rec, pn, now)
        rec.on_ack_received([(pn, pn)], 0.0, now + 0.1)
        assert (rec.packet_threshold, rec.time_threshold) == (history or [(6, 5 / 4)])[-1]
        # ...one past it steps both back by one.
        now += quiet * 1.05
        send(rec, pn + 1, now)
        rec.on_ack_received([(pn + 1, pn + 1)], 0.0, now + 0.1)
        history.append((rec.packet_threshold, rec.time_threshold))
        now, pn = now + 0.2, pn + 2
    assert history == [(5, K_TIME_THRESHOLD), (4, K_TIME_THRESHOLD)] + [(3, K_TIME_THRESHOLD)] * 2
    # Back at the RFC 9002 thresholds, reordering 5 deep is a loss again.
    lost, _ = reorder_round(rec, pn, now, depth=5)
    assert lost == [pn]


def test_the_memory_of_lost_packets_is_bounded() -> None:
    rec, _ = make_recovery()
    count = LOST_MEMORY + 100
    for pn in range(count):
        send(rec, pn, 0.0)
    send(rec, count, 1.0)
    _, lost = rec.on_ack_received([(count, count)], 0.0, 1.1)
    assert len(lost) == count  # all by the time threshold
    # The oldest are forgotten: their late ACK is not recognised as a spurious loss...
    rec.on_ack_received([(0, 99), (count, count)], 0.0, 1.2)
    assert rec.packets_spuriously_lost == 0
    assert (rec.packet_threshold, rec.time_threshold) == (K_PACKET_THRESHOLD, K_TIME_THRESHOLD)
    # ...the most recent LOST_MEMORY are remembered, and each counts once.
    rec.on_ack_received([(0, count)], 0.0, 1.3)
    rec.on_ack_received([(0, count)], 0.0, 1.4)
    assert rec.packets_spuriously_lost == LOST_MEMORY


# --- Persistent congestion (RFC 9002 section 7.6) ------------------------------------------------


def lose_a_long_run(rec: LossRecovery, pns_sent: list[int], *, acked: tuple[int, ...] = ()) -> None:
    """After an RTT sample of 0.1 s at 0.1 s (3 x PTO = 0.825 s), send ``pns_sent`` 0.15 s apart
    from 1.0 s, acknowledge ``acked`` and the packet sent at 3.0 s, at 3.1 s."""
    for i, pn in enumerate(pns_sent):
        send(rec, pn, 1.0 + 0.15 * i)
    send(rec, 100, 3.0)
    rec.on_ack_received([(pn, pn) for pn in acked] + [(100, 100)], 0.0, 3.1)


def test_a_long_run_of_losses_is_persistent_congestion() -> None:
    rec, cc = make_recovery()
    send(rec, 0, 0.0)
    rec.on_ack_received([(0, 0)], 0.0, 0.1)
    lose_a_long_run(rec, list(range(1, 11)))
    assert cc.lost == [list(range(1, 11))]
    assert cc.persistent_congestion == [3.1]


def test_an_acknowledged_packet_inside_the_run_breaks_it() -> None:
    rec, cc = make_recovery()
    send(rec, 0, 0.0)
    rec.on_ack_received([(0, 0)], 0.0, 0.1)
    lose_a_long_run(rec, list(range(1, 11)), acked=(6,))  # runs 1-5 and 7-10 each span 0.6 s
    assert cc.lost == [[1, 2, 3, 4, 5, 7, 8, 9, 10]]
    assert cc.persistent_congestion == []


def test_no_persistent_congestion_before_an_rtt_sample() -> None:
    rec, cc = make_recovery()
    for pn in range(10):
        send(rec, pn, 0.15 * pn)
    send(rec, 10, 3.0)
    rec.on_ack_received([(10, 10)], 0.0, 3.1)  # the first RTT sample: packets 0-9 predate it
    assert cc.lost == [list(range(10))]
    assert cc.persistent_congestion == []


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
    expected = [2, 2, 2]  # a PTO this long (~1 s) backs off once: 2 x PTO > MAX_PTO_PERIOD
    assert period > MAX_PTO_PERIOD
    for factor in expected:
        timer = rec.get_loss_detection_timer()
        assert timer == pytest.approx(fired + period * factor)
        fired = timer or 0.0
        rec.on_loss_detection_timeout(fired)


def test_pto_backoff_doubles_up_to_max_pto_period_so_an_outage_ends_are_noticed_fast() -> None:
    rec, _ = make_recovery()
    send(rec, 0, 0.0)
    rec.on_ack_received([(0, 0)], 0.0, 0.01)  # RTT 10 ms: PTO = 10 + 20 + max_ack_delay ms
    base = 0.01 + 4 * 0.005 + MAX_ACK_DELAY
    send(rec, 1, 1.0)
    fired = 1.0
    periods = []
    for _ in range(10):
        timer = rec.get_loss_detection_timer()
        assert timer is not None
        periods.append(timer - fired)
        fired = timer
        rec.on_loss_detection_timeout(fired)
    doubling = [base * (1 << n) for n in range(10)]
    assert periods == pytest.approx([min(p, MAX_PTO_PERIOD) for p in doubling])
    assert periods[-1] == pytest.approx(MAX_PTO_PERIOD)  # probes keep coming 4 times a second
    assert 1 << MAX_PTO_BACKOFF > MAX_PTO_PERIOD / base  # the count cap never bites first here


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


@given(
    lost=st.sets(st.integers(0, 199), max_size=120),
    acks=st.lists(st.lists(st.tuples(st.integers(0, 199), st.integers(0, 20)), max_size=32), max_size=6),
)
def test_late_acks_of_lost_packets_are_each_counted_once_exactly_as_a_naive_scan_would(
    lost: set[int], acks: list[list[tuple[int, int]]]
) -> None:
    """The bisection over remembered lost packets finds what scanning every range would."""
    rec, _ = make_recovery()
    for pn in range(200):
        send(rec, pn, 0.0)
    send(rec, 200, 1.0)
    kept = [(pn, pn) for pn in range(200) if pn not in lost] + [(200, 200)]
    _, declared = rec.on_ack_received(sorted(kept, reverse=True), 0.0, 1.1)  # the rest: lost by time
    assert sorted(p.packet_number for p in declared) == sorted(lost)
    remembered = set(lost)
    expected = 0
    for ack in acks:
        ranges = sorted(((low, min(low + span, 200)) for low, span in ack), reverse=True)
        for low, high in ranges:
            hit = {pn for pn in remembered if low <= pn <= high}
            expected += len(hit)
            remembered -= hit
        rec.on_ack_received(ranges, 0.0, 1.2)
    assert rec.packets_spuriously_lost == expected
