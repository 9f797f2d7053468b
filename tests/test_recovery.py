"""RTT estimation (RFC 9002 section 5), RACK-TLP loss detection (RFC 8985) and the probe timeout.

All times are explicit seconds; a recording controller stands in for congestion
control so each test can see exactly which packets were reported acked or lost.
"""

from __future__ import annotations

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from seam.congestion.base import CongestionController
from seam.recovery import (
    K_GRANULARITY,
    K_INITIAL_RTT,
    K_PACKET_THRESHOLD,
    LOST_MEMORY,
    MAX_PTO_BACKOFF,
    MAX_PTO_PERIOD,
    PTO_PROBES,
    REO_WND_PERSIST,
    TLP_PROBES,
    LossRecovery,
    RttEstimator,
    SentPacket,
)
from tests.interpreted import interpreted

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


def make_recovery() -> tuple[LossRecovery, RecordingController]:
    cc = RecordingController()
    rec = LossRecovery(congestion=cc, max_ack_delay=MAX_ACK_DELAY)
    return rec, cc


def send(
    rec: LossRecovery,
    pn: int,
    now: float,
    *,
    size: int = SIZE,
    in_flight: bool = True,
    is_mtu_probe: bool = False,
) -> SentPacket:
    packet = SentPacket(pn, now, size, ack_eliciting=True, in_flight=in_flight, is_mtu_probe=is_mtu_probe)
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
    assert rec.on_ack_received([(3, 3)], 0.0, 0.1)[1] == []  # one later packet acked: reo_wnd applies
    assert pns(rec.on_loss_detection_timeout(rec.get_loss_detection_timer() or 0.0)[0]) == [0, 1, 2]
    assert rec.on_loss_detection_timeout(rec.get_loss_detection_timer() or 0.0) == ([], TLP_PROBES)
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


# --- RACK loss detection (RFC 8985 section 6) ------------------------------------------------------


def test_rack_state_follows_the_most_recently_sent_packet_acknowledged() -> None:
    """RACK.xmit_ts, its packet number and RACK.rtt (that packet's own RTT, not the smoothed one)."""
    rec, _ = make_recovery()
    send(rec, 0, 0.0)
    rec.on_ack_received([(0, 0)], 0.0, 0.2)  # smoothed RTT 0.2
    send(rec, 1, 1.0)
    send(rec, 2, 1.001)
    rec.on_ack_received([(2, 2)], 0.0, 1.051)
    assert (rec.rack_pn, rec.rack_xmit_ts, rec.rack_rtt) == (2, 1.001, pytest.approx(0.05))
    assert rec.rtt.smoothed_rtt == pytest.approx(0.875 * 0.2 + 0.125 * 0.05)
    # Packet 1 is due RACK.rtt + reo_wnd after it left; reo_wnd = min_rtt / 4 (one later packet acked).
    assert rec.reo_wnd == pytest.approx(0.05 / 4)
    assert rec.get_loss_detection_timer() == pytest.approx(1.0 + 0.05 + 0.05 / 4)
    # An older packet acknowledged later does not move RACK back.
    rec.on_ack_received([(1, 2)], 0.0, 1.06)
    assert (rec.rack_pn, rec.rack_rtt) == (2, pytest.approx(0.05))


def test_with_no_reordering_seen_three_later_packets_acked_make_the_window_zero() -> None:
    """RFC 8985 6.2: reo_wnd is 0 for a packet DupThresh packets behind while no reordering was seen,
    so it is lost as soon as RACK.rtt has passed since it left: at once, given those ACKs."""
    assert K_PACKET_THRESHOLD == 3
    rec, cc = make_recovery()
    for pn in range(5):
        send(rec, pn, pn * 0.001)
    acked, lost = rec.on_ack_received([(1, 2)], 0.0, 0.102)  # RACK.rtt 0.1
    assert (pns(acked), lost) == ([1, 2], [])  # two later packets acked: the window still applies
    assert rec.get_loss_detection_timer() == pytest.approx(0.0 + 0.1 + 0.1 / 4)
    acked, lost = rec.on_ack_received([(1, 3)], 0.0, 0.1035)
    assert (pns(acked), pns(lost)) == ([3], [0])  # the third: reo_wnd 0, due at 0.1005
    assert cc.lost == [[0]]
    assert rec.in_recovery and not rec.reordering_seen
    assert rec.packets_lost == 1
    assert rec.bytes_in_flight == SIZE  # packet 4 is still out
    # 4 was sent after RACK's packet: no reorder timer, only the TLP.
    assert rec.get_loss_detection_timer() == pytest.approx(0.004 + 2 * rec.rtt.smoothed_rtt + MAX_ACK_DELAY)


