"""BBR (draft-ietf-ccwg-bbr-04) and delivery-rate estimation, against a simulated bottleneck.

The link model is deliberately tiny and deterministic: a sender (a real
:class:`LossRecovery`, controller and :class:`Pacer`) hands each packet to a
bottleneck that serves one FIFO queue at a fixed rate, drops what overflows
the queue (or, optionally, a seeded random share of everything), optionally
CE-marks ECT packets that find more than a threshold queued (a step-marking
AQM), and returns an ACK for each packet one base RTT after it left the
bottleneck, with the receiver's cumulative ECN counts. Time only
moves from event to event, so many seconds of traffic take a fraction of one.
"""

from __future__ import annotations

import heapq
import os
import random
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seam.config import SeamConfig
from seam.congestion import available, create
from seam.congestion.base import CongestionController, initial_window
from seam.congestion.bbr import (
    BBR,
    ECN_ALPHA_GAIN,
    ECN_FACTOR,
    FULL_BW_COUNT,
    PROBE_RTT_DURATION,
    PROBE_RTT_INTERVAL,
    STARTUP_PACING_GAIN,
    State,
    WindowedMax,
)
from seam.pacing import Pacer, pacing_rate_for
from seam.packet import EcnCounts
from seam.recovery import LossRecovery, RateSample, SentPacket
from seam.testing import LossyNetwork, Pair, transfer

MDS = 1200


@dataclass
class Link:
    """One bottleneck: ``rate`` bytes/s, a drop-tail queue of ``queue`` bytes, ``rtt`` s of propagation."""

    rate: float
    rtt: float
    queue: int
    loss: float = 0.0
    seed: int = 1
    mark_above: float | None = None  # bytes of backlog above which an ECT packet is marked CE
    rng: random.Random = field(init=False)
    free_at: float = 0.0  # when the bottleneck finishes what it has accepted so far
    dropped: int = 0
    marked: int = 0
    ect0: int = 0  # the receiver's counts of packets that got through (FIFO: in sending order)
    ce: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def backlog(self, now: float) -> float:
        """Bytes queued or in service at the bottleneck at ``now``."""
        return max(0.0, self.free_at - now) * self.rate

    def send(self, size: int, now: float, *, ect: bool = False) -> float | None:
        """Accept a packet; returns when its ACK reaches the sender, or None if it was dropped."""
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return None
        backlog = self.backlog(now)
        if backlog > self.queue:
            self.dropped += 1
            return None
        if ect and self.mark_above is not None and backlog > self.mark_above:
            self.marked += 1
            self.ce += 1
        elif ect:
            self.ect0 += 1
        self.free_at = max(self.free_at, now) + size / self.rate
        return self.free_at + self.rtt

    def counts(self) -> EcnCounts | None:
        """What an ACK sent now reports: ACK_ECN counts once anything arrived marked."""
        return EcnCounts(self.ect0, 0, self.ce) if self.ect0 or self.ce else None


