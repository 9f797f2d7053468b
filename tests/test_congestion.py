"""Congestion controllers alone: the name registry, NewReno (RFC 9002 section 7) and CUBIC (RFC 9438).

Windows are in bytes; an "RTT round" below acknowledges one full window of
packets sent after the last reduction, at an explicit ``now``.
"""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from seam.config import SeamConfig
from seam.congestion import available, base, create, register
from seam.congestion.base import CongestionController, initial_window
from seam.congestion.cubic import ALPHA_CUBIC, BETA_CUBIC, C_CUBIC, Cubic
from seam.congestion.newreno import NewReno
from seam.recovery import LossRecovery, RttEstimator, SentPacket

MDS = 1200


def pkt(time_sent: float, pn: int = 0, size: int = MDS) -> SentPacket:
    return SentPacket(pn, time_sent, size, ack_eliciting=True, in_flight=True)


def rtt_of(seconds: float) -> RttEstimator:
    rtt = RttEstimator()
    rtt.update(seconds, 0.0, 0.025)
    return rtt


def ack_round(cc: CongestionController, now: float, rtt: RttEstimator) -> None:
    """Acknowledge one congestion window of full-sized packets, sent half an RTT ago."""
    count = cc.congestion_window // MDS
    cc.on_packets_acked([pkt(now - rtt.smoothed_rtt / 2, pn) for pn in range(count)], now, rtt)


def segments(cc: CongestionController) -> float:
    return cc.congestion_window / MDS


# --- The plug-in interface ------------------------------------------------------------------------


def test_builtin_controllers_are_selectable_by_name() -> None:
    assert {"newreno", "cubic"} <= set(available())
    assert available() == sorted(available())
    cubic = create("cubic", max_datagram_size=1350)
    assert isinstance(cubic, Cubic)
    assert cubic.max_datagram_size == 1350
    assert isinstance(create("newreno"), NewReno)


def test_phase_names_where_each_controller_is() -> None:
    """ConnectionStats.congestion_phase: slow start or avoidance, or BBR's own state."""
    reno = create("newreno")
    assert reno.phase == "slow_start"
    reno.ssthresh = reno.congestion_window
    assert reno.phase == "avoidance"
    assert create("bbr").phase == "startup"


def test_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown congestion controller 'bbr9'.*cubic.*newreno"):
        create("bbr9")
    with pytest.raises(ValidationError, match="unknown congestion controller"):
        SeamConfig(congestion="bbr9")


def test_a_registered_controller_becomes_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # keep the global registry clean

    @register
    class Fixed(CongestionController):
        name = "fixed-test"

        def on_packets_acked(self, packets: list[SentPacket], now: float, rtt: RttEstimator) -> None:
            pass

        def on_packets_lost(self, packets: list[SentPacket], now: float, rtt: RttEstimator) -> None:
            pass

    assert "fixed-test" in available()
    assert isinstance(create("fixed-test"), Fixed)
    assert SeamConfig(congestion="fixed-test").congestion == "fixed-test"


def test_the_interface_is_abstract_and_has_rfc_defaults() -> None:
    with pytest.raises(TypeError):
        CongestionController()  # type: ignore[abstract]

    class AcksOnly(CongestionController):
        name = "acks-only-test"

        def on_packets_acked(self, packets: list[SentPacket], now: float, rtt: RttEstimator) -> None:
            pass

    with pytest.raises(TypeError, match="on_packets_lost"):  # abc says it interpreted, we compiled
        AcksOnly()  # type: ignore[abstract]
    # RFC 9002 7.2's formula with 32 packets, not 10 (docs/protocol.md 7.2):
    # min(32 * mds, max(47104, 2 * mds)); minimum window 2 * mds.
    assert initial_window(1200) == 38400
    assert initial_window(1500) == 47104
    assert initial_window(30000) == 60000
    for cc in (create("newreno", max_datagram_size=1500), create("cubic", max_datagram_size=1500)):
        assert cc.congestion_window == 47104
        assert cc.minimum_window == 3000
        assert cc.ssthresh is None
        assert cc.pacing_rate(RttEstimator()) is None


# --- Behaviour shared by both ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["newreno", "cubic"])
def test_slow_start_doubles_the_window_every_round_trip(name: str) -> None:
    cc = create(name, max_datagram_size=MDS)
    rtt = rtt_of(0.05)
    windows = []
    for r in range(1, 6):
        ack_round(cc, r * 0.05, rtt)
        windows.append(cc.congestion_window)
    assert windows == [initial_window(MDS) * 2**r for r in range(1, 6)]