def test_the_reorder_timer_fires_at_xmit_ts_plus_rack_rtt_plus_reo_wnd() -> None:
    rec, cc = make_recovery()
    send(rec, 0, 0.0)
    send(rec, 1, 0.01)
    acked, lost = rec.on_ack_received([(1, 1)], 0.0, 0.11)  # RACK.rtt = min_rtt = srtt = 0.1
    assert (pns(acked), lost) == ([1], [])
    deadline = 0.0 + 0.1 + 0.1 / 4
    assert rec.get_loss_detection_timer() == pytest.approx(deadline)
    lost, probes = rec.on_loss_detection_timeout(rec.get_loss_detection_timer() or 0.0)
    assert (pns(lost), probes) == ([0], 0)  # declared without any further ACK
    assert cc.lost == [[0]]
    assert rec.bytes_in_flight == 0
    assert rec.get_loss_detection_timer() is None


def test_packets_sent_at_the_same_time_are_ordered_by_number() -> None:
    """RFC 8985's tie-break on equal transmit times (RACK_sent_after) is QUIC's packet number."""
    rec, _ = make_recovery()
    for pn in range(4):
        send(rec, pn, 0.0)
    _, lost = rec.on_ack_received([(3, 3)], 0.0, 0.1)
    assert lost == []
    assert rec.get_loss_detection_timer() == pytest.approx(0.1 + 0.1 / 4)  # 0, 1 and 2 are candidates
    lost, _ = rec.on_loss_detection_timeout(0.1 + 0.1 / 4)
    assert pns(lost) == [0, 1, 2]


def see_reordering(rec: LossRecovery) -> None:
    """Packet 0 overtaken by 1 and acknowledged 3 ms later, inside its window: reordering seen."""
    send(rec, 0, 0.0)
    send(rec, 1, 0.001)
    send(rec, 2, 0.002)
    rec.on_ack_received([(1, 1)], 0.0, 0.101)
    assert not rec.reordering_seen
    acked, lost = rec.on_ack_received([(0, 2)], 0.0, 0.104)
    assert (pns(acked), lost) == ([0, 2], [])
    assert rec.reordering_seen


def test_a_packet_reordered_by_less_than_reo_wnd_is_not_lost_once_reordering_was_seen() -> None:
    rec, cc = make_recovery()
    see_reordering(rec)
    # Packet 3 arrives 10 ms late: 4, 5, 6 and 7 are acknowledged first.
    for pn in range(3, 8):
        send(rec, pn, 0.2 + (pn - 3) * 0.001)
    acked, lost = rec.on_ack_received([(4, 7)], 0.0, 0.304)
    assert (pns(acked), lost) == ([4, 5, 6, 7], [])  # four later packets acked, yet not lost
    assert rec.reo_wnd == pytest.approx(0.1 / 4)
    assert rec.get_loss_detection_timer() == pytest.approx(0.2 + 0.1 + 0.1 / 4)
    acked, lost = rec.on_ack_received([(0, 7)], 0.0, 0.311)
    assert (pns(acked), lost) == ([3], [])
    assert cc.lost == []
    assert rec.packets_spuriously_lost == 0


def declare_overtaken_packet_lost(rec: LossRecovery) -> None:
    """A 100 ms path; packet 3 is overtaken by 4-7 and declared lost by DupThresh at 0.304 s."""
    send(rec, 0, 0.0)
    rec.on_ack_received([(0, 0)], 0.0, 0.1)
    for pn in range(3, 8):
        send(rec, pn, 0.2 + (pn - 3) * 0.001)
    _, lost = rec.on_ack_received([(4, 7), (0, 0)], 0.0, 0.304)
    assert pns(lost) == [3]