class Sim:
    """A bulk sender with unlimited data, behind ``link``; ACKs each packet on its own."""

    def __init__(self, cc: CongestionController, link: Link) -> None:
        self.cc = cc
        self.link = link
        self.recovery = LossRecovery(congestion=cc, max_ack_delay=0.001, initial_rtt=0.1)
        self.pacer = Pacer(max_datagram_size=MDS)
        self.now = 0.0
        self.next_pn = 0
        self.acks: list[tuple[float, int, EcnCounts | None]] = []
        self.delivered: list[tuple[float, int]] = []  # (ack time, bytes)
        self.max_burst = 0  # packets sent at one instant
        self.rtts: list[tuple[float, float]] = []  # (ack time, RTT sample)
        self.trace: list[tuple[float, State | None, int, float]] = []  # (time, state, inflight, backlog)

    def _send(self) -> float | None:
        """Send what the window and the pacer allow; returns the pacer's wake-up time if it held back."""
        rec, pacer = self.recovery, self.pacer
        rec.ecn.begin_flight()
        pacer.set_rate(pacing_rate_for(self.cc, rec.rtt), self.now)
        burst = 0
        while rec.can_send(MDS):
            wake = pacer.next_send_time(self.now)
            if wake is not None:
                return wake
            self._transmit()
            burst += 1
        self.max_burst = max(self.max_burst, burst)
        return None

    def _transmit(self) -> None:
        marked = self.recovery.ecn.marking
        if marked:
            self.recovery.ecn.on_packet_sent()
        packet = SentPacket(self.next_pn, self.now, MDS, ack_eliciting=True, in_flight=True, ecn=marked)
        self.recovery.on_packet_sent(packet, self.now)
        self.pacer.on_packet_sent(self.now, MDS)
        arrival = self.link.send(MDS, self.now, ect=marked)
        if arrival is not None:
            heapq.heappush(self.acks, (arrival, self.next_pn, self.link.counts()))
        self.next_pn += 1

    def run(self, duration: float) -> None:
        end = self.now + duration
        while self.now < end:
            wake = self._send()
            candidates = [end]
            if wake is not None:
                candidates.append(wake)
            if self.acks:
                candidates.append(self.acks[0][0])
            timer = self.recovery.get_loss_detection_timer()
            if timer is not None:
                candidates.append(timer)
            self.now = max(self.now, min(candidates))
            while self.acks and self.acks[0][0] <= self.now:
                _, pn, counts = heapq.heappop(self.acks)
                acked, _ = self.recovery.on_ack_received([(pn, pn)], 0.0, self.now, counts)
                self.delivered.extend((self.now, p.size) for p in acked)
                if acked:
                    self.rtts.append((self.now, self.recovery.rtt.latest_rtt))
            timer = self.recovery.get_loss_detection_timer()
            if timer is not None and timer <= self.now:
                _, probes = self.recovery.on_loss_detection_timeout(self.now)
                for _ in range(probes):
                    self._transmit()
            state = self.cc.state if isinstance(self.cc, BBR) else None
            self.trace.append((self.now, state, self.recovery.bytes_in_flight, self.link.backlog(self.now)))

    def throughput(self, start: float, end: float) -> float:
        """Bytes per second acknowledged between ``start`` and ``end``."""
        return sum(size for t, size in self.delivered if start <= t < end) / (end - start)

    def first_time(self, *states: State) -> float:
        return next(t for t, s, _, _ in self.trace if s in states)

    def entries(self, state: State) -> list[float]:
        """Times at which the controller entered ``state``."""
        return [
            t
            for (t, s, _, _), (_, before, _, _) in zip(self.trace[1:], self.trace, strict=False)
            if s is state and before is not state
        ]


def bbr(seed: int = 1) -> BBR:
    return BBR(max_datagram_size=MDS, rng=random.Random(seed))


def sample(*, rate: float, prior_delivered: int, delivered_total: int, rtt: float = 0.05) -> RateSample:
    return RateSample(
        delivery_rate=rate,
        delivered=delivered_total - prior_delivered,
        interval=rtt,
        prior_delivered=prior_delivered,
        send_time=0.0,
        rtt=rtt,
        is_app_limited=False,
        tx_in_flight=12000,
        lost=0,
        newly_acked=MDS,
        newly_lost=0,
        delivered_total=delivered_total,
        bytes_in_flight=12000,
    )


# --- registration and configuration ----------------------------------------------------------------


def test_bbr_is_registered_and_the_default() -> None:
    assert "bbr" in available()
    cc = create("bbr", max_datagram_size=1350)
    assert isinstance(cc, BBR)
    assert cc.congestion_window == 32 * 1350  # Seam's initial window (docs/protocol.md 7.2)
    assert cc.minimum_window == 4 * 1350  # MinPipeCwnd
    assert SeamConfig(congestion="bbr").congestion == "bbr"
    assert SeamConfig().congestion == "bbr"


def test_initial_pacing_rate_follows_the_initial_window() -> None:
    """Section 5.6.2: StartupPacingGain x InitialCwnd / srtt (RFC 9002's initial RTT before a sample)."""
    cc = bbr()
    rec = LossRecovery(congestion=cc, initial_rtt=0.333)
    assert cc.pacing_rate(rec.rtt) == pytest.approx(STARTUP_PACING_GAIN * initial_window(MDS) / 0.333)
    rec.rtt.update(0.1, 0.0, 0.025)
    assert cc.pacing_rate(rec.rtt) == pytest.approx(STARTUP_PACING_GAIN * initial_window(MDS) / 0.1)


def test_a_zero_rtt_sample_does_not_break_the_initial_pacing_rate() -> None:
    """An ACK in the very instant of the send (found by fuzz/fuzz_frames.py) gives srtt 0."""
    cc = bbr()
    rec = LossRecovery(congestion=cc)
    rec.on_packet_sent(SentPacket(0, 1.0, MDS, ack_eliciting=True, in_flight=True), 1.0)
    rec.on_ack_received([(0, 0)], 0.0, 1.0)
    assert rec.rtt.smoothed_rtt == 0.0
    assert cc.pacing_rate(rec.rtt) == pytest.approx(STARTUP_PACING_GAIN * initial_window(MDS) / 0.001)


# --- delivery-rate estimation ----------------------------------------------------------------------