@pytest.mark.parametrize("name", ["newreno", "cubic"])
def test_one_reduction_per_recovery_period(name: str) -> None:
    cc = create(name, max_datagram_size=MDS)
    rtt = rtt_of(0.1)
    cc.congestion_window = 100 * MDS
    cc.on_packets_lost([pkt(0.9)], 1.0, rtt)
    reduced = cc.congestion_window
    assert reduced < 100 * MDS
    # More losses of packets sent before the recovery period began: no further cut.
    cc.on_packets_lost([pkt(0.95, 1), pkt(1.0, 2)], 1.05, rtt)
    assert cc.congestion_window == reduced
    # Acks of such packets do not grow the window either.
    cc.on_packets_acked([pkt(0.99, pn) for pn in range(50)], 1.1, rtt)
    assert cc.congestion_window == reduced
    # A loss of a packet sent during recovery starts a new period and a new cut.
    cc.on_packets_lost([pkt(1.01, 3)], 1.2, rtt)
    assert cc.congestion_window < reduced
    assert cc.ssthresh == cc.congestion_window


@pytest.mark.parametrize("name", ["newreno", "cubic"])
def test_window_never_drops_below_the_minimum(name: str) -> None:
    cc = create(name, max_datagram_size=MDS)
    rtt = rtt_of(0.1)
    for i in range(20):
        cc.on_packets_lost([pkt(i + 0.5)], i + 1.0, rtt)
        assert cc.congestion_window >= cc.minimum_window == 2 * MDS
    assert cc.congestion_window == 2 * MDS


@pytest.mark.parametrize("name", ["newreno", "cubic"])
def test_an_empty_loss_report_changes_nothing(name: str) -> None:
    cc = create(name, max_datagram_size=MDS)
    cc.on_packets_lost([], 1.0, rtt_of(0.1))
    assert (cc.congestion_window, cc.ssthresh) == (initial_window(MDS), None)


@pytest.mark.parametrize("name", ["newreno", "cubic"])
def test_persistent_congestion_collapses_to_the_minimum_window(name: str) -> None:
    cc = create(name, max_datagram_size=MDS)
    rec = LossRecovery(congestion=cc, max_ack_delay=0.025)
    rec.on_packet_sent(pkt(0.0, 0), 0.0)
    rec.on_ack_received([(0, 0)], 0.0, 0.1)  # srtt 0.1, rttvar 0.05: PTO 0.325, 3 x PTO = 0.975 s
    for pn in range(1, 11):  # ten ack-eliciting packets spanning 1.35 s, all lost
        rec.on_packet_sent(pkt(1.0 + 0.15 * (pn - 1), pn), 1.0 + 0.15 * (pn - 1))
    rec.on_packet_sent(pkt(2.5, 11), 2.5)
    _, lost = rec.on_ack_received([(11, 11)], 0.0, 2.6)
    assert [p.packet_number for p in lost] == list(range(1, 11))
    assert cc.congestion_window == cc.minimum_window


# --- NewReno --------------------------------------------------------------------------------------


def test_newreno_halves_on_loss() -> None:
    cc = NewReno(max_datagram_size=MDS)
    cc.congestion_window = 24000
    cc.on_packets_lost([pkt(0.5)], 1.0, rtt_of(0.1))
    assert cc.congestion_window == cc.ssthresh == 12000


def test_newreno_congestion_avoidance_adds_one_datagram_per_round_trip() -> None:
    cc = NewReno(max_datagram_size=MDS)
    cc.congestion_window = 12000
    rtt = rtt_of(0.1)
    cc.on_packets_lost([pkt(0.5)], 1.0, rtt)  # 12000 -> 6000, now in congestion avoidance
    windows = []
    for r in range(1, 8):
        ack_round(cc, 1.0 + r * 0.1, rtt)
        windows.append(cc.congestion_window)
    assert windows == [6000 + r * MDS for r in range(1, 8)]
    # Less than a full window acknowledged: no growth yet.
    cc.on_packets_acked([pkt(2.0)], 2.05, rtt)
    assert cc.congestion_window == windows[-1]


# --- CUBIC (RFC 9438) ------------------------------------------------------------------------------


def test_cubic_constants_are_the_rfc_ones() -> None:
    assert C_CUBIC == 0.4
    assert BETA_CUBIC == 0.7
    assert ALPHA_CUBIC == pytest.approx(3 * (1 - 0.7) / (1 + 0.7))


def test_cubic_reduction_and_k_after_a_first_loss() -> None:
    cc = Cubic(max_datagram_size=MDS)
    cc.congestion_window = 100 * MDS
    cc.on_packets_lost([pkt(0.5)], 1.0, rtt_of(0.1))
    assert cc.congestion_window == cc.ssthresh == int(0.7 * 100 * MDS)
    assert cc.w_max == 100
    assert cc.k == pytest.approx(math.cbrt(100 * (1 - BETA_CUBIC) / C_CUBIC))  # about 4.217 s
    # The curve starts at the reduced window and plateaus at W_max after K seconds.
    assert cc.w_cubic(0) == pytest.approx(70)
    assert cc.w_cubic(cc.k) == pytest.approx(100)
    for t in (0.0, 1.0, 2.5, 4.0, 6.0, 9.0):
        assert cc.w_cubic(t) == pytest.approx(0.4 * (t - cc.k) ** 3 + 100)