def test_without_reordering_seen_the_same_delay_is_a_spurious_loss() -> None:
    """The contrast to the test above: DupThresh fires, and the late ACK is a spurious loss. It came
    11 ms late on a 100 ms path, which the reordering window would have covered: reordering seen."""
    rec, cc = make_recovery()
    declare_overtaken_packet_lost(rec)
    assert not rec.reordering_seen
    rec.on_ack_received([(3, 7), (0, 0)], 0.0, 0.311)
    assert rec.packets_spuriously_lost == 1
    assert rec.reo_wnd_mult == 2  # RFC 8985's DSACK response
    assert rec.reordering_seen  # within the window it opens: the next such packet is not lost
    assert cc.lost == [[3]]


def test_a_packet_a_round_trip_late_leaves_dupthresh_on() -> None:
    """A spurious loss the reordering window could not have prevented does not turn DupThresh off."""
    rec, _ = make_recovery()
    declare_overtaken_packet_lost(rec)
    rec.on_ack_received([(3, 7), (0, 0)], 0.0, 0.4)  # 200 ms after it was sent: a round trip late
    assert rec.packets_spuriously_lost == 1
    assert rec.reo_wnd_mult == 2
    assert not rec.reordering_seen


def test_in_recovery_the_window_is_zero_until_reordering_is_seen() -> None:
    rec, cc = make_recovery()
    for pn in range(6):
        send(rec, pn, pn * 0.001)
    _, lost = rec.on_ack_received([(1, 3)], 0.0, 0.103)
    assert pns(lost) == [0]
    assert rec.in_recovery and rec.reo_wnd == 0.0
    # Packet 4 has only one later packet acknowledged, but recovery makes its window zero.
    _, lost = rec.on_ack_received([(1, 3), (5, 5)], 0.0, 0.106)
    assert pns(lost) == [4]
    assert rec.in_recovery  # 5 was sent before the loss was declared
    send(rec, 6, 0.2)
    rec.on_ack_received([(5, 6), (1, 3)], 0.0, 0.3)
    assert not rec.in_recovery  # a packet sent after it is acknowledged: recovery is over
    send(rec, 7, 0.4)
    send(rec, 8, 0.401)
    _, lost = rec.on_ack_received([(8, 8)], 0.0, 0.501)
    assert lost == []  # out of recovery, one later packet acked: the window applies again
    assert rec.get_loss_detection_timer() == pytest.approx(0.4 + 0.1 + rec.rtt.min_rtt / 4)
    assert cc.lost == [[0], [4]]


def spurious_loss_round(rec: LossRecovery, pn: int, start: float) -> None:
    """Send ``pn`` and ``pn + 1``; ``pn`` is overtaken, declared lost by the reorder timer, then acked."""
    send(rec, pn, start)
    send(rec, pn + 1, start + 0.001)
    rec.on_ack_received([(pn + 1, pn + 1)], 0.0, start + 0.101)
    timer = rec.get_loss_detection_timer()
    assert timer is not None and timer < start + 0.3
    lost, _ = rec.on_loss_detection_timeout(timer)
    assert pns(lost) == [pn]
    rec.on_ack_received([(pn, pn + 1)], 0.0, start + 0.3)


def clean_round(rec: LossRecovery, pn: int, start: float) -> None:
    send(rec, pn, start)
    acked, lost = rec.on_ack_received([(pn, pn)], 0.0, start + 0.1)
    assert (pns(acked), lost) == ([pn], [])