class SampleRecorder(CongestionController):
    name = "sample-recorder"  # deliberately not registered
    wants_rate_samples = True

    def __init__(self) -> None:
        super().__init__(max_datagram_size=MDS)
        self.congestion_window = 1 << 30
        self.samples: list[RateSample] = []

    def on_packets_acked(self, packets: list[SentPacket], now: float, rtt: object) -> None:
        pass

    def on_packets_lost(self, packets: list[SentPacket], now: float, rtt: object) -> None:
        pass

    def on_rate_sample(self, sample: RateSample, now: float, rtt: object) -> None:
        self.samples.append(sample)


def test_rate_samples_measure_a_paced_flow() -> None:
    """A flow paced at 1 MB/s through a faster path measures 1 MB/s once a round has passed."""
    cc = SampleRecorder()
    rec = LossRecovery(congestion=cc)
    gap = MDS / 1e6
    for pn in range(200):
        rec.on_packet_sent(SentPacket(pn, pn * gap, MDS, ack_eliciting=True, in_flight=True), pn * gap)
        if pn >= 50:  # ACKs for packet n arrive 50 packet-times (60 ms) after it left
            rec.on_ack_received([(pn - 50, pn - 50)], 0.0, pn * gap)
    later = cc.samples[60:]
    assert later and all(s.delivery_rate == pytest.approx(1e6, rel=0.03) for s in later)
    assert all(s.rtt == pytest.approx(50 * gap) for s in later)
    assert all(not s.is_app_limited for s in later)
    assert later[-1].delivered_total == rec.delivered == 150 * MDS


def test_ack_compression_cannot_inflate_the_rate_beyond_the_send_rate() -> None:
    """Section 4.1.1.2.4: ten packets sent over 100 ms and acked at once measure at most the send rate."""
    cc = SampleRecorder()
    rec = LossRecovery(congestion=cc)
    for pn in range(10):
        rec.on_packet_sent(SentPacket(pn, pn * 0.01, MDS, ack_eliciting=True, in_flight=True), pn * 0.01)
    rec.on_ack_received([(0, 9)], 0.0, 0.15)  # one stretch ACK
    (s,) = cc.samples
    assert s.interval == pytest.approx(0.15)  # ack_elapsed 150 ms > send_elapsed 90 ms
    assert s.delivery_rate == pytest.approx(10 * MDS / 0.15)


def test_app_limited_marks_the_next_flight() -> None:
    cc = SampleRecorder()
    rec = LossRecovery(congestion=cc)
    rec.on_packet_sent(SentPacket(0, 0.0, MDS, ack_eliciting=True, in_flight=True), 0.0)
    rec.on_app_limited()  # nothing more to send, window wide open
    assert rec.app_limited == MDS  # delivered (0) + in flight
    rec.on_packet_sent(SentPacket(1, 0.01, MDS, ack_eliciting=True, in_flight=True), 0.01)
    rec.on_ack_received([(0, 0)], 0.0, 0.1)
    rec.on_ack_received([(1, 1)], 0.0, 0.11)
    assert [s.is_app_limited for s in cc.samples] == [False, True]
    assert rec.app_limited == 0  # the bubble was delivered
    rec.on_packet_sent(SentPacket(2, 0.12, MDS, ack_eliciting=True, in_flight=True), 0.12)
    rec.on_ack_received([(2, 2)], 0.0, 0.22)
    assert cc.samples[-1].is_app_limited is False


def test_lost_bytes_are_counted_for_the_rate_sample() -> None:
    cc = SampleRecorder()
    rec = LossRecovery(congestion=cc)
    for pn in range(7):
        rec.on_packet_sent(SentPacket(pn, pn * 0.001, MDS, ack_eliciting=True, in_flight=True), pn * 0.001)
    rec.on_ack_received([(3, 5)], 0.0, 0.1)  # 0, 1 and 2 each have 3 later packets acked: lost
    (s,) = cc.samples
    assert s.newly_lost == 3 * MDS and s.lost == 3 * MDS and rec.lost_bytes == 3 * MDS
    assert s.tx_in_flight == 6 * MDS
    assert s.bytes_in_flight == MDS  # 6 is still out


def test_windowed_max_forgets_old_samples() -> None:
    f = WindowedMax()
    assert f.update(5.0, 0, 2) == 5.0
    assert f.update(3.0, 1, 2) == 5.0
    assert f.update(4.0, 2, 2) == 4.0  # time 0 left the 2-long window
    assert f.expire(4, 2) == 0.0


# --- Startup and Drain -----------------------------------------------------------------------------