def test_cubic_fast_convergence_lowers_w_max() -> None:
    cc = Cubic(max_datagram_size=MDS)
    rtt = rtt_of(0.1)
    cc.congestion_window = 100 * MDS
    cc.on_packets_lost([pkt(0.5)], 1.0, rtt)
    cc.congestion_window = 90 * MDS  # lost again before regaining the old W_max
    cc.on_packets_lost([pkt(1.5)], 2.0, rtt)
    assert cc.w_max == pytest.approx(90 * (1 + BETA_CUBIC) / 2)  # 76.5 segments
    assert segments(cc) == pytest.approx(63, abs=1 / MDS)  # int() of the byte count
    # RFC 9438 eq. 2 with cwnd_epoch = the reduced window.
    assert cc.k == pytest.approx(math.cbrt((76.5 - 63) / C_CUBIC))
    # Beyond the old W_max there is no fast convergence: W_max is the window at the loss.
    cc.congestion_window = 80 * MDS
    cc.on_packets_lost([pkt(2.5)], 3.0, rtt)
    assert cc.w_max == pytest.approx(80)


def test_cubic_window_follows_the_cubic_curve() -> None:
    """In the cubic region the window reaches W_cubic(t + RTT) after each round of ACKs (RFC 9438 4.2)."""
    cc = Cubic(max_datagram_size=MDS)
    rtt = rtt_of(0.1)
    cc.congestion_window = 100 * MDS
    cc.on_packets_lost([pkt(0.5)], 1.0, rtt)
    checked = 0
    for r in range(1, 56):
        t = r * 0.1
        ack_round(cc, 1.0 + t, rtt)
        if r in (5, 10, 20, 30, 42, 50, 55):  # concave, plateau near K = 4.2 s, convex
            assert cc.w_cubic(t) > cc._w_est  # still the cubic, not the Reno-friendly, region
            assert segments(cc) == pytest.approx(cc.w_cubic(t + 0.1), rel=0.02)
            checked += 1
    assert checked == 7


def test_cubic_growth_is_capped_at_half_a_window_per_round_trip() -> None:
    """RFC 9438 4.2: the target is at most 1.5 * cwnd, however far the curve has run ahead."""
    cc = Cubic(max_datagram_size=MDS)
    rtt = rtt_of(0.1)
    cc.congestion_window = 100 * MDS
    cc.on_packets_lost([pkt(0.5)], 1.0, rtt)
    before = cc.congestion_window
    ack_round(cc, 1.0 + cc.k + 30, rtt)  # W_cubic is now in the thousands of segments
    assert cc.w_cubic(cc.k + 30) > 10 * before / MDS
    assert before < cc.congestion_window <= 1.5 * before + MDS


def test_cubic_reno_friendly_region_grows_like_reno() -> None:
    """On a short RTT the cubic curve is slower than Reno would be, so W_est governs (RFC 9438 4.3)."""
    cc = Cubic(max_datagram_size=MDS)
    rtt = rtt_of(0.01)
    cc.congestion_window = 20 * MDS
    cc.on_packets_lost([pkt(0.5)], 1.0, rtt)
    previous = segments(cc)
    for r in range(1, 11):  # W_est stays below cwnd_prior = 20 segments throughout
        t = r * 0.01
        ack_round(cc, 1.0 + t, rtt)
        assert segments(cc) > cc.w_cubic(t)
        assert segments(cc) - previous == pytest.approx(ALPHA_CUBIC, abs=0.05)
        previous = segments(cc)


def test_cubic_reno_friendly_alpha_becomes_one_once_past_the_previous_window() -> None:
    """RFC 9438 4.3: once W_est reaches cwnd_prior, alpha_cubic is 1, Reno's own increase."""
    cc = Cubic(max_datagram_size=MDS)
    rtt = rtt_of(0.01)
    cc.congestion_window = 20 * MDS
    cc.on_packets_lost([pkt(0.5)], 1.0, rtt)
    r = 0
    while segments(cc) < 21:
        r += 1
        ack_round(cc, 1.0 + r * 0.01, rtt)
    for _ in range(5):
        r += 1
        previous = segments(cc)
        ack_round(cc, 1.0 + r * 0.01, rtt)
        assert segments(cc) > cc.w_cubic(r * 0.01)
        assert segments(cc) - previous == pytest.approx(1.0, abs=0.05)