def test_reo_wnd_grows_per_spurious_round_is_capped_at_srtt_and_resets_after_16_quiet_rounds() -> None:
    rec, _ = make_recovery()
    see_reordering(rec)  # min_rtt 0.1 s, and the window applies to every packet
    assert (rec.reo_wnd_mult, rec.reo_wnd) == (1, pytest.approx(0.025))
    pn, start = 10, 1.0
    steps = []
    for _ in range(5):  # each round trip starts after the previous spurious loss: one step each
        spurious_loss_round(rec, pn, start)
        steps.append((rec.reo_wnd_mult, rec.reo_wnd, rec.rtt.min_rtt, rec.rtt.smoothed_rtt))
        pn, start = pn + 2, start + 1.0
    assert [mult for mult, *_ in steps] == [2, 3, 4, 5, 6]
    for mult, window, min_rtt, srtt in steps:
        assert min_rtt == pytest.approx(0.1)
        assert srtt == pytest.approx(0.1, abs=0.002)
        assert window == pytest.approx(min(mult * min_rtt / 4, srtt))
    assert [window for _, window, *_ in steps[:3]] == pytest.approx([0.05, 0.075, 0.1], abs=0.001)
    assert all(window == srtt < mult * 0.1 / 4 for mult, window, _, srtt in steps[3:])  # capped
    assert rec.packets_spuriously_lost == 5
    # The round trip of the last spurious loss, then REO_WND_PERSIST - 1 quiet ones: still wide...
    assert REO_WND_PERSIST == 16
    for _ in range(REO_WND_PERSIST):
        clean_round(rec, pn, start)
        assert rec.reo_wnd_mult == 6
        pn, start = pn + 1, start + 0.2
    # ...and the 16th quiet round trip resets it.
    clean_round(rec, pn, start)
    assert (rec.reo_wnd_mult, rec.reo_wnd) == (1, pytest.approx(0.025))


def test_spurious_losses_within_one_round_trip_widen_the_window_once() -> None:
    rec, _ = make_recovery()
    see_reordering(rec)
    for pn in range(10, 14):
        send(rec, pn, 1.0)
    rec.on_ack_received([(13, 13)], 0.0, 1.1)
    lost, _ = rec.on_loss_detection_timeout(rec.get_loss_detection_timer() or 0.0)
    assert pns(lost) == [10, 11, 12]
    rec.on_ack_received([(10, 10), (13, 13)], 0.0, 1.2)
    rec.on_ack_received([(10, 11), (13, 13)], 0.0, 1.21)
    rec.on_ack_received([(10, 13)], 0.0, 1.22)
    assert rec.packets_spuriously_lost == 3
    assert rec.reo_wnd_mult == 2


def test_a_late_ack_widening_the_window_rearms_the_timer() -> None:
    """An ACK that acknowledges nothing new but a packet declared lost still moves the reorder timer."""
    rec, _ = make_recovery()
    see_reordering(rec)
    send(rec, 10, 1.0)
    send(rec, 11, 1.0)
    send(rec, 12, 1.002)
    rec.on_ack_received([(12, 12)], 0.0, 1.102)
    lost, _ = rec.on_loss_detection_timeout(rec.get_loss_detection_timer() or 0.0)
    assert pns(lost) == [10, 11]  # both due at RACK.rtt + reo_wnd (0.125 s)
    send(rec, 13, 1.2)
    send(rec, 14, 1.201)
    rec.on_ack_received([(14, 14), (12, 12)], 0.0, 1.301)
    assert rec.get_loss_detection_timer() == pytest.approx(1.2 + 0.1 + 0.025)
    acked, lost = rec.on_ack_received([(14, 14), (10, 12)], 0.0, 1.31)  # 10, 11: spurious
    assert (acked, lost) == ([], [])
    assert rec.reo_wnd_mult == 2
    assert rec.get_loss_detection_timer() == pytest.approx(1.2 + 0.1 + 0.05)


def test_mtu_probes_are_detected_like_any_packet_but_reported_to_no_one() -> None:
    rec, cc = make_recovery()
    send(rec, 0, 0.0, size=1400, is_mtu_probe=True)
    for pn in range(1, 4):
        send(rec, pn, pn * 0.001)
    _, lost = rec.on_ack_received([(1, 3)], 0.0, 0.103)
    assert pns(lost) == [0]
    assert cc.lost == []  # too big is not congestion (RFC 8899 section 3)
    assert (rec.packets_lost, rec.lost_bytes, rec.in_recovery) == (0, 0, False)
    rec.on_ack_received([(0, 3)], 0.0, 0.2)
    assert rec.packets_spuriously_lost == 0 and rec.reo_wnd_mult == 1