def test_full_bandwidth_after_three_rounds_without_25_percent_growth() -> None:
    """Section 5.3.1.2, fed synthetic samples: growth resets the count, a plateau of 3 rounds ends Startup."""
    cc = bbr()
    rec = LossRecovery(congestion=cc)
    rec.rtt.update(0.05, 0.0, 0.025)
    delivered = 0
    rates = [1e5, 2e5, 4e5, 4.5e5, 4.8e5, 4.9e5]  # the last three grow by less than 25 %
    states = []
    for rate in rates:
        prior = delivered
        delivered += 10 * MDS
        cc.on_rate_sample(sample(rate=rate, prior_delivered=prior, delivered_total=delivered), 1.0, rec.rtt)
        states.append((cc.state, cc.full_bw_count))
    assert states[:3] == [(State.STARTUP, 0)] * 3
    assert [count for _, count in states[3:]] == [1, 2, FULL_BW_COUNT]
    assert cc.full_bw_reached
    assert cc.state is not State.STARTUP  # Drain (or already ProbeBW if nothing is in flight)
    assert cc.max_bw == 4.9e5


def test_reaches_the_bottleneck_rate_within_20_round_trips() -> None:
    link = Link(rate=1.25e6, rtt=0.04, queue=50_000)  # 10 Mbit/s, 40 ms, a buffer of one BDP (50 kB)
    sim = Sim(bbr(), link)
    sim.recovery.rtt.update(link.rtt, 0.0, 0.001)  # what a connection's handshake measures
    sim.run(20 * 0.04)
    cc = sim.cc
    assert isinstance(cc, BBR)
    assert cc.full_bw_reached and cc.state in {State.PROBE_BW_DOWN, State.PROBE_BW_CRUISE}
    assert cc.max_bw == pytest.approx(link.rate, rel=0.15)
    assert sim.throughput(15 * 0.04, 20 * 0.04) >= 0.85 * link.rate
    assert sim.first_time(State.DRAIN) < 12 * 0.04  # Startup took about log2(BDP / IW) + 3 rounds
    assert link.dropped <= 0.03 * sim.next_pn  # Startup's overshoot of one BDP, once
    assert sim.max_burst <= 10


def test_drain_empties_the_startup_queue() -> None:
    link = Link(rate=1.25e6, rtt=0.04, queue=400_000)  # a deep buffer: Startup's excess all queues
    sim = Sim(bbr(), link)
    sim.run(1.5)
    bdp = link.rate * link.rtt
    drain = sim.first_time(State.DRAIN)
    probe_bw = sim.first_time(State.PROBE_BW_DOWN, State.PROBE_BW_CRUISE)
    peak_queue = max(backlog for t, _, _, backlog in sim.trace if t <= drain)
    assert peak_queue > 0.5 * bdp  # Startup did build a queue ...
    assert probe_bw - drain < 3 * link.rtt  # ... Drain took a round trip or two ...
    inflight_at_exit = next(inflight for t, _, inflight, _ in sim.trace if t >= probe_bw)
    assert inflight_at_exit <= 1.15 * bdp
    settled = [backlog for t, _, _, backlog in sim.trace if probe_bw + 2 * link.rtt <= t <= probe_bw + 0.5]
    assert max(settled) < 0.3 * bdp  # ... and the queue stays small afterwards
    assert link.dropped == 0


# --- ProbeRTT and min_rtt --------------------------------------------------------------------------


def test_probe_rtt_when_min_rtt_is_not_refreshed() -> None:
    """No RTT sample comes near the minimum after 1 s (the path got 5 ms longer): ProbeRTT.

    Section 5.3.4: ProbeRTT comes when no sample has matched the lowest for
    PROBE_RTT_INTERVAL (5 s); the window is then half the BDP for at least
    200 ms and one round, after which ProbeBW resumes. BBR.min_rtt itself is a
    10 s windowed minimum, so it takes the longer path's value only 10 s after
    the last lower sample. ProbeRTT's own sample (the longer path's RTT) becomes
    the minimum that later samples match, and there is no queue to drain, so no
    second ProbeRTT follows 5 s later (MIN_RTT_CONFIRM_SHARE).
    """
    link = Link(rate=5e5, rtt=0.04, queue=40_000)  # 4 Mbit/s, a BDP of 20 kB
    sim = Sim(bbr(), link)
    sim.run(1.0)
    cc = sim.cc
    assert isinstance(cc, BBR)
    old_min = link.rtt + MDS / link.rate  # propagation plus one serialisation
    assert cc.min_rtt == pytest.approx(old_min, rel=0.01)
    link.rtt = 0.045
    sim.run(8.9)  # until 9.9 s
    assert cc.min_rtt == pytest.approx(old_min, rel=0.01)  # still within the 10 s filter
    sim.run(2.1)  # until 12 s
    assert cc.min_rtt == pytest.approx(0.045 + MDS / link.rate, rel=0.01)
    (first,) = sim.entries(State.PROBE_RTT)
    assert PROBE_RTT_INTERVAL < first <= 1.0 + PROBE_RTT_INTERVAL + 0.1
    leave = next(t for t, s, _, _ in sim.trace if t > first and s is not State.PROBE_RTT)
    assert leave - first >= PROBE_RTT_DURATION
    bdp = link.rate * link.rtt
    held = [inflight for t, _, inflight, _ in sim.trace if first + 0.1 < t < leave]  # once drained
    assert held and max(held) <= max(0.5 * bdp, 4 * MDS) + MDS
    after = [s for t, s, _, _ in sim.trace if leave <= t < leave + 1.0]
    assert after[0] is State.PROBE_BW_CRUISE and State.STARTUP not in after
    assert sim.throughput(1.0, 12.0) >= 0.9 * link.rate  # ProbeRTT costs about 2 %


