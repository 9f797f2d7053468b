"""BBR version 3 (draft-ietf-ccwg-bbr-04), in bytes, bytes per second and seconds.

Theory of operation
-------------------
BBR keeps an explicit model of the path instead of reacting to loss alone:

* ``max_bw``: a windowed maximum of delivery-rate samples over the current and
  the previous ProbeBW cycle (section 5.5.3), and ``min_rtt``: a 10 s windowed
  minimum of RTT samples (section 5.5.7). Their product is the BDP.
* a long-term volume bound ``inflight_longterm``, set when probing for
  bandwidth pushed the per-round loss rate over 2 % (section 5.5.10.2), and
  short-term bounds ``bw_shortterm`` / ``inflight_shortterm``, cut by at most
  30 % per round trip with loss while not probing (section 5.5.10.3).

From the model it derives its three outputs on every ACK (section 5.6): the
pacing rate (``pacing_gain`` x bw, 1 % under it), the congestion window
(``cwnd_gain`` x BDP plus the measured ACK aggregation, bounded by the
inflight bounds), and a send quantum (used only for the offload budget here).

The state machine (section 5.1):

* ``STARTUP``: pacing gain 2.77, cwnd gain 2, doubling the rate each round,
  until three non-application-limited rounds grow the bandwidth by less than
  25 % or a round loses more than 2 % in at least 6 separate places;
* ``DRAIN``: pacing gain 0.35 until bytes in flight fit the BDP;
* ``PROBE_BW_DOWN`` (0.9) -> ``CRUISE`` (1.0) -> ``REFILL`` (1.0, one round) ->
  ``UP`` (1.25, cwnd gain 2.25) -> ``DOWN``...; the next probe starts after a
  random 2-3 s or after min(BDP in packets, 63) rounds, whichever is first;
* ``PROBE_RTT``: when no RTT sample has matched the lowest for 5 s, the window
  is cut to half the BDP for at least 200 ms and one round, then ProbeBW (or
  Startup, if the pipe was never full) resumes. A sample within 2 ms (and an
  eighth) of the lowest counts as matching it (Seam's addition).

Delivery-rate samples come from :class:`seam.recovery.LossRecovery`
(``wants_rate_samples``); the per-ACK work is :meth:`BBR.on_rate_sample` and
the per-loss work :meth:`BBR.on_packets_lost`, called before it for the same ACK.

ECN (docs/protocol.md 7.6). The draft leaves BBR's response to ECN open
(section 3.7 of -04); this follows Linux's BBRv3 (tcp_bbr.c, google/bbr v3),
in bytes: ``ecn_alpha`` is an EWMA (gain 1/16, starting at 1) of the share of
each round's delivered data that was CE-marked; a rate sample more than half
CE-marked means inflight is too high, which bounds ``inflight_longterm``
while probing exactly as loss does (``bbr_is_inflight_too_high``); a round
with CE outside probing cuts ``inflight_shortterm`` by ``ecn_alpha / 3``
(``bbr_ecn_lower_bounds``); and two Startup rounds at least half marked end
Startup (``bbr_check_ecn_too_high_in_startup``). Unlike Linux, which by
default applies this only below 5 ms of min_rtt (shallow data-centre
marking), Seam applies it at any RTT once a CE mark has been seen: a
connection only sees CE where a queue marks instead of dropping.

Loss without a queue (Seam's addition, docs/protocol.md 7.3): losses declared
while the queueing delay (RTT over min_rtt) is under half its peak over the
last two ProbeBW cycles are random, not overflow, and bound nothing
(``_is_queue_loss``); with no measurable queue every loss counts.

Persistent congestion (RFC 9002 section 7.6) stands in for the RTO of section
5.6.4.4: the window collapses to the minimum and regrows by what is acked, up
to the model's bound (``_set_cwnd``); the model itself is kept.

Left out, as QUIC-irrelevant or deliberately simplified: the cwnd save/restore
around fast recovery and the RTO (section 5.6.4.4; Seam's PTO sends probes past
the window instead, and nothing is restored after persistent congestion),
undo of spurious loss, and TSO-specific quantisation (the offload budget is
kept as 3 send quanta, as for TCP).
"""

from __future__ import annotations

import bisect
import enum
import math
import random
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING

from seam.congestion.base import CongestionController, register

if TYPE_CHECKING:
    from seam.recovery import RateSample, RttEstimator, SentPacket