def test_the_memory_of_lost_packets_is_bounded() -> None:
    rec, _ = make_recovery()
    count = LOST_MEMORY + 100
    for pn in range(count):
        send(rec, pn, 0.0)
    send(rec, count, 1.0)
    _, lost = rec.on_ack_received([(count, count)], 0.0, 1.1)
    assert len(lost) == count  # all long overdue
    # The oldest are forgotten: their late ACK is not recognised as a spurious loss...
    rec.on_ack_received([(0, 99), (count, count)], 0.0, 1.2)
    assert rec.packets_spuriously_lost == 0
    assert rec.reo_wnd_mult == 1
    # ...the most recent LOST_MEMORY are remembered, and each counts once.
    rec.on_ack_received([(0, count)], 0.0, 1.3)
    rec.on_ack_received([(0, count)], 0.0, 1.4)
    assert rec.packets_spuriously_lost == LOST_MEMORY


def test_forget_lost_keeps_a_repaired_packet_from_counting_as_spurious() -> None:
    rec, _ = make_recovery()
    for pn in range(4):
        send(rec, pn, pn * 0.001)
    _, lost = rec.on_ack_received([(1, 3)], 0.0, 0.103)
    assert pns(lost) == [0]
    rec.forget_lost(0)  # FEC parked it: the peer may rebuild it
    rec.on_ack_received([(0, 3)], 0.0, 0.2)
    assert (rec.packets_spuriously_lost, rec.reo_wnd_mult) == (0, 1)


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


# --- Tail loss probe and probe timeout (RFC 8985 section 7, RFC 9002 section 6.2) ---------------


def test_pto_fires_after_the_initial_rtt_based_period_and_backs_off() -> None:
    rec, _ = make_recovery()
    assert rec.get_loss_detection_timer() is None  # nothing in flight: no timer
    send(rec, 0, 1.0)
    period = K_INITIAL_RTT + 4 * (K_INITIAL_RTT / 2) + MAX_ACK_DELAY  # no RTT sample: RFC 9002's PTO
    assert rec.get_loss_detection_timer() == pytest.approx(1.0 + period)
    fired = 1.0 + period
    assert rec.on_loss_detection_timeout(fired) == ([], TLP_PROBES)
    assert rec.pto_count == 1
    assert rec.packets_in_flight == 1  # a PTO declares nothing lost
    expected = [2, 2, 2]  # a PTO this long (~1 s) backs off once: 2 x PTO > MAX_PTO_PERIOD
    assert period > MAX_PTO_PERIOD
    for factor in expected:
        timer = rec.get_loss_detection_timer()
        assert timer == pytest.approx(fired + period * factor)
        fired = timer or 0.0
        assert rec.on_loss_detection_timeout(fired) == ([], PTO_PROBES)


def test_tlp_fires_at_twice_srtt_plus_max_ack_delay_with_one_packet_in_flight() -> None:
    """RFC 8985 7.2: a lone packet's ACK may be delayed, so its probe waits max_ack_delay longer."""
    rec, _ = make_recovery()
    send(rec, 0, 0.0)
    rec.on_ack_received([(0, 0)], 0.0, 0.1)  # srtt 0.1, rttvar 0.05: RFC 9002 PTO 0.325
    send(rec, 1, 1.0)
    assert rec.get_loss_detection_timer() == pytest.approx(1.0 + 2 * 0.1 + MAX_ACK_DELAY)
    send(rec, 2, 1.01)
    assert rec.get_loss_detection_timer() == pytest.approx(1.01 + 2 * 0.1)  # two in flight: 2 x srtt