def test_no_probe_rtt_while_samples_keep_matching_the_minimum() -> None:
    """A flow that keeps no queue confirms min_rtt with its own samples: no ProbeRTT in 20 s.

    The draft's ProbeRTT would halve the window for 200 ms and a round every
    5 s (about 2 % of this link) to learn a minimum the samples already show.
    """
    link = Link(rate=5e5, rtt=0.04, queue=40_000)
    sim = Sim(bbr(), link)
    sim.run(20.0)
    assert sim.entries(State.PROBE_RTT) == []
    assert sim.throughput(2.0, 20.0) >= 0.95 * link.rate


def test_probe_rtt_when_a_standing_queue_hides_the_minimum() -> None:
    """Samples 3 ms over the minimum (over QUEUE_DELAY_FLOOR) do not confirm it: ProbeRTT."""
    link = Link(rate=5e5, rtt=0.04, queue=40_000)
    sim = Sim(bbr(), link)
    sim.run(1.0)
    link.rtt = 0.043  # to BBR, a standing queue of 3 ms and a longer path look the same
    sim.run(6.0)
    (entered,) = sim.entries(State.PROBE_RTT)
    assert PROBE_RTT_INTERVAL < entered <= 1.0 + PROBE_RTT_INTERVAL + 0.1


# --- loss ------------------------------------------------------------------------------------------


def test_random_loss_keeps_most_of_the_bottleneck_rate_unlike_reno() -> None:
    """1 % random loss (below LossThresh) on a 10 Mbit/s, 100 ms path with a BDP of ~104 packets."""

    def run(name: str) -> float:
        link = Link(rate=1.25e6, rtt=0.1, queue=125_000, loss=0.01, seed=7)
        cc = bbr() if name == "bbr" else create(name, max_datagram_size=MDS)
        sim = Sim(cc, link)
        sim.run(12.0)
        return sim.throughput(2.0, 12.0) / link.rate

    bbr_share, reno_share = run("bbr"), run("newreno")
    assert bbr_share >= 0.75
    assert reno_share <= 0.5
    assert bbr_share > 1.5 * reno_share


@dataclass
class BurstyLink(Link):
    """Gilbert-Elliott loss before the bottleneck: bursts of mean 1 / ``p_bad_good`` packets."""

    p_good_bad: float = 0.0128
    p_bad_good: float = 0.2
    loss_bad: float = 0.5
    bad: bool = False

    def send(self, size: int, now: float, *, ect: bool = False) -> float | None:
        rng = self.rng
        self.bad = rng.random() >= self.p_bad_good if self.bad else rng.random() < self.p_good_bad
        if self.bad and rng.random() < self.loss_bad:
            self.dropped += 1
            return None
        return super().send(size, now, ect=ect)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bursty_random_loss_without_a_queue_is_not_congestion(seed: int) -> None:
    """3 % bursty loss (profile d: 20 Mbit/s, 100 ms, a buffer of one BDP) costs no more than the loss.

    Losses declared while the queue is under half its recent peak are counted but
    bound nothing (docs/protocol.md 7.3): by the draft's rule they ended Startup
    early and kept inflight_longterm at ~0.65 BDP, for 0.52-0.71 of the link.
    """
    link = BurstyLink(rate=2.5e6, rtt=0.1, queue=250_000, seed=seed)
    cc = bbr(seed)
    sim = Sim(cc, link)
    sim.run(12.0)
    assert 0.02 < link.dropped / sim.next_pn < 0.045  # the random loss, and little overflow besides
    assert cc.inflight_longterm >= link.rate * link.rtt  # at least a BDP
    assert sim.throughput(2.0, 12.0) >= 0.85 * link.rate