STARTUP_PACING_GAIN = 2.77  # 4 ln 2, draft-ietf-ccwg-bbr-04 section 2.4
DRAIN_PACING_GAIN = 0.35  # section 2.4
DEFAULT_CWND_GAIN = 2.0  # section 2.5
PACING_MARGIN = 0.01  # pace 1 % under bw, section 2.4 (PacingMarginPercent)
PROBE_BW_DOWN_PACING_GAIN = 0.9  # section 5.3.3.1
PROBE_BW_UP_PACING_GAIN = 1.25  # section 5.3.3.4
PROBE_BW_UP_CWND_GAIN = 2.25  # section 5.3.3.4
LOSS_THRESH = 0.02  # highest tolerated per-round loss rate while probing, section 2.7
BETA = 0.7  # multiplicative decrease per lossy round, section 2.7
HEADROOM = 0.15  # share of inflight_longterm left free for others, section 2.7
MIN_PIPE_CWND_PACKETS = 4  # datagrams, section 2.7
MAX_BW_FILTER_LEN = 2  # ProbeBW cycles, section 2.10
EXTRA_ACKED_FILTER_LEN = 10  # packet-timed rounds, section 2.11
FULL_BW_GROWTH = 1.25  # bandwidth growth that still counts as growing, section 5.3.1.2
FULL_BW_COUNT = 3  # rounds without such growth that mean the pipe is full, section 5.3.1.2
STARTUP_FULL_LOSS_COUNT = 6  # separate loss ranges in one round that end Startup, section 5.3.1.3
MIN_RTT_FILTER_LEN = 10.0  # seconds, section 2.13.1
PROBE_RTT_CWND_GAIN = 0.5  # section 2.13.2
PROBE_RTT_DURATION = 0.2  # seconds, section 2.13.2
PROBE_RTT_INTERVAL = 5.0  # seconds, section 2.13.2
PROBE_WAIT_BASE = 2.0  # seconds, T_bbr = 2 s + uniform(0, 1 s), section 5.3.3.5.2
PROBE_WAIT_RANDOM = 1.0  # seconds
RENO_ROUNDS_MAX = 63  # rounds, the Reno-coexistence bound, section 5.3.3.5.3
MAX_PROBE_UP_ROUNDS = 30  # cap on the doubling of inflight_longterm growth, section 5.3.3.6
SEND_QUANTUM_TIME = 0.001  # seconds of pacing per send quantum, section 5.6.3
SEND_QUANTUM_MAX = 64 * 1024  # bytes, section 5.6.3
NO_RTT_SRTT = 0.001  # seconds assumed for the initial pacing rate if srtt is 0, section 5.6.2
# ECN, from Linux tcp_bbr.c (BBRv3, google/bbr branch v3); the draft does not specify it (section 3.7)
ECN_ALPHA_GAIN = 1 / 16  # EWMA gain of ecn_alpha per round (bbr_ecn_alpha_gain)
ECN_ALPHA_INIT = 1.0  # ecn_alpha before any round is measured: respond fully at first (bbr_ecn_alpha_init)
ECN_FACTOR = 1 / 3  # a round with CE cuts inflight_shortterm by ecn_alpha x this (bbr_ecn_factor)
ECN_THRESH = 0.5  # CE-marked share of a sample's delivery that means inflight is too high (bbr_ecn_thresh)
FULL_ECN_COUNT = 2  # Startup rounds at ECN_THRESH or more that end Startup (bbr_full_ecn_cnt)
# Loss without a queue (docs/protocol.md 7.3; Seam's addition, in the spirit of TCP Veno): a loss
# declared while the queueing delay is under this share of the highest queueing delay of the last
# QUEUE_FILTER_CYCLES ProbeBW cycles did not overflow a queue, so it is not a congestion signal.
QUEUE_LOSS_SHARE = 0.5
QUEUE_FILTER_CYCLES = 2
QUEUE_DELAY_FLOOR = 0.002  # seconds: below this no queue is measurable, and every loss counts
EXCUSED_HISTORY = 1024  # loss batches remembered to take excused losses out of older samples
# ProbeRTT only when needed (docs/protocol.md 7.3; Seam's addition): an RTT sample within this share
# of the minimum, and within QUEUE_DELAY_FLOOR of it, shows no queue hiding the propagation delay,
# which is what ProbeRTT would drain the queue to learn, so it postpones ProbeRTT as a new minimum does.
MIN_RTT_CONFIRM_SHARE = 1 / 8

INFINITY = math.inf


class State(enum.Enum):
    STARTUP = "startup"
    DRAIN = "drain"
    PROBE_BW_DOWN = "probe_bw_down"
    PROBE_BW_CRUISE = "probe_bw_cruise"
    PROBE_BW_REFILL = "probe_bw_refill"
    PROBE_BW_UP = "probe_bw_up"
    PROBE_RTT = "probe_rtt"


PROBE_BW_STATES = frozenset(
    {State.PROBE_BW_DOWN, State.PROBE_BW_CRUISE, State.PROBE_BW_REFILL, State.PROBE_BW_UP}
)
PROBING_STATES = frozenset({State.STARTUP, State.PROBE_BW_REFILL, State.PROBE_BW_UP})


class _AckPhase(enum.Enum):
    """Which probing phase the ACKs now arriving were sent in (section 5.3.3.6)."""

    INIT = 0
    PROBE_STARTING = 1
    PROBE_FEEDBACK = 2
    PROBE_STOPPING = 3
    REFILLING = 4


class WindowedMax:
    """The maximum of the samples of the last ``window`` time units (a monotonic queue).

    Time is virtual (ProbeBW cycles, packet-timed rounds) and never goes back.
    """

    __slots__ = ("_samples",)

    def __init__(self) -> None:
        self._samples: deque[tuple[int, float]] = deque()  # (time, value), values decreasing

    def update(self, value: float, time: int, window: int) -> float:
        samples = self._samples
        while samples and samples[0][0] <= time - window:
            samples.popleft()
        while samples and samples[-1][1] <= value:
            samples.pop()
        samples.append((time, value))
        return samples[0][1]

    def expire(self, time: int, window: int) -> float:
        """Forget samples that left the window; returns the maximum (0.0 when empty)."""
        samples = self._samples
        while samples and samples[0][0] <= time - window:
            samples.popleft()
        return samples[0][1] if samples else 0.0

    def reset(self) -> None:
        self._samples.clear()