def test_tlp_is_never_later_than_the_rfc9002_pto() -> None:
    """The PTO of RFC 9002 stands in for TCP's RTO: TLP_calc_PTO caps the probe timer at it."""
    rec, _ = make_recovery()
    for pn in range(50):
        send(rec, pn, pn * 1.0)
        rec.on_ack_received([(pn, pn)], 0.0, pn * 1.0 + 0.1)  # a steady path: rttvar decays to ~0
    pto = rec.rtt.pto(MAX_ACK_DELAY)
    assert pto < 2 * rec.rtt.smoothed_rtt
    send(rec, 50, 60.0)
    send(rec, 51, 60.001)
    assert rec.get_loss_detection_timer() == pytest.approx(60.001 + pto)


def test_a_tail_loss_is_recovered_by_the_probes_ack() -> None:
    rec, cc = make_recovery()
    send(rec, 0, 0.0)
    rec.on_ack_received([(0, 0)], 0.0, 0.1)
    for pn in (1, 2, 3):
        send(rec, pn, 1.0 + (pn - 1) * 0.001)
    _, lost = rec.on_ack_received([(1, 2), (0, 0)], 0.0, 1.101)  # the tail, packet 3, is lost
    assert lost == []
    srtt = rec.rtt.smoothed_rtt
    tlp = 1.002 + 2 * srtt + MAX_ACK_DELAY  # nothing for RACK to time: 3 was sent after 2
    assert rec.get_loss_detection_timer() == pytest.approx(tlp)
    assert rec.on_loss_detection_timeout(tlp) == ([], TLP_PROBES) == ([], 1)
    send(rec, 4, tlp)  # the probe (the connection resends the tail's data in it)
    acked, lost = rec.on_ack_received([(4, 4), (0, 2)], 0.0, tlp + 0.1)
    assert (pns(acked), pns(lost)) == ([4], [3])  # the probe's ACK lets RACK declare the tail lost
    assert cc.lost == [[3]]
    assert rec.pto_count == 0
    assert rec.get_loss_detection_timer() is None


def test_an_unanswered_tlp_backs_off_and_asks_for_two_probes() -> None:
    rec, _ = make_recovery()
    send(rec, 0, 0.0)
    rec.on_ack_received([(0, 0)], 0.0, 0.1)
    pto = rec.rtt.pto(MAX_ACK_DELAY)
    send(rec, 1, 1.0)
    tlp = 1.0 + 2 * 0.1 + MAX_ACK_DELAY
    assert rec.on_loss_detection_timeout(tlp) == ([], 1)
    assert rec.get_loss_detection_timer() == pytest.approx(tlp + 2 * pto)
    assert rec.on_loss_detection_timeout(tlp + 2 * pto) == ([], 2)


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
    tlp = 2 * 0.01 + MAX_ACK_DELAY  # the first timeout is the TLP, under the PTO here
    assert tlp < base
    doubling = [tlp] + [base * (1 << n) for n in range(1, 10)]
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
    assert rec.get_loss_detection_timer() == pytest.approx(1.5 + 2 * 0.1)
    rec.on_loss_detection_timeout(1.5 + 2 * 0.1)
    send(rec, 3, 1.5 + 2 * 0.1 + 0.001)  # the probe
    assert rec.get_loss_detection_timer() == pytest.approx(1.5 + 2 * 0.1 + 0.001 + 2 * pto)


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


# --- Properties over random schedules ---------------------------------------------------------------