def test_overflow_of_a_half_bdp_buffer_still_bounds_inflight() -> None:
    """Without random loss every loss is an overflow at the queue's peak delay: the bounds still apply."""
    link = Link(rate=1.25e6, rtt=0.05, queue=31_000)
    cc = bbr()
    sim = Sim(cc, link)
    sim.run(10.0)
    assert cc.max_queue_delay > 0.01
    assert cc.inflight_longterm < float("inf")
    assert link.dropped / sim.next_pn < 0.02
    assert sim.throughput(2.0, 10.0) >= 0.9 * link.rate


def test_shallow_buffer_loss_bounds_inflight_and_keeps_loss_low() -> None:
    """A buffer of a fifth of the BDP: probing losses set inflight_longterm, so loss stays moderate."""
    link = Link(rate=1.25e6, rtt=0.05, queue=12_000)
    sim = Sim(bbr(), link)
    sim.run(8.0)
    cc = sim.cc
    assert isinstance(cc, BBR)
    assert cc.inflight_longterm < float("inf")  # loss during probing capped the volume
    sent = sim.next_pn
    assert link.dropped / sent < 0.03
    assert sim.throughput(2.0, 8.0) >= 0.85 * link.rate


# --- ECN (Linux BBRv3's response; docs/protocol.md 7.3 and 7.6) -----------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(share * len(ordered)), len(ordered) - 1)]


def test_ce_marking_keeps_the_queue_and_rtt_low_without_loss() -> None:
    """A deep buffer (8 BDPs) whose AQM marks CE above 10 kB: BBR holds the queue near the mark.

    Without marking BBR's own model still bounds the queue, but each bandwidth
    probe and its 2 x BDP window let it reach most of a BDP; with marking the
    CE share of a probe's round bounds inflight_longterm and ecn_alpha trims
    inflight_shortterm, so the queue and the RTT stay low, at the same rate and
    with no loss.
    """

    def run(mark_above: float | None) -> tuple[Sim, Link]:
        link = Link(rate=1.25e6, rtt=0.04, queue=400_000, mark_above=mark_above)
        sim = Sim(bbr(), link)
        sim.run(10.0)
        return sim, link

    (plain, plain_link), (marked, marked_link) = run(None), run(10_000)
    assert plain_link.dropped == marked_link.dropped == 0
    assert plain_link.marked == 0 and marked_link.marked > 0
    # Every mark reaches the sender, but for those still in flight when the run stops.
    assert 0.9 * marked_link.marked <= marked.recovery.ecn.ce_marks <= marked_link.marked
    cc = marked.cc
    assert isinstance(cc, BBR) and cc.ecn_eligible and cc.inflight_longterm < float("inf")
    for sim, link in ((plain, plain_link), (marked, marked_link)):
        assert sim.throughput(2.0, 10.0) >= 0.95 * link.rate
    queue = {
        name: percentile([b for t, _, _, b in sim.trace if t >= 2.0], 0.95)
        for name, sim in (("plain", plain), ("marked", marked))
    }
    assert queue["marked"] <= 10_000 + 2 * MDS  # about the marking threshold ...
    assert queue["marked"] < 0.4 * queue["plain"]  # ... where BBR alone queues most of a BDP (50 kB)
    rtt_plain = percentile([r for t, r in plain.rtts if t >= 2.0], 0.95)
    rtt_marked = percentile([r for t, r in marked.rtts if t >= 2.0], 0.95)
    assert rtt_marked < rtt_plain - 0.015  # 95th percentile RTT: ~48 ms against ~70 ms


def test_without_marks_ecn_changes_nothing() -> None:
    """ECN negotiated but never a CE mark: exactly today's BBR, packet for packet, even with loss."""

    def run(ecn: bool) -> Sim:
        link = Link(rate=1.25e6, rtt=0.05, queue=30_000, loss=0.01, seed=3)
        sim = Sim(bbr(), link)
        sim.recovery = LossRecovery(congestion=sim.cc, max_ack_delay=0.001, initial_rtt=0.1, ecn=ecn)
        sim.run(6.0)
        return sim

    with_ecn, without = run(True), run(False)
    assert with_ecn.recovery.ecn.state.value == "capable" and without.recovery.ecn.state.value == "failed"
    assert with_ecn.trace == without.trace and with_ecn.delivered == without.delivered
    assert with_ecn.link.dropped > 0  # the comparison covered loss too