class BBR(CongestionController):
    """BBRv3; see the module docstring. ``congestion_window`` is recomputed on every ACK."""

    name = "bbr"
    wants_rate_samples = True

    def __init__(self, *, max_datagram_size: int = 1200, rng: random.Random | None = None) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self._rng = rng or random.Random()
        mds = max_datagram_size
        self.initial_cwnd = self.congestion_window
        self.min_pipe_cwnd = MIN_PIPE_CWND_PACKETS * mds
        self.minimum_window = self.min_pipe_cwnd
        # BBROnInit (section 5.2.1)
        self.state = State.STARTUP
        self.pacing_gain = STARTUP_PACING_GAIN
        self.cwnd_gain = DEFAULT_CWND_GAIN
        self._pacing_rate = 0.0  # bytes per second; 0.0 until the first RTT sample sets it
        self.send_quantum = 2 * mds
        self._max_bw_filter = WindowedMax()
        self.max_bw = 0.0
        self.bw = 0.0
        self.bw_shortterm = INFINITY
        self.inflight_shortterm = INFINITY
        self.inflight_longterm = INFINITY
        self.min_rtt = INFINITY
        self._min_rtt_stamp: float | None = None
        self._probe_rtt_min_delay = INFINITY
        self._probe_rtt_min_stamp: float | None = None
        self._probe_rtt_expired = False
        self._probe_rtt_done_stamp: float | None = None
        self._probe_rtt_round_done = False
        self.prior_cwnd = 0
        self.idle_restart = False
        self.bdp = 0.0
        self.max_inflight = 0.0
        self.extra_acked = 0.0
        self._extra_acked_filter = WindowedMax()
        self._extra_acked_interval_start: float | None = None
        self._extra_acked_delivered = 0
        # full pipe (section 5.3.1.2)
        self.full_bw_reached = False
        self.full_bw_now = False
        self.full_bw = 0.0
        self.full_bw_count = 0
        # rounds (section 5.5.1)
        self.round_count = 0
        self.round_start = False
        self._next_round_delivered = 0
        self._rounds_since_bw_probe = 0
        # ProbeBW cycle (section 5.3.3.6)
        self.cycle_count = 0
        self._cycle_stamp = 0.0
        self._bw_probe_wait = PROBE_WAIT_BASE
        self._ack_phase = _AckPhase.INIT
        self._bw_probe_up_rounds = 0
        self._bw_probe_up_acks = 0.0
        self._probe_up_cnt = INFINITY
        self._bw_probe_samples = False
        # congestion signals (section 5.5.10)
        self._loss_in_round = False
        self._loss_round_delivered = 0
        self._loss_round_lost = 0  # bytes lost in this loss round
        self._loss_round_base = 0  # C.delivered when this loss round began
        self._loss_round_start = False
        self._bw_latest = 0.0
        self._inflight_latest = 0
        # ECN (see the module docstring)
        self.ecn_alpha = ECN_ALPHA_INIT
        self.ecn_eligible = False  # a CE mark has been seen: the path marks instead of dropping
        self._ecn_in_round = False
        self._delivered_ce = 0  # CE-marked bytes delivered, as the rate samples report them
        self._alpha_last_delivered = 0
        self._alpha_last_delivered_ce = 0
        self._startup_ecn_rounds = 0
        # connection state as BBR sees it
        self._delivered = 0  # C.delivered after the last ACK
        self._bytes_in_flight = 0
        self._lost = 0  # bytes declared lost; in step with LossRecovery.lost_bytes (every loss reaches us)
        # losses without a queue (QUEUE_LOSS_SHARE): the highest recent queueing delay, the bytes
        # excused so far, and (self._lost, self._excused) after each batch, oldest first
        self._queue_delay_filter = WindowedMax()
        self.max_queue_delay = 0.0
        self._excused = 0
        self._excused_history: deque[tuple[int, int]] = deque(maxlen=EXCUSED_HISTORY)
        self._outage_lost = 0  # self._lost when the last outage ended: losses up to it are not congestion
        self._longterm_before_losses = INFINITY  # inflight_longterm before the last batch of losses
        self._prior_cwnd = 0  # BBR.prior_cwnd: the window an outage collapsed, restored once it is over
        self._cwnd_limited_this_round = False
        self._cwnd_limited_last_round = False
        # Startup exit on loss (section 5.3.1.3): this round's and the finished round's figures
        self._round_lost = 0
        self._round_loss_events = 0
        self._round_start_delivered = 0
        self._last_lost_pn = -2
        self._prev_round_lost = 0
        self._prev_round_loss_events = 0
        self._prev_round_delivered = 0
        # ProbeRTT marks its own samples application-limited (MarkConnectionAppLimited, section 5.3.4.3):
        # packets sent in [since, until) count as application-limited.
        self._quiet_since: float | None = None
        self._quiet_until: float | None = None
        self._quiet_mark = 0

    # ----------------------------------------------------------- interface

    def use_rng(self, rng: random.Random) -> None:
        self._rng = rng

    def pacing_rate(self, rtt: RttEstimator) -> float | None:
        if self._pacing_rate > 0:
            return self._pacing_rate
        # BBRInitPacingRate (section 5.6.2), until the first rate sample. Before any RTT sample
        # srtt is RFC 9002's initial RTT, not the draft's 1 ms: Seam samples the handshake, so no
        # sample means a repeated handshake message or a long path, where the 32-datagram initial
        # window should not leave in one burst. A zero sample (only ever forged) gives 1 ms.
        srtt = rtt.smoothed_rtt if rtt.smoothed_rtt > 0 else NO_RTT_SRTT
        return STARTUP_PACING_GAIN * self.initial_cwnd / srtt

    @property
    def phase(self) -> str:
        """The BBR state: startup, drain, probe_bw_down/cruise/refill/up or probe_rtt."""
        return self.state.value

    @property
    def in_slow_start(self) -> bool:
        return self.state is State.STARTUP

    @property
    def is_cwnd_limited(self) -> bool:
        """C.is_cwnd_limited: the window was full at some point in the last round trip."""
        return self._cwnd_limited_this_round or self._cwnd_limited_last_round

    def on_packet_sent(self, packet: SentPacket, bytes_in_flight: int, now: float) -> None:
        self._bytes_in_flight = bytes_in_flight
        if bytes_in_flight + self.max_datagram_size > self.congestion_window:
            self._cwnd_limited_this_round = True
        if bytes_in_flight == packet.size and packet.is_app_limited:
            # BBRHandleRestartFromIdle (section 5.4.1)
            self.idle_restart = True
            self._extra_acked_interval_start = now
            if self.state in PROBE_BW_STATES:
                self._set_pacing_rate_with_gain(1.0)
            elif self.state is State.PROBE_RTT:
                self._check_probe_rtt_done(now)

    def on_packets_acked(self, packets: list[SentPacket], now: float, rtt: RttEstimator) -> None:
        """Nothing: BBR acts on the rate sample that follows (``on_rate_sample``)."""

    def on_packets_lost(self, packets: list[SentPacket], now: float, rtt: RttEstimator) -> None:
        """BBRUpdateOnLoss for each lost packet (section 5.5.10.2), for losses that overflowed a queue.

        Losses declared while there was no queue to overflow (``_is_queue_loss``) are
        only counted: they lower no bound, end no Startup and stop no probe.
        """
        self._longterm_before_losses = self.inflight_longterm
        if not self._is_queue_loss(rtt):
            excused = sum(packet.size for packet in packets)
            self._lost += excused
            self._excused += excused
            self._excused_history.append((self._lost, self._excused))
            return
        for packet in packets:
            size = packet.size
            self._lost += size
            self._round_lost += size
            self._loss_round_lost += size
            if packet.packet_number != self._last_lost_pn + 1:
                self._round_loss_events += 1  # a separate loss range
            self._last_lost_pn = packet.packet_number
            if not self._loss_in_round:  # BBRNoteLoss
                self._loss_round_delivered = self._delivered
            self._loss_in_round = True
            if not self._bw_probe_samples:
                continue  # not sent while probing for bandwidth
            tx_in_flight = packet.tx_in_flight
            lost = self._queue_lost_since(packet.lost)
            if lost > tx_in_flight * LOSS_THRESH:
                # At what inflight did the losses cross LOSS_THRESH? (BBRInflightAtLoss)
                inflight_prev = tx_in_flight - size
                lost_prev = lost - size
                lost_prefix = (LOSS_THRESH * inflight_prev - lost_prev) / (1 - LOSS_THRESH)
                self._handle_inflight_too_high(inflight_prev + lost_prefix, packet.is_app_limited, now)

    def _is_queue_loss(self, rtt: RttEstimator) -> bool:
        """Was the queue, when these losses were declared, full enough for them to be overflow?

        The ACK that declares a loss acknowledges packets sent just after the lost
        one, so its RTT sample shows the queue the lost packet met. A drop-tail queue
        overflows at the highest delay it reaches; a loss at under half the highest
        queueing delay of the last two probe cycles is random (radio, a bad cable),
        and slowing down would not prevent the next one. Where no queue has been
        measured (a policer, a very shallow buffer) every loss counts.
        """
        peak = self.max_queue_delay
        if peak < QUEUE_DELAY_FLOOR or self.min_rtt == INFINITY:
            return True
        return rtt.latest_rtt - self.min_rtt >= QUEUE_LOSS_SHARE * peak

    def _queue_lost_since(self, lost_stamp: int) -> int:
        """Bytes lost to queue overflow since LossRecovery's lost counter read ``lost_stamp``."""
        lost = self._lost - lost_stamp
        if not self._excused:
            return lost
        history = self._excused_history
        # the excused total once the losses up to lost_stamp had been declared
        index = bisect.bisect_right(history, (lost_stamp, INFINITY)) - 1
        excused_then = history[index][1] if index >= 0 else 0
        if index < 0 and len(history) == history.maxlen:
            excused_then = history[0][1]  # older than the history: excuse only what it holds
        return lost - (self._excused - excused_then)

    def on_ecn_ce(self, ce_marks: int, sent_time: float, now: float) -> None:
        """Nothing here: BBR reads CE marks from the rate sample that follows (``sample.newly_ce``)."""

    def on_persistent_congestion(self, now: float) -> None:
        """An outage: collapse to BBR's minimum window (BBROnEnterRTO, section 5.6.4.4), but keep
        the model.

        Every packet over more than three PTOs was lost and nothing was acknowledged:
        the path was down, which says nothing about its rate or the queue it can
        take. So the batch's losses are taken back out of the model (the long-term
        inflight bound as it was before them, no short-term bounds, no loss in this
        round, and rate samples of packets sent before now ignore them). The window
        then grows back by what each ACK delivers, to the model's BDP within a few
        round trips, and back to the window it had (BBRRestoreCwnd) once a packet
        sent after now is acknowledged: pacing at the model's rate keeps that from
        becoming a burst. Were the path slower now, the losses of packets sent after
        the outage still teach the model that as usual. The flight restarts from an
        empty queue, as after idle, so its first RTT sample refreshes ProbeRTT's
        (``idle_restart``) instead of an overdue ProbeRTT halving the window just as
        the path comes back.
        """
        self._prior_cwnd = max(self._prior_cwnd, self.congestion_window)
        self.idle_restart = True
        self.inflight_longterm = self._longterm_before_losses
        self._reset_short_term_model()
        self._loss_in_round = False
        self._round_lost = self._round_loss_events = 0
        self._outage_lost = self._lost
        self.congestion_window = self.min_pipe_cwnd

    def on_rate_sample(self, sample: RateSample, now: float, rtt: RttEstimator) -> None:
        """BBRUpdateOnACK (section 5.2.3): update the model and state, then the controls."""
        if self._lost - sample.lost < self._outage_lost:  # sent before an outage's losses were counted
            sample = replace(sample, lost=self._lost - self._outage_lost)
        elif self._prior_cwnd:  # sent after the outage, and delivered: it is over
            self.congestion_window = max(self.congestion_window, self._prior_cwnd)
            self._prior_cwnd = 0
        if self._excused and sample.lost:  # losses without a queue are not the sample's
            sample = replace(sample, lost=max(self._queue_lost_since(self._lost - sample.lost), 0))
        self._delivered = sample.delivered_total
        self._bytes_in_flight = sample.bytes_in_flight
        if self._min_rtt_stamp is None:
            self._min_rtt_stamp = self._probe_rtt_min_stamp = now
            self._extra_acked_interval_start = now
        if self._pacing_rate == 0.0:
            self._pacing_rate = self.pacing_rate(rtt) or 0.0
        app_limited = self._is_app_limited(sample, now)
        # BBRUpdateModelAndState
        self._update_latest_delivery_signals(sample)
        self._update_congestion_signals(sample, app_limited)
        self._update_ack_aggregation(sample, now)
        self._check_full_bw_reached(sample, app_limited)
        self._check_startup_done()
        self._check_drain_done(now)
        self._update_probe_bw_cycle_phase(sample, app_limited, now)
        self._update_min_rtt(sample, now)
        self._update_queue_delay(sample)
        self._check_probe_rtt(sample, now)
        self._advance_latest_delivery_signals(sample)
        self.bw = min(self.max_bw, self.bw_shortterm)  # BBRBoundBWForModel
        # BBRUpdateControlParameters
        self._set_pacing_rate_with_gain(self.pacing_gain)
        self.send_quantum = int(
            min(max(self._pacing_rate * SEND_QUANTUM_TIME, 2 * self.max_datagram_size), SEND_QUANTUM_MAX)
        )
        self._set_cwnd(sample)

    # ---------------------------------------------------- model: rounds, bw

    def _is_app_limited(self, sample: RateSample, now: float) -> bool:
        if sample.is_app_limited:
            return True
        since = self._quiet_since
        if since is None:
            return False
        if self._quiet_until is None and sample.delivered_total > self._quiet_mark:
            self._quiet_until = now  # the ProbeRTT bubble has been delivered
        until = self._quiet_until
        return sample.send_time >= since and (until is None or sample.send_time < until)

    def _start_round(self) -> None:
        self._next_round_delivered = self._delivered

    def _update_round(self, sample: RateSample) -> None:
        """BBRUpdateRound (section 5.5.1): a round ends when a packet sent after its start is acked."""
        if sample.prior_delivered >= self._next_round_delivered:
            self._start_round()
            self.round_count += 1
            self._rounds_since_bw_probe += 1
            self.round_start = True
            self._cwnd_limited_last_round = self._cwnd_limited_this_round
            self._cwnd_limited_this_round = False
            self._prev_round_lost = self._round_lost
            self._prev_round_loss_events = self._round_loss_events
            self._prev_round_delivered = sample.delivered_total - self._round_start_delivered
            self._round_lost = self._round_loss_events = 0
            self._round_start_delivered = sample.delivered_total
        else:
            self.round_start = False

    def _update_max_bw(self, sample: RateSample, app_limited: bool) -> None:
        """BBRUpdateMaxBw (section 5.5.5)."""
        self._update_round(sample)
        rate = sample.delivery_rate
        if rate > 0 and (rate >= self.max_bw or not app_limited):
            self.max_bw = self._max_bw_filter.update(rate, self.cycle_count, MAX_BW_FILTER_LEN)

    def _advance_max_bw_filter(self) -> None:
        """BBRAdvanceMaxBwFilter (section 5.5.6): samples older than the previous cycle expire."""
        self.cycle_count += 1
        remaining = self._max_bw_filter.expire(self.cycle_count, MAX_BW_FILTER_LEN)
        if remaining > 0:  # with no sample in the window the estimate stands until the next one
            self.max_bw = remaining

    def _update_ack_aggregation(self, sample: RateSample, now: float) -> None:
        """BBRUpdateACKAggregation (section 5.5.9): how much more arrived than bw alone explains."""
        start = self._extra_acked_interval_start if self._extra_acked_interval_start is not None else now
        expected = self.bw * (now - start)
        if self._extra_acked_delivered <= expected:  # the ACK rate fell below bw: a new interval
            self._extra_acked_delivered = 0
            self._extra_acked_interval_start = now
            expected = 0.0
        self._extra_acked_delivered += sample.newly_acked
        extra = min(self._extra_acked_delivered - expected, self.congestion_window)
        window = EXTRA_ACKED_FILTER_LEN if self.full_bw_reached else 1
        self.extra_acked = self._extra_acked_filter.update(extra, self.round_count, window)

    # ------------------------------------------------- congestion signals

    def _update_latest_delivery_signals(self, sample: RateSample) -> None:
        self._loss_round_start = False
        self._bw_latest = max(self._bw_latest, sample.delivery_rate)
        self._inflight_latest = max(self._inflight_latest, sample.delivered)
        if sample.prior_delivered >= self._loss_round_delivered:
            self._loss_round_delivered = sample.delivered_total
            self._loss_round_start = True

    def _advance_latest_delivery_signals(self, sample: RateSample) -> None:
        if self._loss_round_start:
            self._bw_latest = sample.delivery_rate
            self._inflight_latest = sample.delivered

    def _reset_congestion_signals(self) -> None:
        self._loss_in_round = False
        self._ecn_in_round = False
        self._bw_latest = 0.0
        self._inflight_latest = 0

    def _update_congestion_signals(self, sample: RateSample, app_limited: bool) -> None:
        self._update_max_bw(sample, app_limited)
        self._update_ecn_alpha(sample)
        if not self._loss_round_start:
            return  # once per round trip
        lost, self._loss_round_lost = self._loss_round_lost, 0
        delivered = sample.delivered_total - self._loss_round_base
        self._loss_round_base = sample.delivered_total
        # Deviation from the draft, measured (docs/protocol.md 7.3): only a round that lost more
        # than LOSS_THRESH lowers the short-term bounds. Otherwise every round with one random
        # loss sets bw_shortterm to what the round delivered, which pacing at 99 % of bw keeps
        # ~1 % under it: on a path with 1 % random loss and no jitter that ratchets the rate
        # down ~1 % per round trip, to 65 % of the link (sans-IO pair, 6.25 MB/s, 40 ms).
        too_lossy = self._loss_in_round and lost > LOSS_THRESH * (lost + delivered)
        if self.state not in PROBING_STATES and (too_lossy or self._ecn_in_round):
            # BBRAdaptLowerBoundsFromCongestion: adapt to the latest delivery process.
            if self.inflight_shortterm == INFINITY:
                self.inflight_shortterm = float(self.congestion_window)
            ecn_inflight = INFINITY
            if self._ecn_in_round:  # Linux bbr_ecn_lower_bounds: the volume only, by ecn_alpha / 3
                ecn_inflight = self.inflight_shortterm * (1 - self.ecn_alpha * ECN_FACTOR)
            if too_lossy:
                if self.bw_shortterm == INFINITY:
                    self.bw_shortterm = self.max_bw
                # bw_latest is what a round paced at (1 - PACING_MARGIN) x bw delivered: measured
                # against bw, not against the pacing rate, it would read the margin as congestion.
                latest = self._bw_latest / (1 - PACING_MARGIN)
                self.bw_shortterm = max(latest, BETA * self.bw_shortterm)
                self.inflight_shortterm = max(self._inflight_latest, BETA * self.inflight_shortterm)
            self.inflight_shortterm = min(self.inflight_shortterm, ecn_inflight)
        self._loss_in_round = False
        self._ecn_in_round = False

    def _update_ecn_alpha(self, sample: RateSample) -> None:
        """Linux bbr_update_ecn_alpha: once per round, ecn_alpha follows the round's CE-marked share."""
        if sample.newly_ce:
            self._delivered_ce += sample.newly_ce
            self.ecn_eligible = True
            self._ecn_in_round = True
        if not self.round_start:
            return
        delivered = sample.delivered_total - self._alpha_last_delivered
        if self.ecn_eligible and delivered > 0:
            ce_ratio = (self._delivered_ce - self._alpha_last_delivered_ce) / delivered
            self.ecn_alpha = min((1 - ECN_ALPHA_GAIN) * self.ecn_alpha + ECN_ALPHA_GAIN * ce_ratio, 1.0)
            if not self.full_bw_reached:  # bbr_check_ecn_too_high_in_startup
                self._startup_ecn_rounds = self._startup_ecn_rounds + 1 if ce_ratio >= ECN_THRESH else 0
                if self._startup_ecn_rounds >= FULL_ECN_COUNT:
                    self.full_bw_reached = True  # the queue is too high: Startup is over
                    self.inflight_longterm = max(self._bdp_multiple(1.0), float(self._inflight_latest))
        self._alpha_last_delivered = sample.delivered_total
        self._alpha_last_delivered_ce = self._delivered_ce

    def _reset_short_term_model(self) -> None:
        self.bw_shortterm = INFINITY
        self.inflight_shortterm = INFINITY

    def _handle_inflight_too_high(self, tx_in_flight: float, app_limited: bool, now: float) -> None:
        """BBRHandleInflightTooHigh (section 5.5.10.2): react once per bandwidth probe."""
        self._bw_probe_samples = False
        if not app_limited:
            self.inflight_longterm = max(tx_in_flight, self._target_inflight() * BETA)
        if self.state is State.PROBE_BW_UP:
            self._start_probe_bw_down(now)

    def _is_inflight_too_high(self, sample: RateSample) -> bool:
        return sample.lost > sample.tx_in_flight * LOSS_THRESH or self._is_ecn_too_high(sample)

    def _is_ecn_too_high(self, sample: RateSample) -> bool:
        """Linux bbr_is_inflight_too_high, ECN half: over half of the sample's delivery was CE-marked."""
        return self.ecn_eligible and sample.ce_delivered > ECN_THRESH * sample.delivered > 0

    # ------------------------------------------------------ Startup, Drain

    def _reset_full_bw(self) -> None:
        self.full_bw = 0.0
        self.full_bw_count = 0
        self.full_bw_now = False

    def _check_full_bw_reached(self, sample: RateSample, app_limited: bool) -> None:
        """Section 5.3.1.2: three rounds without 25 % growth mean the pipe is full."""
        if self.full_bw_now or not self.round_start or app_limited or sample.delivery_rate <= 0:
            return
        if sample.delivery_rate >= self.full_bw * FULL_BW_GROWTH:
            self._reset_full_bw()
            self.full_bw = sample.delivery_rate
            return
        self.full_bw_count += 1
        self.full_bw_now = self.full_bw_count >= FULL_BW_COUNT
        if self.full_bw_now:
            self.full_bw_reached = True

    def _check_startup_done(self) -> None:
        if self.state is not State.STARTUP:
            return
        if self.round_start and self._prev_round_loss_events >= STARTUP_FULL_LOSS_COUNT:
            # BBRCheckStartupHighLoss (section 5.3.1.3), judged over the round just finished.
            lost = self._prev_round_lost
            if lost > LOSS_THRESH * (lost + self._prev_round_delivered):
                self.full_bw_reached = True
                self.inflight_longterm = max(self._bdp_multiple(1.0), float(self._inflight_latest))
        if self.full_bw_reached:
            self._enter_drain()

    def _enter_startup(self) -> None:
        self.state = State.STARTUP
        self.pacing_gain = STARTUP_PACING_GAIN
        self.cwnd_gain = DEFAULT_CWND_GAIN

    def _enter_drain(self) -> None:
        self.state = State.DRAIN
        self.pacing_gain = DRAIN_PACING_GAIN
        self.cwnd_gain = DEFAULT_CWND_GAIN

    def _check_drain_done(self, now: float) -> None:
        if self.state is State.DRAIN and self._bytes_in_flight <= self._inflight(1.0):
            self.cwnd_gain = DEFAULT_CWND_GAIN  # BBREnterProbeBW
            self._start_probe_bw_down(now)

    # -------------------------------------------------------------- ProbeBW

    def _pick_probe_wait(self) -> None:
        self._rounds_since_bw_probe = self._rng.randint(0, 1)
        self._bw_probe_wait = PROBE_WAIT_BASE + self._rng.random() * PROBE_WAIT_RANDOM

    def _start_probe_bw_down(self, now: float) -> None:
        self._reset_congestion_signals()
        self._probe_up_cnt = INFINITY
        self._pick_probe_wait()
        self._cycle_stamp = now
        self._ack_phase = _AckPhase.PROBE_STOPPING
        self._start_round()
        self.state = State.PROBE_BW_DOWN
        self.pacing_gain = PROBE_BW_DOWN_PACING_GAIN
        self.cwnd_gain = DEFAULT_CWND_GAIN

    def _start_probe_bw_cruise(self) -> None:
        self.state = State.PROBE_BW_CRUISE
        self.pacing_gain = 1.0
        self.cwnd_gain = DEFAULT_CWND_GAIN

    def _start_probe_bw_refill(self) -> None:
        self._reset_short_term_model()
        self._bw_probe_up_rounds = 0
        self._bw_probe_up_acks = 0.0
        self._ack_phase = _AckPhase.REFILLING
        self._start_round()
        self.state = State.PROBE_BW_REFILL
        self.pacing_gain = 1.0
        self.cwnd_gain = DEFAULT_CWND_GAIN

    def _start_probe_bw_up(self, sample: RateSample) -> None:
        self._ack_phase = _AckPhase.PROBE_STARTING
        self._start_round()
        self._reset_full_bw()
        self.full_bw = sample.delivery_rate
        self.state = State.PROBE_BW_UP
        self.pacing_gain = PROBE_BW_UP_PACING_GAIN
        self.cwnd_gain = PROBE_BW_UP_CWND_GAIN
        self._raise_inflight_longterm_slope()

    def _update_probe_bw_cycle_phase(self, sample: RateSample, app_limited: bool, now: float) -> None:
        """BBRUpdateProbeBWCyclePhase (section 5.3.3.6)."""
        if not self.full_bw_reached:
            return
        self._adapt_long_term_model(sample, app_limited, now)
        state = self.state
        if state is State.PROBE_BW_DOWN:
            if self._is_time_to_probe_bw(now):
                return
            if self._is_time_to_cruise():
                self._start_probe_bw_cruise()
        elif state is State.PROBE_BW_CRUISE:
            self._is_time_to_probe_bw(now)
        elif state is State.PROBE_BW_REFILL:
            if self.round_start:  # one round of refilling done
                self._bw_probe_samples = True
                self._start_probe_bw_up(sample)
        elif state is State.PROBE_BW_UP:
            if self._is_time_to_go_down(sample):
                self._start_probe_bw_down(now)

    def _is_time_to_probe_bw(self, now: float) -> bool:
        reno_rounds = min(self._target_inflight() / self.max_datagram_size, RENO_ROUNDS_MAX)
        if now > self._cycle_stamp + self._bw_probe_wait or self._rounds_since_bw_probe >= reno_rounds:
            self._start_probe_bw_refill()
            return True
        return False

    def _is_time_to_cruise(self) -> bool:
        inflight = self._bytes_in_flight
        if inflight > self._inflight_with_headroom():
            return False  # not enough headroom yet
        return inflight <= self._inflight(1.0, bw=self.max_bw)

    def _is_time_to_go_down(self, sample: RateSample) -> bool:
        if self.is_cwnd_limited and self.congestion_window >= self.inflight_longterm:
            self._reset_full_bw()  # bw is limited by inflight_longterm, not the path
            self.full_bw = sample.delivery_rate
        elif self.full_bw_now:
            return True
        return False

    def _adapt_long_term_model(self, sample: RateSample, app_limited: bool, now: float) -> None:
        """BBRAdaptLongTermModel (section 5.3.3.6)."""
        if self._ack_phase is _AckPhase.PROBE_STARTING and self.round_start:
            self._ack_phase = _AckPhase.PROBE_FEEDBACK  # samples from the probe are arriving
        if self._ack_phase is _AckPhase.PROBE_STOPPING and self.round_start:
            # The last samples from the probe have arrived: the cycle ends. (The draft's pseudocode
            # leaves the phase at STOPPING, which would advance the filter every round; the text
            # says once per cycle.)
            self._ack_phase = _AckPhase.INIT
            if self.state in PROBE_BW_STATES and not app_limited:
                self._advance_max_bw_filter()
        if self._is_inflight_too_high(sample):
            if self._bw_probe_samples and self._is_ecn_too_high(sample):
                # Too much CE while probing: bound the volume as loss does (losses are handled as
                # they are declared, in on_packets_lost).
                self._handle_inflight_too_high(sample.tx_in_flight, app_limited, now)
            return
        if self.inflight_longterm == INFINITY:
            return  # no upper bound to raise
        if sample.tx_in_flight > self.inflight_longterm:
            self.inflight_longterm = float(sample.tx_in_flight)
        if self.state is State.PROBE_BW_UP:
            self._probe_inflight_longterm_upward(sample)

    def _raise_inflight_longterm_slope(self) -> None:
        """Grow inflight_longterm by 1, 2, 4... datagrams per round while probing up."""
        growth_this_round = self.max_datagram_size << self._bw_probe_up_rounds
        self._bw_probe_up_rounds = min(self._bw_probe_up_rounds + 1, MAX_PROBE_UP_ROUNDS)
        self._probe_up_cnt = max(self.congestion_window / growth_this_round, 1.0)  # bytes acked per byte

    def _probe_inflight_longterm_upward(self, sample: RateSample) -> None:
        if not self.is_cwnd_limited or self.congestion_window < self.inflight_longterm:
            return  # not using all of inflight_longterm: do not grow it
        self._bw_probe_up_acks += sample.newly_acked
        if self._bw_probe_up_acks >= self._probe_up_cnt:
            delta = math.floor(self._bw_probe_up_acks / self._probe_up_cnt)
            self._bw_probe_up_acks -= delta * self._probe_up_cnt
            self.inflight_longterm += delta
        if self.round_start:
            self._raise_inflight_longterm_slope()

    def _target_inflight(self) -> float:
        """BBRTargetInflight: the BDP, unless congestion cut the window below it."""
        return min(self.bdp, float(self.congestion_window))

    # ------------------------------------------------------------- ProbeRTT

    def _update_min_rtt(self, sample: RateSample, now: float) -> None:
        """BBRUpdateMinRTT (section 5.3.4.3)."""
        assert self._probe_rtt_min_stamp is not None and self._min_rtt_stamp is not None
        self._probe_rtt_expired = now > self._probe_rtt_min_stamp + PROBE_RTT_INTERVAL
        if sample.rtt >= 0 and (sample.rtt < self._probe_rtt_min_delay or self._probe_rtt_expired):
            self._probe_rtt_min_delay = sample.rtt
            self._probe_rtt_min_stamp = now
        elif sample.rtt >= 0 and sample.rtt - self._probe_rtt_min_delay <= self._min_rtt_confirm_margin():
            self._probe_rtt_min_stamp = now  # the minimum still holds: no queue to drain
        min_rtt_expired = now > self._min_rtt_stamp + MIN_RTT_FILTER_LEN
        if self._probe_rtt_min_delay < self.min_rtt or min_rtt_expired:
            self.min_rtt = self._probe_rtt_min_delay
            self._min_rtt_stamp = self._probe_rtt_min_stamp

    def _min_rtt_confirm_margin(self) -> float:
        """How far above the minimum an RTT sample may be and still confirm it (no queue)."""
        return min(QUEUE_DELAY_FLOOR, MIN_RTT_CONFIRM_SHARE * self._probe_rtt_min_delay)

    def _update_queue_delay(self, sample: RateSample) -> None:
        """The highest queueing delay (RTT over min_rtt) of the last QUEUE_FILTER_CYCLES cycles."""
        if self.min_rtt != INFINITY and sample.rtt > 0:
            delay = max(sample.rtt - self.min_rtt, 0.0)
            self.max_queue_delay = self._queue_delay_filter.update(
                delay, self.cycle_count, QUEUE_FILTER_CYCLES
            )

    def _check_probe_rtt(self, sample: RateSample, now: float) -> None:
        if self.state is not State.PROBE_RTT and self._probe_rtt_expired and not self.idle_restart:
            self.state = State.PROBE_RTT  # BBREnterProbeRTT
            self.pacing_gain = 1.0
            self.cwnd_gain = PROBE_RTT_CWND_GAIN
            self.prior_cwnd = max(self.prior_cwnd, self.congestion_window)  # BBRSaveCwnd
            self._probe_rtt_done_stamp = None
            self._ack_phase = _AckPhase.PROBE_STOPPING
            self._start_round()
        if self.state is State.PROBE_RTT:
            self._handle_probe_rtt(now)
        if sample.delivered > 0:
            self.idle_restart = False

    def _mark_app_limited(self, now: float) -> None:
        """MarkConnectionAppLimited: what is sent until the current flight is delivered is app-limited."""
        if self._quiet_since is None or self._quiet_until is not None:
            self._quiet_since = now
            self._quiet_until = None
        self._quiet_mark = (self._delivered + self._bytes_in_flight) or 1

    def _handle_probe_rtt(self, now: float) -> None:
        self._mark_app_limited(now)  # ignore the low rate samples ProbeRTT produces
        if self._probe_rtt_done_stamp is None and self._bytes_in_flight <= self._probe_rtt_cwnd():
            # Hold for at least PROBE_RTT_DURATION and one round.
            self._probe_rtt_done_stamp = now + PROBE_RTT_DURATION
            self._probe_rtt_round_done = False
            self._start_round()
        elif self._probe_rtt_done_stamp is not None:
            if self.round_start:
                self._probe_rtt_round_done = True
            if self._probe_rtt_round_done:
                self._check_probe_rtt_done(now)

    def _check_probe_rtt_done(self, now: float) -> None:
        if self._probe_rtt_done_stamp is not None and now > self._probe_rtt_done_stamp:
            self._probe_rtt_min_stamp = now  # schedule the next ProbeRTT
            self.congestion_window = max(self.congestion_window, self.prior_cwnd)  # BBRRestoreCwnd
            self._reset_short_term_model()  # BBRExitProbeRTT
            if self.full_bw_reached:
                self._start_probe_bw_down(now)
                self._start_probe_bw_cruise()  # inflight is already below the BDP
            else:
                self._enter_startup()

    def _probe_rtt_cwnd(self) -> float:
        return max(self._bdp_multiple(PROBE_RTT_CWND_GAIN), float(self.min_pipe_cwnd))

    # ------------------------------------------------------------- controls

    def _set_pacing_rate_with_gain(self, gain: float) -> None:
        rate = gain * self.bw * (1 - PACING_MARGIN)
        if self.full_bw_reached or rate > self._pacing_rate:
            self._pacing_rate = rate

    def _bdp_multiple(self, gain: float) -> float:
        if self.min_rtt == INFINITY:
            return float(self.initial_cwnd)  # no RTT sample yet
        self.bdp = self.bw * self.min_rtt
        return gain * self.bdp

    def _quantization_budget(self, inflight_cap: float) -> float:
        inflight_cap = max(inflight_cap, 3 * self.send_quantum, self.min_pipe_cwnd)  # offload budget
        if self.state is State.PROBE_BW_UP:
            inflight_cap += 2 * self.max_datagram_size
        return inflight_cap

    def _inflight(self, gain: float, *, bw: float | None = None) -> float:
        """BBRInflight: ``gain`` x the BDP (at ``bw``, default BBR.bw), with the quantisation budget."""
        if bw is None or self.min_rtt == INFINITY:
            return self._quantization_budget(self._bdp_multiple(gain))
        return self._quantization_budget(gain * bw * self.min_rtt)

    def _inflight_with_headroom(self) -> float:
        """inflight_longterm minus 15 % headroom for other flows (section 5.3.3.6)."""
        if self.inflight_longterm == INFINITY:
            return INFINITY
        headroom = max(self.max_datagram_size, HEADROOM * self.inflight_longterm)
        return max(self.inflight_longterm - headroom, self.min_pipe_cwnd)

    def _set_cwnd(self, sample: RateSample) -> None:
        """BBRSetCwnd (section 5.6.4.6): grow by what was acked up to the model's bound."""
        self.max_inflight = self._quantization_budget(self._bdp_multiple(self.cwnd_gain) + self.extra_acked)
        cwnd = float(self.congestion_window)
        if self.full_bw_reached:
            cwnd = min(cwnd + sample.newly_acked, self.max_inflight)
        elif cwnd < self.max_inflight or sample.delivered_total < self.initial_cwnd:
            cwnd += sample.newly_acked
        cwnd = max(cwnd, self.min_pipe_cwnd)
        if self.state is State.PROBE_RTT:
            cwnd = min(cwnd, self._probe_rtt_cwnd())
        # BBRBoundCwndForModel (section 5.6.4.7)
        cap = INFINITY
        if self.state in PROBE_BW_STATES and self.state is not State.PROBE_BW_CRUISE:
            cap = self.inflight_longterm
        elif self.state in (State.PROBE_RTT, State.PROBE_BW_CRUISE):
            cap = self._inflight_with_headroom()
        cap = max(min(cap, self.inflight_shortterm), self.min_pipe_cwnd)
        self.congestion_window = int(min(cwnd, cap))


register(BBR)  # not a decorator: mypyc compiles only undecorated classes to native ones
