"""Loss detection, RTT and delivery-rate estimation (RFC 9002, in the spirit of RACK-TLP, RFC 8985).

Only ack-eliciting packets are tracked: an ACK-only packet is never
retransmitted and does not count towards bytes in flight. Sent packets live
in insertion (packet-number) order, so each ACK walks only the packets it
newly acknowledges and the front of the queue, not everything in flight.

Delivery-rate estimation (draft-cheng-iccrg-delivery-rate-estimation, as
restated in draft-ietf-ccwg-bbr-04 section 4.1): every sent packet is stamped
with how much had been delivered, and when, at the moment it left; the ACK of
the newest packet then yields ``delivered / max(send_elapsed, ack_elapsed)``.
Packet numbers are never reused, so QUIC-style unambiguous ACKs need none of
TCP's retransmission special cases. A controller that sets
``wants_rate_samples`` receives a :class:`RateSample` per ACK that newly
acknowledges data; the others pay for a few integer additions only.

Reordering adapts the loss thresholds (RFC 9002 section 6.1 allows it; the
policy follows RFC 8985 section 6.2): the numbers of the last
``LOST_MEMORY`` packets declared lost are remembered, and an ACK for one of
them is a spurious loss. Each ACK revealing spurious losses steps the time
threshold up (9/8, 5/4, 3/2, 2). With ``adapt_packet_threshold`` it also
raises the packet threshold past the reordering depth the packet had when
declared lost (capped at ``MAX_PACKET_THRESHOLD``). After
``REORDERING_DECAY_RTTS`` smoothed round trips without a spurious loss, both
step back down by one.

The packet threshold is off by default, as RACK (RFC 8985) adapts only its
time window: on a seeded 5 % loss, 2 ms jitter path, widening it cut plain
retransmissions further but doubled those of FEC-protected transfers (losses
found later leave the peer less to rebuild), while time-only widening
improved both.

Persistent congestion (RFC 9002 section 7.6) is judged per batch of losses:
a run of consecutive packet numbers, all lost, all sent after the first RTT
sample, spanning more than ``K_PERSISTENT_CONGESTION_THRESHOLD`` PTOs. A gap
in the run (a packet acknowledged, or an ACK-only packet recovery never saw)
ends it, which errs on the side of not collapsing the window.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from seam.ecn import EcnValidator

if TYPE_CHECKING:
    from seam.congestion.base import CongestionController
    from seam.packet import EcnCounts

K_PACKET_THRESHOLD = 3  # packets, RFC 9002 section 6.1.1
K_TIME_THRESHOLD = 9 / 8  # of an RTT, RFC 9002 section 6.1.2
K_GRANULARITY = 0.001  # seconds, RFC 9002 section 6.1.2
K_INITIAL_RTT = 0.333  # seconds, RFC 9002 section 6.2.2
PTO_PROBES = 2  # probe packets per PTO, RFC 9002 section 6.2.4
MAX_PTO_BACKOFF = 6  # cap the exponential backoff at 2**6 x PTO
# Past two PTOs the backoff also stops growing at this many seconds, so a path that
# comes back after an outage is noticed within it (section 7.2 of docs/protocol.md).
MAX_PTO_PERIOD = 0.25
K_PERSISTENT_CONGESTION_THRESHOLD = 3  # PTOs, RFC 9002 section 7.6.1
# Reordering adaptation (RFC 9002 section 6.1 allows adapting; policy in the spirit of RFC 8985 section 6.2)
TIME_THRESHOLD_STEPS = (K_TIME_THRESHOLD, 5 / 4, 3 / 2, 2.0)  # of an RTT, widened per spurious loss
MAX_PACKET_THRESHOLD = 10  # packets, cap of the adapted packet threshold
REORDERING_DECAY_RTTS = 16  # smoothed RTTs without spurious loss per step back (RFC 8985 6.2 uses 16)
LOST_MEMORY = 1024  # packets declared lost whose numbers are kept to recognise a late ACK


@dataclass(slots=True)
class SentPacket:
    packet_number: int
    time_sent: float
    size: int
    ack_eliciting: bool
    in_flight: bool
    frames: list[Any] = field(default_factory=list)  # opaque to recovery: retransmission records
    # A path MTU probe (seam.pmtud): its loss says the packet was too big, not that the path
    # is congested, so it reaches neither the controller nor the loss figures.
    is_mtu_probe: bool = False
    # Delivery state when this packet left (draft-ietf-ccwg-bbr-04 section 4.1.2.1.2), stamped by
    # LossRecovery.on_packet_sent: bytes delivered, the time of that, the send time of the newest
    # packet delivered by then, whether the sender was application-limited, bytes in flight
    # including this packet, and bytes declared lost so far.
    delivered: int = 0
    delivered_time: float = 0.0
    first_sent_time: float = 0.0
    is_app_limited: bool = False
    tx_in_flight: int = 0
    lost: int = 0
    ecn: bool = False  # sent with ECT(0) (docs/protocol.md 7.6)
    delivered_ce: int = 0  # LossRecovery.delivered_ce when it left


@dataclass(slots=True)  # not frozen: built per ACK, and frozen construction costs 3x
class RateSample:
    """What one ACK says about the path (draft-ietf-ccwg-bbr-04 sections 2.2 and 4.1.2.1.3).

    Made from the newest packet the ACK newly acknowledges. ``delivery_rate``
    is 0.0 when the sampling interval was shorter than the minimum RTT, i.e.
    too short to trust (section 4.1.2.3).
    """

    delivery_rate: float  # bytes per second
    delivered: int  # bytes delivered over the sampling interval
    interval: float  # seconds, max(send_elapsed, ack_elapsed)
    prior_delivered: int  # the newest acked packet's ``delivered`` stamp
    send_time: float  # when the newest acked packet was sent
    rtt: float  # seconds from that send to this ACK (no ack-delay adjustment)
    is_app_limited: bool
    tx_in_flight: int  # bytes in flight when the newest acked packet was sent
    lost: int  # bytes declared lost between that send and this ACK
    newly_acked: int  # bytes this ACK newly acknowledged
    newly_lost: int  # bytes this ACK caused to be declared lost
    delivered_total: int  # bytes delivered over the connection's lifetime
    bytes_in_flight: int  # after this ACK
    # ECN (Linux tcp_rate.c's rs->delivered_ce, in bytes): CE-marked bytes delivered over the
    # sampling interval, and those this ACK reported. Estimated from packet counts, see on_ack_received.
    ce_delivered: int = 0
    newly_ce: int = 0


class RttEstimator:
    """RFC 9002 section 5: min, smoothed and variance of the round-trip time."""

    __slots__ = ("has_sample", "latest_rtt", "min_rtt", "rttvar", "smoothed_rtt")

    def __init__(self, initial_rtt: float = K_INITIAL_RTT) -> None:
        self.has_sample = False
        self.latest_rtt = 0.0
        self.min_rtt = float("inf")
        self.smoothed_rtt = initial_rtt
        self.rttvar = initial_rtt / 2

    def update(self, latest_rtt: float, ack_delay: float, max_ack_delay: float) -> None:
        self.latest_rtt = latest_rtt
        if not self.has_sample:
            self.has_sample = True
            self.min_rtt = latest_rtt
            self.smoothed_rtt = latest_rtt
            self.rttvar = latest_rtt / 2
            return
        self.min_rtt = min(self.min_rtt, latest_rtt)
        ack_delay = min(ack_delay, max_ack_delay)
        adjusted = latest_rtt - ack_delay if latest_rtt >= self.min_rtt + ack_delay else latest_rtt
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.smoothed_rtt - adjusted)
        self.smoothed_rtt = 0.875 * self.smoothed_rtt + 0.125 * adjusted

    def pto(self, max_ack_delay: float) -> float:
        return self.smoothed_rtt + max(4 * self.rttvar, K_GRANULARITY) + max_ack_delay


class LossRecovery:
    """Tracks ack-eliciting packets in flight, detects loss, arms the PTO."""

    def __init__(
        self,
        *,
        congestion: CongestionController,
        max_ack_delay: float = 0.025,
        initial_rtt: float = K_INITIAL_RTT,
        adapt_packet_threshold: bool = False,
        ecn: bool = True,
    ) -> None:
        self.congestion = congestion
        self.ecn = EcnValidator(enabled=ecn)  # RFC 9000 13.4.2: may our packets carry ECT(0)?
        self.adapt_packet_threshold = adapt_packet_threshold
        self.max_ack_delay = max_ack_delay
        self.rtt = RttEstimator(initial_rtt)
        self._sent: dict[int, SentPacket] = {}  # insertion order == packet-number order
        self.bytes_in_flight = 0
        self.largest_acked = -1
        self.pto_count = 0
        self.packets_lost = 0
        self._loss_time: float | None = None
        self._last_ack_eliciting_time = 0.0
        self._first_rtt_sample_time: float | None = None  # RFC 9002 section 7.6.2
        # reordering adaptation: see the module docstring
        self.packet_threshold = K_PACKET_THRESHOLD
        self._time_step = 0  # index into TIME_THRESHOLD_STEPS
        self.packets_spuriously_lost = 0
        self._reordering_changed = 0.0  # when the thresholds last widened or decayed
        # recently lost packet number -> its reordering depth (largest acked - pn) when declared lost
        self._recently_lost: OrderedDict[int, int] = OrderedDict()  # pn -> reordering depth, oldest first
        self._lost_numbers: list[int] = []  # the same packet numbers, sorted: found by bisection per ACK
        # delivery-rate estimation (draft-ietf-ccwg-bbr-04 section 4.1.2.1.1)
        self.delivered = 0  # bytes acknowledged over the connection's lifetime
        self.delivered_time = 0.0  # when ``delivered`` last grew
        self.first_sent_time = 0.0  # send time of the newest packet delivered (or of the first after idle)
        self.lost_bytes = 0  # bytes declared lost over the connection's lifetime (MTU probes aside)
        self.persistent_congestion_count = 0  # times persistent congestion was declared
        self.app_limited = 0  # ``delivered`` mark ending an application-limited bubble; 0 when none
        self.delivered_ce = 0  # bytes acknowledged with a CE mark (estimated, see on_ack_received)

    @property
    def time_threshold(self) -> float:
        """The current multiple of an RTT after which an unacknowledged packet is lost."""
        return TIME_THRESHOLD_STEPS[self._time_step]

    @property
    def packets_in_flight(self) -> int:
        return len(self._sent)

    def can_send(self, size: int) -> bool:
        return self.bytes_in_flight + size <= self.congestion.congestion_window

    def on_packet_sent(self, packet: SentPacket, now: float) -> None:
        self._sent[packet.packet_number] = packet
        if self.bytes_in_flight == 0:
            # Nothing in flight: the sampling interval of this flight starts now.
            self.first_sent_time = self.delivered_time = now
        packet.delivered = self.delivered
        packet.delivered_time = self.delivered_time
        packet.first_sent_time = self.first_sent_time
        packet.is_app_limited = self.app_limited != 0
        packet.lost = self.lost_bytes
        packet.delivered_ce = self.delivered_ce
        if packet.ecn:
            self.ecn.on_tracked_sent()
        if packet.in_flight:
            self.bytes_in_flight += packet.size
        packet.tx_in_flight = self.bytes_in_flight
        self._last_ack_eliciting_time = now
        self.congestion.on_packet_sent(packet, self.bytes_in_flight, now)

    def on_app_limited(self) -> None:
        """The sender ran out of data to send with room left in the window.

        Marks every packet sent until the current flight is delivered as
        application-limited, so its rate sample does not lower a bandwidth
        estimate (draft-ietf-ccwg-bbr-04 section 4.1.2.4, CheckIfApplicationLimited).
        """
        if self.bytes_in_flight < self.congestion.congestion_window:
            self.app_limited = (self.delivered + self.bytes_in_flight) or 1

    def on_ack_received(
        self,
        ranges: Iterable[tuple[int, int]],
        ack_delay: float,
        now: float,
        ecn: EcnCounts | None = None,
    ) -> tuple[list[SentPacket], list[SentPacket]]:
        """Process inclusive (smallest, largest) ranges; returns (newly acked, newly lost).

        ``ecn`` holds the counts of an ACK_ECN frame (None for a plain ACK). A
        validated increase of the CE count is a congestion signal (RFC 9002
        section 7.1): the controller hears it through ``on_ecn_ce`` after the
        ACK's losses, and in the rate sample as CE-marked bytes. ECN counts are
        per packet, while delivery is in bytes: the CE marks are converted at
        the mean size of the packets the ACK newly acknowledges.
        """
        sent = self._sent
        acked: list[SentPacket] = []
        widened = False
        if self._recently_lost:
            ranges = list(ranges)
            widened = self._detect_spurious_losses(ranges, now)
        if not sent:
            return acked, []
        floor = next(iter(sent))
        largest_in_frame = -1
        for low, high in ranges:
            largest_in_frame = max(largest_in_frame, high)
            for pn in range(max(low, floor), high + 1):
                packet = sent.pop(pn, None)
                if packet is not None:
                    acked.append(packet)
        if not acked:
            if not widened:
                return acked, []
            lost = self._detect_lost(now)  # re-arm the loss timer for the wider threshold
            if lost:
                self._report_lost(lost, now)
            return acked, lost
        acked.sort(key=lambda p: p.packet_number)
        largest_newly = acked[-1]
        largest_advanced = largest_in_frame > self.largest_acked
        if largest_advanced:
            self.largest_acked = largest_in_frame
        if largest_newly.packet_number == largest_in_frame:
            self.rtt.update(now - largest_newly.time_sent, ack_delay, self.max_ack_delay)
            if self._first_rtt_sample_time is None:
                self._first_rtt_sample_time = now
        self._decay_reordering(now)
        newly_acked = 0
        newly_acked_marked = 0
        for packet in acked:
            newly_acked += packet.size
            if packet.in_flight:
                self.bytes_in_flight -= packet.size
            if packet.ecn:
                newly_acked_marked += 1
        self.pto_count = 0
        lost_before = self.lost_bytes
        lost = self._detect_lost(now)
        # UpdateRateSample for the newest packet (the highest number is the latest sent).
        self.delivered += newly_acked
        self.delivered_time = now
        self.first_sent_time = largest_newly.time_sent
        if self.app_limited and self.delivered > self.app_limited:
            self.app_limited = 0  # the bubble has left the pipe
        congestion = self.congestion
        congestion.on_packets_acked(acked, now, self.rtt)
        if lost:
            self._report_lost(lost, now)
        newly_ce = 0
        if ecn is not None or newly_acked_marked:
            ce_marks = self.ecn.on_ack(
                ecn, newly_acked_marked=newly_acked_marked, largest_advanced=largest_advanced
            )
            if ce_marks:
                newly_ce = min(ce_marks * newly_acked // len(acked), newly_acked)
                self.delivered_ce += newly_ce
                congestion.on_ecn_ce(ce_marks, largest_newly.time_sent, now)
        if congestion.wants_rate_samples:
            congestion.on_rate_sample(
                self._rate_sample(largest_newly, newly_acked, self.lost_bytes - lost_before, newly_ce, now),
                now,
                self.rtt,
            )
        return acked, lost

    def _rate_sample(
        self, newest: SentPacket, newly_acked: int, newly_lost: int, newly_ce: int, now: float
    ) -> RateSample:
        """GenerateRateSample (draft-ietf-ccwg-bbr-04 section 4.1.2.3)."""
        send_elapsed = newest.time_sent - newest.first_sent_time
        ack_elapsed = now - newest.delivered_time
        interval = max(send_elapsed, ack_elapsed)
        delivered = self.delivered - newest.delivered
        rate = 0.0
        if interval > 0 and interval >= self.rtt.min_rtt:  # shorter intervals are not reliable
            rate = delivered / interval
        return RateSample(
            delivery_rate=rate,
            delivered=delivered,
            interval=interval,
            prior_delivered=newest.delivered,
            send_time=newest.time_sent,
            rtt=now - newest.time_sent,
            is_app_limited=newest.is_app_limited,
            tx_in_flight=newest.tx_in_flight,
            lost=self.lost_bytes - newest.lost,
            newly_acked=newly_acked,
            newly_lost=newly_lost,
            delivered_total=self.delivered,
            bytes_in_flight=self.bytes_in_flight,
            ce_delivered=self.delivered_ce - newest.delivered_ce,
            newly_ce=newly_ce,
        )

    def _report_lost(self, lost: list[SentPacket], now: float) -> None:
        """Tell the controller about a batch of losses, and about persistent congestion if it is one.

        Lost MTU probes are left out (RFC 8899 section 3, item 7).
        """
        if any(p.is_mtu_probe for p in lost):
            lost = [p for p in lost if not p.is_mtu_probe]
            if not lost:
                return
        self.congestion.on_packets_lost(lost, now, self.rtt)
        if self._in_persistent_congestion(lost):
            self.persistent_congestion_count += 1
            self.congestion.on_persistent_congestion(now)

    def _in_persistent_congestion(self, lost: list[SentPacket]) -> bool:
        """RFC 9002 section 7.6.2, over runs of consecutive packet numbers in one batch of losses."""
        first_sample = self._first_rtt_sample_time
        if first_sample is None or len(lost) < 2:
            return False
        duration = self.rtt.pto(self.max_ack_delay) * K_PERSISTENT_CONGESTION_THRESHOLD
        start: SentPacket | None = None
        previous = -2
        for packet in lost:  # in packet-number order
            if not packet.ack_eliciting or packet.time_sent <= first_sample:
                start, previous = None, -2
                continue
            if start is None or packet.packet_number != previous + 1:
                start = packet
            elif packet.time_sent - start.time_sent > duration:
                return True
            previous = packet.packet_number
        return False

    def _detect_spurious_losses(self, ranges: list[tuple[int, int]], now: float) -> bool:
        """Widen the reordering thresholds when a packet declared lost is acknowledged after all.

        Returns whether they widened.
        """
        recently_lost = self._recently_lost
        numbers = self._lost_numbers
        depth = -1
        for low, high in ranges:  # O(log n) per range: an ACK repeats up to 32 ranges, most with nothing
            start = bisect_left(numbers, low)
            end = bisect_right(numbers, high, start)
            if start == end:
                continue
            for pn in numbers[start:end]:
                depth = max(depth, recently_lost.pop(pn))
                self.packets_spuriously_lost += 1
            del numbers[start:end]
        if depth < 0:
            return False
        self._time_step = min(self._time_step + 1, len(TIME_THRESHOLD_STEPS) - 1)
        if self.adapt_packet_threshold:
            self.packet_threshold = min(max(self.packet_threshold, depth + 1), MAX_PACKET_THRESHOLD)
        self._reordering_changed = now
        return True

    def _decay_reordering(self, now: float) -> None:
        """Step the thresholds back towards the RFC 9002 ones after a quiet spell."""
        if self._time_step == 0 and self.packet_threshold == K_PACKET_THRESHOLD:
            return
        if now - self._reordering_changed < REORDERING_DECAY_RTTS * self.rtt.smoothed_rtt:
            return
        self._time_step = max(self._time_step - 1, 0)
        self.packet_threshold = max(self.packet_threshold - 1, K_PACKET_THRESHOLD)
        self._reordering_changed = now

    def _loss_delay(self) -> float:
        rtt = self.rtt
        return max(self.time_threshold * max(rtt.latest_rtt, rtt.smoothed_rtt), K_GRANULARITY)

    def _detect_lost(self, now: float) -> list[SentPacket]:
        """RFC 9002 6.1: packet and time thresholds.

        Both only grow with age, so the walk stops at the first survivor.
        """
        self._loss_time = None
        lost: list[SentPacket] = []
        loss_delay = self._loss_delay()
        largest = self.largest_acked
        packet_threshold = self.packet_threshold
        sent = self._sent
        for pn, packet in sent.items():
            if pn > largest:
                break
            # One expression for both the test and the timer, so a timer firing
            # at exactly ``loss_time`` always finds the packet lost.
            deadline = packet.time_sent + loss_delay
            if deadline <= now or largest - pn >= packet_threshold:
                lost.append(packet)
            else:
                self._loss_time = deadline
                break
        recently_lost = self._recently_lost
        marked = 0
        for packet in lost:
            del sent[packet.packet_number]
            if packet.in_flight:
                self.bytes_in_flight -= packet.size
            if packet.is_mtu_probe:
                continue  # too big, or lost: neither is reordering nor congestion (nor ECN's business)
            marked += packet.ecn
            recently_lost[packet.packet_number] = largest - packet.packet_number
            insort(self._lost_numbers, packet.packet_number)
            self.lost_bytes += packet.size
            self.packets_lost += 1
        while len(recently_lost) > LOST_MEMORY:
            self._forget_number(recently_lost.popitem(last=False)[0])
        if marked:
            self.ecn.on_marked_lost(marked)
        return lost

    def forget_lost(self, packet_number: int) -> None:
        """Do not read a later ACK of this lost packet as reordering.

        For packets whose loss something else may repair (a FEC block the peer
        can decode): their ACK then means recovered, not spuriously lost.
        """
        if self._recently_lost.pop(packet_number, None) is not None:
            self._forget_number(packet_number)

    def _forget_number(self, packet_number: int) -> None:
        numbers = self._lost_numbers
        index = bisect_left(numbers, packet_number)
        if index < len(numbers) and numbers[index] == packet_number:
            del numbers[index]

    def get_loss_detection_timer(self) -> float | None:
        if self._loss_time is not None:
            return self._loss_time
        if not self._sent:
            return None
        return self._last_ack_eliciting_time + self.pto_period()

    def pto_period(self) -> float:
        """The PTO, backed off per unanswered probe: doubling, but never beyond
        ``max(2 x PTO, MAX_PTO_PERIOD)``, so probes keep coming a few times a second
        through an outage instead of thinning out to one a minute."""
        base = self.rtt.pto(self.max_ack_delay)
        backed_off = base * (1 << min(self.pto_count, MAX_PTO_BACKOFF))
        return min(backed_off, max(2 * base, MAX_PTO_PERIOD))

    def on_loss_detection_timeout(self, now: float) -> tuple[list[SentPacket], int]:
        """Returns (packets now deemed lost, probe packets to send now)."""
        if self._loss_time is not None and now >= self._loss_time:
            lost = self._detect_lost(now)
            if lost:
                self._report_lost(lost, now)
            return lost, 0
        if not self._sent:
            return [], 0
        self.pto_count += 1
        self._last_ack_eliciting_time = now
        return [], PTO_PROBES

    def discard_all(self) -> list[SentPacket]:
        packets = list(self._sent.values())
        self._sent.clear()
        self.bytes_in_flight = 0
        self._loss_time = None
        return packets