def test_ecn_alpha_follows_the_ce_share_per_round_and_cuts_inflight_shortterm() -> None:
    """Linux bbr_update_ecn_alpha / bbr_ecn_lower_bounds, fed synthetic samples in ProbeBW Cruise."""
    cc = bbr()
    rec = LossRecovery(congestion=cc)
    rec.rtt.update(0.05, 0.0, 0.025)
    delivered = 0

    def round_(ce_share: float) -> None:
        nonlocal delivered
        prior, delivered = delivered, delivered + 10 * MDS
        base = sample(rate=1e6, prior_delivered=prior, delivered_total=delivered)
        ce = int(ce_share * 10 * MDS)
        cc.on_rate_sample(replace(base, newly_ce=ce, ce_delivered=ce), 1.0, rec.rtt)

    for _ in range(4):
        round_(0.0)
    cc.full_bw_reached = True
    cc.state = State.PROBE_BW_CRUISE
    assert cc.ecn_alpha == 1.0 and not cc.ecn_eligible  # no mark yet: nothing measured
    cc.congestion_window = 60 * MDS
    round_(0.2)  # the first CE: ecn_alpha is still 1, so the cut is a full third
    assert cc.ecn_eligible
    assert cc.inflight_shortterm == pytest.approx(60 * MDS * (1 - ECN_FACTOR * cc.ecn_alpha), rel=0.02)
    alpha = cc.ecn_alpha
    round_(0.2)
    assert cc.ecn_alpha == pytest.approx((1 - ECN_ALPHA_GAIN) * alpha + ECN_ALPHA_GAIN * 0.2)
    shortterm = cc.inflight_shortterm
    round_(0.0)  # a clean round: no further cut
    assert cc.inflight_shortterm == shortterm


# --- end to end, through the sans-IO connection ---------------------------------------------------


@settings(
    max_examples=int(os.environ.get("SEAMLESS_HYPOTHESIS_EXAMPLES", "15")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0, 0.2),
    reorder=st.floats(0, 0.2),
    duplicate=st.floats(0, 0.1),
    sizes=st.lists(st.integers(0, 150_000), min_size=1, max_size=3),
)
def test_bbr_transfer_over_a_lossy_network_delivers_every_byte_once(
    seed: int, loss: float, reorder: float, duplicate: float, sizes: list[int]
) -> None:
    network = LossyNetwork(seed=seed, loss=loss, reorder=reorder, duplicate=duplicate, jitter=0.004)
    pair = Pair(network=network, config=SeamConfig(congestion="bbr", handshake_timeout=120))
    pair.handshake()
    rng = network.rng
    payloads = {i: rng.randbytes(size) for i, size in enumerate(sizes)}
    got = transfer(pair, payloads, max_time=3600)
    assert got == payloads
    assert isinstance(pair.client._recovery.congestion, BBR)


def test_bbr_bulk_transfer_is_exact_and_paced() -> None:
    # A 5 MB/s bottleneck, so that Startup ends on a bandwidth plateau. (On an unlimited link it
    # used to end on losses, nearly all spurious: 2 ms of jitter reordered packets past RFC 9002's
    # packet threshold. RACK sees the reordering and declares none of them lost.)
    network = LossyNetwork(seed=3, loss=0.02, jitter=0.002, rate=5e6)
    pair = Pair(network=network, config=SeamConfig(congestion="bbr"))
    pair.handshake()
    data = random.Random(5).randbytes(2 * 1024 * 1024)
    assert transfer(pair, {0: data}) == {0: data}
    cc = pair.client._recovery.congestion
    assert isinstance(cc, BBR) and cc.full_bw_reached and cc.max_bw > 0


def test_random_loss_under_loss_thresh_does_not_ratchet_the_short_term_rate_down() -> None:
    """A round that lost under LossThresh leaves bw_shortterm alone (docs/protocol.md 7.3).

    Per the draft every round with any loss sets bw_shortterm to what the round
    delivered, which pacing 1 % under bw keeps just below it: with 0.5 % random
    loss and no jitter the short-term rate sank round after round while cruising.
    """
    link = Link(rate=1.25e6, rtt=0.1, queue=125_000, loss=0.005, seed=3)
    cc = bbr()
    sim = Sim(cc, link)
    ratios = []
    for _ in range(120):  # 12 s in 100 ms steps
        sim.run(0.1)
        if cc.state is State.PROBE_BW_CRUISE and cc.bw_shortterm != float("inf"):
            ratios.append(cc.bw_shortterm / cc.max_bw)
    assert all(ratio >= 0.9 for ratio in ratios)  # if a round did set the bound, it stayed high
    assert sim.throughput(2.0, 12.0) / link.rate >= 0.85