def _naive_rack(rec: LossRecovery, now: float, resolved_acked: set[int]) -> tuple[list[int], float | None]:
    """RFC 8985's RACK_detect_loss by brute force: every packet sent before RACK's, no shortcuts.

    The timer is the earliest deadline of those not yet due.
    """
    window = rec.reo_wnd
    lost: list[int] = []
    timer: float | None = None
    for pn, packet in rec._sent.items():
        if pn >= rec.rack_pn:
            continue
        later_acked = sum(1 for other in resolved_acked if other > pn)
        zero = not rec.reordering_seen and later_acked >= K_PACKET_THRESHOLD
        deadline = packet.time_sent + rec.rack_rtt + (0.0 if zero else window)
        if deadline <= now:
            lost.append(pn)
        else:
            timer = deadline if timer is None else min(timer, deadline)
    return lost, timer


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_every_packet_is_acked_or_lost_exactly_once_and_detection_matches_brute_force(
    data: st.DataObject,
) -> None:
    """Random sends, reordered and repeated multi-range ACKs, timers: each packet ends up acked,
    lost or outstanding, never two of these; bytes in flight are the outstanding in-flight bytes;
    an ACK acknowledges exactly what it covers of what was outstanding; and each loss detection
    (with its prefix walk, O(1) DupThresh count and skipped ranges) agrees with a brute-force scan."""
    # The interpreted LossRecovery: a compiled one refuses the patched _detect_lost below.
    recovery_class = interpreted("seam.recovery").LossRecovery
    rec = recovery_class(congestion=RecordingController(), max_ack_delay=MAX_ACK_DELAY)
    sent: dict[int, SentPacket] = {}
    acked_set: set[int] = set()
    lost_set: set[int] = set()
    checks = [0]
    real_detect = rec._detect_lost

    def checked_detect(now: float) -> list[SentPacket]:
        expected_lost, expected_timer = _naive_rack(rec, now, acked_set)
        result = real_detect(now)
        assert pns(result) == expected_lost
        if expected_timer is None:
            assert rec._rack_timer is None
        else:
            assert rec._rack_timer == pytest.approx(expected_timer)
        checks[0] += 1
        return result

    rec._detect_lost = checked_detect  # type: ignore[method-assign]
    now = 0.0
    next_pn = 0
    for _ in range(data.draw(st.integers(1, 30))):
        action = data.draw(st.sampled_from(["send", "send", "ack", "ack", "timer"]))
        now += data.draw(st.floats(0.0, 0.08))
        if action == "send" or not sent:
            for _ in range(data.draw(st.integers(1, 6))):
                next_pn += data.draw(st.sampled_from([1, 1, 1, 2]))  # 2: an ACK-only packet in between
                packet = send(
                    rec,
                    next_pn,
                    now,
                    size=data.draw(st.integers(50, 1500)),
                    in_flight=data.draw(st.booleans()),
                    is_mtu_probe=data.draw(st.integers(0, 9)) == 0,
                )
                sent[next_pn] = packet
        elif action == "ack":
            ranges = data.draw(
                st.lists(
                    st.tuples(st.integers(0, next_pn), st.integers(0, 4)).map(
                        lambda t, top=next_pn: (t[0], min(t[0] + t[1], top))
                    ),
                    min_size=1,
                    max_size=5,
                )
            )
            outstanding = set(sent) - acked_set - lost_set
            covered = {pn for low, high in ranges for pn in range(low, high + 1)}
            # acked_set must be current when detection runs inside the call: add the newly acked first.
            acked_set |= outstanding & covered
            acked, lost = rec.on_ack_received(ranges, 0.0, now)
            assert set(pns(acked)) == outstanding & covered
            assert pns(acked) == sorted(pns(acked))
            assert not set(pns(lost)) & (acked_set | lost_set)
            lost_set |= set(pns(lost))
        else:
            timer = rec.get_loss_detection_timer()
            if timer is not None:
                now = max(now, timer)
                lost, _ = rec.on_loss_detection_timeout(now)
                assert not set(pns(lost)) & (acked_set | lost_set)
                lost_set |= set(pns(lost))
        assert not acked_set & lost_set
        outstanding = set(sent) - acked_set - lost_set
        assert set(rec._sent) == outstanding
        assert rec.packets_in_flight == len(outstanding)
        assert rec.bytes_in_flight == sum(sent[pn].size for pn in outstanding if sent[pn].in_flight)
        if lost_set and outstanding:
            assert max(lost_set) < min(outstanding)  # losses always leave from the front
        timer = rec.get_loss_detection_timer()
        assert (timer is None) == (not outstanding)
    event(f"losses: {bool(lost_set)}, spurious: {rec.packets_spuriously_lost > 0}")
    event(f"reordering seen: {rec.reordering_seen}, reo_wnd_mult > 1: {rec.reo_wnd_mult > 1}")