def test_bbr_over_a_marking_bottleneck_keeps_rtt_low_with_zero_loss() -> None:
    """Through the whole connection: CE marks flow back in ACK_ECN and BBR keeps the queue short."""

    def run(mark_above: int | None) -> tuple[float, float, int, int]:
        """(95th percentile RTT once Startup is over, transfer time, CE marks reported, CE marks made)."""
        network = LossyNetwork(seed=4, delay=0.02, rate=1e6, queue=100_000, ecn_mark_above=mark_above)
        pair = Pair(network=network, config=SeamConfig(congestion="bbr"))
        pair.handshake()
        start = pair.now
        rtts: list[float] = []
        step = pair.step

        def recording_step() -> bool:
            if pair.now >= start + 1.0:
                rtts.append(pair.client._recovery.rtt.latest_rtt)
            return step()

        pair.step = recording_step  # type: ignore[method-assign]
        data = random.Random(4).randbytes(4_000_000)  # about 4 s: Startup and one bandwidth probe
        assert transfer(pair, {0: data}) == {0: data}
        transfer_time = pair.now - start
        assert pair.run(lambda: not pair._queue, max_time=1.0)  # the last ACKs, and their CE counts, arrive
        stats = pair.client.stats()
        assert stats.ecn_state == "capable" and stats.packets_lost == 0 and network.dropped == 0
        return percentile(rtts, 0.95), transfer_time, stats.ecn_ce_marks, network.ce_marked

    rtt_plain, time_plain, _, _ = run(None)
    rtt_marked, time_marked, ce_marks, ce_marked = run(10_000)
    assert ce_marks == ce_marked > 0
    assert rtt_marked < rtt_plain - 0.01  # 40 ms of propagation: about 55 ms against 73 ms
    # 4.39 s against 4.16 s. With the 10-packet initial window it was about 4.37 against 4.19:
    # the larger one speeds the plain run's Startup, which the marks end early.
    assert time_marked < 1.06 * time_plain


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.booleans()), min_size=1, max_size=60), st.data())
def test_losses_without_a_queue_leave_later_samples_loss_free(
    batches: list[tuple[int, bool]], data: st.DataObject
) -> None:
    """_queue_lost_since counts exactly the queue losses declared after the stamp.

    Each batch loses ``count`` packets, excused (no queue) or not; a sample's
    stamp is LossRecovery's lost counter when its packet left, i.e. any total
    reached between batches.
    """
    cc = bbr()
    cc.min_rtt = 0.1
    totals = [0]  # the lost counter after each batch
    queue_lost = [0]  # of which queue losses
    rtt = LossRecovery(congestion=cc, max_ack_delay=0.001, initial_rtt=0.1).rtt
    pn = 0
    for count, excused in batches:
        cc.max_queue_delay = 0.05
        rtt.latest_rtt = 0.1 if excused else 0.2  # no queue / a full one
        packets = [SentPacket(pn + i, 0.0, MDS, ack_eliciting=True, in_flight=True) for i in range(count)]
        pn += count + 1
        cc.on_packets_lost(packets, 1.0, rtt)
        totals.append(totals[-1] + count * MDS)
        queue_lost.append(queue_lost[-1] + (0 if excused else count * MDS))
    index = data.draw(st.integers(0, len(totals) - 1))
    assert cc._queue_lost_since(totals[index]) == queue_lost[-1] - queue_lost[index]


def test_the_window_an_outage_collapsed_comes_back_even_after_losses_without_a_queue() -> None:
    """BBRRestoreCwnd after an outage does not depend on earlier losses having been excused."""
    cc = bbr()
    rec = LossRecovery(congestion=cc, max_ack_delay=0.001, initial_rtt=0.1)
    prior, delivered = 0, 0
    for _ in range(10):  # a model: 1 MB/s at 50 ms
        delivered += 50_000
        cc.on_rate_sample(
            replace(sample(rate=1e6, prior_delivered=prior, delivered_total=delivered), lost=0), 1.0, rec.rtt
        )
        prior = delivered
    cc.max_queue_delay = 0.05
    rec.rtt.latest_rtt = cc.min_rtt  # no queue: a random loss
    cc.on_packets_lost([SentPacket(1, 0.9, MDS, ack_eliciting=True, in_flight=True)], 1.0, rec.rtt)
    before = cc.congestion_window
    cc.on_persistent_congestion(2.0)
    assert cc.congestion_window == cc.min_pipe_cwnd
    cc.on_packets_lost([SentPacket(9, 2.1, MDS, ack_eliciting=True, in_flight=True)], 2.4, rec.rtt)
    after = replace(sample(rate=1e6, prior_delivered=prior, delivered_total=delivered + MDS), lost=MDS)
    cc.on_rate_sample(after, 2.5, rec.rtt)  # sent after the outage (one random loss since), delivered
    assert cc.congestion_window >= before
