"""Loss detection (RACK-TLP, RFC 8985, on QUIC packet numbers), RTT and delivery-rate estimation.

Only ack-eliciting packets are tracked: an ACK-only packet is never
retransmitted and does not count towards bytes in flight. Sent packets live
in insertion (packet-number) order. An ACK costs what it newly says: ranges
repeated from the previous ACK are skipped, and below the largest number
acknowledged before, only the packets still in flight there are matched.

RACK (RFC 8985 section 6) reasons about time, not counts: once a packet is
acknowledged, every packet sent before it should have arrived within
``rack_rtt`` (the RTT of the most recently sent packet acknowledged so far)
plus a reordering window ``reo_wnd``. QUIC's packet numbers are never reused
(data lost is resent in a new packet), so the RFC's transmit-timestamp order
is simply packet-number order, a retransmission is never ambiguous, and
"sent before RACK.xmit_ts" is a prefix of the sent queue: detection walks the
front of the queue only and stops at the first packet not yet due. The
reorder timer fires at that packet's deadline.

``reo_wnd`` is ``min(reo_wnd_mult x min_rtt / 4, smoothed_rtt)``, and 0 for a
packet while no reordering has been seen and either the sender is in
recovery or at least ``K_PACKET_THRESHOLD`` (DupThresh) packets sent after
it are acknowledged: the RFC 9002 packet threshold survives only in that
form. Reordering is seen when an ACK newly acknowledges a packet below the
largest already acknowledged. An ACK of a packet already declared lost (a
spurious loss: QUIC's DSACK) raises ``reo_wnd_mult`` instead, at most once
per round trip; 16 further round trips without one set it back to 1.

TLP (RFC 8985 section 7) is the probe timeout: 2 x smoothed RTT after the
last ack-eliciting packet (plus ``max_ack_delay`` when it is alone in
flight), never later than the RFC 9002 PTO, which stands in for TCP's RTO.
Its expiry asks for one probe; unanswered, the timeout backs off as RFC 9002
does (capped at ``MAX_PTO_PERIOD``) and asks for two probes each time. The
probe's ACK lets RACK declare the tail lost.

Delivery-rate estimation (draft-cheng-iccrg-delivery-rate-estimation, as
restated in draft-ietf-ccwg-bbr-04 section 4.1): every sent packet is stamped
with how much had been delivered, and when, at the moment it left; the ACK of
the newest packet then yields ``delivered / max(send_elapsed, ack_elapsed)``.
A controller that sets ``wants_rate_samples`` receives a :class:`RateSample`
per ACK that newly acknowledges data; the others pay for a few integer
additions only.

Persistent congestion (RFC 9002 section 7.6) is judged per batch of losses:
a run of consecutive packet numbers, all lost, all sent after the first RTT
sample, spanning more than ``K_PERSISTENT_CONGESTION_THRESHOLD`` PTOs. A gap
in the run (a packet acknowledged, or an ACK-only packet recovery never saw)
ends it, which errs on the side of not collapsing the window. It plays the
part of TCP's RTO in collapsing the window.

docs/protocol.md section 7.2 specifies all of this for other implementations.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from seam.ecn import EcnValidator

if TYPE_CHECKING:
    from seam.congestion.base import CongestionController
    from seam.packet import EcnCounts

K_PACKET_THRESHOLD = 3  # DupThresh of RFC 8985 section 6.2 (RFC 9002's kPacketThreshold)
K_GRANULARITY = 0.001  # seconds, RFC 9002 section 6.1.2
K_INITIAL_RTT = 0.333  # seconds, RFC 9002 section 6.2.2
# One probe on the first timeout (RFC 8985 section 7.3: the tail loss probe), two on each later one
# (RFC 9002 section 6.2.4 allows two): by then the path may be losing whole flights, as in an
# outage, and a second packet doubles the odds that one gets through.
TLP_PROBES = 1
PTO_PROBES = 2
MAX_PTO_BACKOFF = 6  # cap the exponential backoff at 2**6 x PTO
# Past two PTOs the backoff also stops growing at this many seconds, so a path that
# comes back after an outage is noticed within it (section 7.2 of docs/protocol.md).
MAX_PTO_PERIOD = 0.25
K_PERSISTENT_CONGESTION_THRESHOLD = 3  # PTOs, RFC 9002 section 7.6.1
REO_WND_FRACTION = 0.25  # reo_wnd is this share of min_rtt per reo_wnd_mult (RFC 8985 6.2: a quarter)
REO_WND_PERSIST = 16  # round trips without a spurious loss before reo_wnd_mult returns to 1 (RFC 8985 6.2)
LOST_MEMORY = 1024  # packets declared lost whose numbers are kept to recognise a late ACK

_PACKET_NUMBER = attrgetter("packet_number")


class SentPacket:
    """One packet in flight, as recovery and the controllers see it.

    A plain class with its own ``__init__``, not a dataclass: one is built per packet sent,
    and mypyc (setup.py) compiles this constructor but not a dataclass's generated one
    (590 -> 260 ns, timed from Python).
    """

    __slots__ = (
        "ack_eliciting",
        "delivered",
        "delivered_ce",
        "delivered_time",
        "ecn",
        "first_sent_time",
        "frames",
        "in_flight",
        "is_app_limited",
        "is_mtu_probe",
        "lost",
        "packet_number",
        "sent_index",
        "size",
        "time_sent",
        "tx_in_flight",
    )

    def __init__(
        self,
        packet_number: int,
        time_sent: float,
        size: int,
        ack_eliciting: bool,
        in_flight: bool,
        frames: list[Any] | None = None,
        is_mtu_probe: bool = False,
        *,
        ecn: bool = False,
    ) -> None:
        self.packet_number = packet_number
        self.time_sent = time_sent
        self.size = size
        self.ack_eliciting = ack_eliciting
        self.in_flight = in_flight
        self.frames: list[Any] = [] if frames is None else frames  # retransmission records, opaque here
        # A path MTU probe (seam.pmtud): its loss says the packet was too big, not that the path
        # is congested, so it reaches neither the controller nor the loss figures.
        self.is_mtu_probe = is_mtu_probe
        self.ecn = ecn  # sent with ECT(0) (docs/protocol.md 7.6)
        # Delivery state when this packet left (draft-ietf-ccwg-bbr-04 section 4.1.2.1.2), stamped by
        # LossRecovery.on_packet_sent: bytes delivered, the time of that, the send time of the newest
        # packet delivered by then, whether the sender was application-limited, bytes in flight
        # including this packet, and bytes declared lost so far.
        self.delivered = 0
        self.delivered_time = 0.0
        self.first_sent_time = 0.0
        self.is_app_limited = False
        self.tx_in_flight = 0
        self.lost = 0
        self.delivered_ce = 0  # LossRecovery.delivered_ce when it left
        self.sent_index = 0  # tracked packets sent before it (for DupThresh), stamped on send

    def __repr__(self) -> str:
        return (
            f"SentPacket(pn={self.packet_number}, sent={self.time_sent:.6f}, size={self.size},"
            f" ack_eliciting={self.ack_eliciting}, in_flight={self.in_flight}, mtu_probe={self.is_mtu_probe})"
        )


@dataclass(slots=True, init=False)  # not frozen: built per ACK, and frozen construction costs 3x
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
    ce_delivered: int
    newly_ce: int

    # init=False: mypyc compiles a written-out __init__, not the one dataclass generates (171 -> 30 ns)
    def __init__(
        self,
        *,
        delivery_rate: float,
        delivered: int,
        interval: float,
        prior_delivered: int,
        send_time: float,
        rtt: float,
        is_app_limited: bool,
        tx_in_flight: int,
        lost: int,
        newly_acked: int,
        newly_lost: int,
        delivered_total: int,
        bytes_in_flight: int,
        ce_delivered: int = 0,
        newly_ce: int = 0,
    ) -> None:
        self.delivery_rate = delivery_rate
        self.delivered = delivered
        self.interval = interval
        self.prior_delivered = prior_delivered
        self.send_time = send_time
        self.rtt = rtt
        self.is_app_limited = is_app_limited
        self.tx_in_flight = tx_in_flight
        self.lost = lost
        self.newly_acked = newly_acked
        self.newly_lost = newly_lost
        self.delivered_total = delivered_total
        self.bytes_in_flight = bytes_in_flight
        self.ce_delivered = ce_delivered
        self.newly_ce = newly_ce


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
    """Tracks ack-eliciting packets in flight, detects loss (RACK), arms the reorder timer or the TLP."""

    def __init__(
        self,
        *,
        congestion: CongestionController,
        max_ack_delay: float = 0.025,
        initial_rtt: float = K_INITIAL_RTT,
        ecn: bool = True,
    ) -> None:
        self.congestion = congestion
        self.ecn = EcnValidator(enabled=ecn)  # RFC 9000 13.4.2: may our packets carry ECT(0)?
        self.max_ack_delay = max_ack_delay
        self.rtt = RttEstimator(initial_rtt)
        self._sent: dict[int, SentPacket] = {}  # insertion order == packet-number order
        self._sent_count = 0  # tracked packets ever sent (SentPacket.sent_index of the next)
        self._largest_sent = -1
        self.bytes_in_flight = 0
        self.largest_acked = -1
        self.pto_count = 0
        self.packets_lost = 0
        self._rack_timer: float | None = None  # RFC 8985's reorder timer, when armed
        self._last_ack_eliciting_time = 0.0
        self._first_rtt_sample_time: float | None = None  # RFC 9002 section 7.6.2
        # RACK (RFC 8985 section 6.1): the most recently sent packet acknowledged so far
        self.rack_pn = -1  # RACK.end_seq: its packet number (send order is number order)
        self.rack_xmit_ts = 0.0  # RACK.xmit_ts: when it was sent
        self.rack_rtt = 0.0  # RACK.rtt: from its send to the ACK that acknowledged it
        self.reordering_seen = False  # RACK.reordering_seen; never cleared, as in the RFC
        self.reo_wnd_mult = 1  # RACK.reo_wnd_mult
        self._reo_wnd_persist = 0  # RACK.reo_wnd_persist, in round trips
        self._dsack_round = False  # the current round trip has raised reo_wnd_mult already
        self._round_end = 0  # a round trip ends when a packet numbered at least this is acknowledged
        self._recovery_end: int | None = None  # in recovery until a packet above this is acknowledged
        # spurious losses: see _detect_spurious_losses
        self.packets_spuriously_lost = 0
        self._recently_lost: OrderedDict[int, float] = OrderedDict()  # number -> time sent, oldest first
        self._lost_numbers: list[int] = []  # the same packet numbers, sorted: found by bisection per ACK
        self._ranges_seen: set[tuple[int, int]] = set()  # the previous ACK's ranges, all processed
        # delivery-rate estimation (draft-ietf-ccwg-bbr-04 section 4.1.2.1.1)
        self.delivered = 0  # bytes acknowledged over the connection's lifetime
        self.delivered_time = 0.0  # when ``delivered`` last grew
        self.first_sent_time = 0.0  # send time of the newest packet delivered (or of the first after idle)
        self.lost_bytes = 0  # bytes declared lost over the connection's lifetime (MTU probes aside)
        self.persistent_congestion_count = 0  # times persistent congestion was declared
        self.app_limited = 0  # ``delivered`` mark ending an application-limited bubble; 0 when none
        self.delivered_ce = 0  # bytes acknowledged with a CE mark (estimated, see on_ack_received)

    @property
    def packets_in_flight(self) -> int:
        return len(self._sent)

    @property
    def in_recovery(self) -> bool:
        """Since a loss, until a packet sent after it is acknowledged (RFC 9002 section 7.3.2's period)."""
        return self._recovery_end is not None

    @property
    def reo_wnd(self) -> float:
        """RACK's reordering window for a packet with fewer than DupThresh later packets acknowledged.

        RFC 8985 section 6.2 (RACK_update_reo_wnd): 0 in recovery until
        reordering is seen, else ``reo_wnd_mult`` quarters of the minimum
        RTT, never more than the smoothed RTT.
        """
        if not self.reordering_seen and self._recovery_end is not None:
            return 0.0
        rtt = self.rtt
        return min(self.reo_wnd_mult * rtt.min_rtt * REO_WND_FRACTION, rtt.smoothed_rtt)

    def can_send(self, size: int) -> bool:
        return self.bytes_in_flight + size <= self.congestion.congestion_window

    def on_packet_sent(self, packet: SentPacket, now: float) -> None:
        self._sent[packet.packet_number] = packet
        self._largest_sent = packet.packet_number
        packet.sent_index = self._sent_count
        self._sent_count += 1
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

        An ACK frame repeats most of the previous one's ranges; a range seen
        in the previous ACK holds nothing new (what it covered was acknowledged
        then, and a packet it covers can be neither sent nor declared lost
        since), so only the others are read.
        """
        if not isinstance(ranges, (list, tuple)):
            ranges = list(ranges)
        seen = self._ranges_seen
        fresh: list[tuple[int, int]] = []
        largest_in_frame = -1
        for span in ranges:
            if span[1] > largest_in_frame:
                largest_in_frame = span[1]
            if span not in seen:
                fresh.append(span)
        if largest_in_frame <= self._largest_sent:
            self._ranges_seen = set(ranges)
        else:  # reaching past the newest tracked packet: keep only ranges whose numbers were all sent
            self._ranges_seen = {span for span in ranges if span[1] <= self._largest_sent}
        if not fresh:
            return [], []
        widened = bool(self._recently_lost) and self._detect_spurious_losses(fresh, now)
        sent = self._sent
        acked: list[SentPacket] = []
        if sent:
            acked = self._newly_acked(fresh)
        if not acked:
            if not widened or not sent:
                return acked, []
            lost = self._detect_lost(now)  # re-arm the reorder timer for the wider window
            if lost:
                self._report_lost(lost, now)
            return acked, lost
        largest_newly = acked[-1]
        largest_before = self.largest_acked
        largest_advanced = largest_in_frame > largest_before
        if largest_advanced:
            self.largest_acked = largest_in_frame
        if largest_newly.packet_number == largest_in_frame:
            self.rtt.update(now - largest_newly.time_sent, ack_delay, self.max_ack_delay)
            if self._first_rtt_sample_time is None:
                self._first_rtt_sample_time = now
        self._rack_update(acked, largest_before, now)
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

    def _newly_acked(self, ranges: list[tuple[int, int]]) -> list[SentPacket]:
        """Remove and return, in packet-number order, the packets in flight that ``ranges`` cover.

        Above the largest number acknowledged before, every number is new and
        is looked up; below it, only the packets still in flight there (the
        holes, a short prefix of the queue) can be, so those are matched
        against the ranges instead of walking numbers acknowledged long ago.
        """
        sent = self._sent
        floor = next(iter(sent))
        above = self.largest_acked + 1
        holes: list[int] | None = None
        acked: list[SentPacket] = []
        for low, high in ranges:
            if high < floor:
                continue
            if low < above:
                if holes is None:
                    holes = []
                    for pn in sent:
                        if pn >= above:
                            break
                        holes.append(pn)
                top = min(high, above - 1)
                index = bisect_left(holes, low)
                while index < len(holes) and holes[index] <= top:
                    packet = sent.pop(holes[index], None)
                    if packet is not None:
                        acked.append(packet)
                    index += 1
            if high >= above:
                for pn in range(max(low, above, floor), high + 1):
                    packet = sent.pop(pn, None)
                    if packet is not None:
                        acked.append(packet)
        if len(ranges) > 1:  # one range yields its holes, then the numbers above: in order already
            acked.sort(key=_PACKET_NUMBER)
        return acked

    def _rack_update(self, acked: list[SentPacket], largest_before: int, now: float) -> None:
        """RFC 8985 section 6.2 steps 1-3, and the bookkeeping of round trips and recovery."""
        newest = acked[-1]
        pn = newest.packet_number
        if pn > self.rack_pn:  # RACK_update: only a packet sent after the current one moves RACK
            self.rack_pn = pn
            self.rack_xmit_ts = newest.time_sent
            self.rack_rtt = now - newest.time_sent
        if acked[0].packet_number < largest_before:
            # RACK_detect_reordering: delivered after a packet sent later. (Packets declared lost
            # have left the queue, so their late ACKs count in _detect_spurious_losses instead.)
            self.reordering_seen = True
        if self._recovery_end is not None and pn > self._recovery_end:
            self._recovery_end = None
        if pn >= self._round_end:
            self._end_round()

    def _end_round(self) -> None:
        """A round trip ended: reo_wnd_mult returns to 1 after REO_WND_PERSIST without a spurious loss."""
        self._round_end = self._largest_sent + 1
        if self._dsack_round:
            self._dsack_round = False
        elif self.reo_wnd_mult > 1:
            self._reo_wnd_persist -= 1
            if self._reo_wnd_persist <= 0:
                self.reo_wnd_mult = 1

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
        """Count acknowledged packets that had been declared lost, and widen the reordering window.

        QUIC's stand-in for RFC 8985's DSACK, and more exact: the late ACK
        names the very packet declared lost. ``reo_wnd_mult`` grows by one at
        most once per round trip. A spurious loss sets ``reordering_seen``
        only if its ACK came within 1.25 minimum RTTs of its sending, i.e. if
        the window that reordering_seen opens in recovery (a quarter of the
        minimum RTT) would have kept it from being declared lost; Linux too
        notes reordering when a retransmission proves needless. A packet
        later than that leaves DupThresh on: on a path delaying 1 % of packets
        by a round trip, turning it off slowed a 2 MB transfer by 13 %
        (docs/protocol.md 7.2). Returns whether the window widened.
        """
        recently_lost = self._recently_lost
        numbers = self._lost_numbers
        found = False
        # min_rtt plus the window reordering_seen opens
        reordered_within = self.rtt.min_rtt * (1 + REO_WND_FRACTION)
        for low, high in ranges:  # O(log n) per range
            start = bisect_left(numbers, low)
            end = start
            while end < len(numbers) and numbers[end] <= high:
                if now - recently_lost.pop(numbers[end]) <= reordered_within:
                    self.reordering_seen = True
                end += 1
            if end == start:
                continue
            self.packets_spuriously_lost += end - start
            del numbers[start:end]
            found = True
        if not found or self._dsack_round:
            return False
        self._dsack_round = True
        self.reo_wnd_mult += 1
        self._reo_wnd_persist = REO_WND_PERSIST
        self._round_end = self._largest_sent + 1  # the round trip that ends the DSACK round
        return True

    def _detect_lost(self, now: float) -> list[SentPacket]:
        """RACK_detect_loss (RFC 8985 section 6.2 step 5) over the packets sent before RACK's.

        A packet is lost once ``now >= time_sent + rack_rtt + reo_wnd``. The
        deadline only grows along the queue (later packets were sent later,
        and have no more packets acknowledged after them), so the walk stops
        at the first packet not yet due and arms the reorder timer at its
        deadline. Losses therefore always leave from the front of the queue,
        so the packets acknowledged after the i-th packet of the walk are all
        the packets resolved, less those resolved before it: O(1) each.
        """
        self._rack_timer = None
        sent = self._sent
        rack_pn = self.rack_pn
        if not sent or next(iter(sent)) >= rack_pn:
            return []
        rack_rtt = self.rack_rtt
        window = self.reo_wnd
        # DupThresh zeroes the window per packet only while no reordering has been seen
        dup_thresh = not self.reordering_seen and window > 0.0
        resolved = self._sent_count - len(sent)
        lost: list[SentPacket] = []
        for position, (pn, packet) in enumerate(sent.items()):
            if pn >= rack_pn:
                break
            if dup_thresh and resolved - packet.sent_index + position >= K_PACKET_THRESHOLD:
                deadline = packet.time_sent + rack_rtt
            else:
                deadline = packet.time_sent + rack_rtt + window
            # The same expression for the test and the timer, so a timer firing at
            # exactly the deadline always finds the packet lost.
            if deadline <= now:
                lost.append(packet)
            else:
                self._rack_timer = deadline
                break
        if not lost:
            return lost
        recently_lost = self._recently_lost
        numbers = self._lost_numbers
        marked = 0
        congestive = False
        for packet in lost:
            del sent[packet.packet_number]
            if packet.in_flight:
                self.bytes_in_flight -= packet.size
            if packet.is_mtu_probe:
                continue  # too big, or lost: neither is reordering nor congestion (nor ECN's business)
            congestive = True
            marked += packet.ecn
            recently_lost[packet.packet_number] = packet.time_sent
            if numbers and numbers[-1] > packet.packet_number:
                insort(numbers, packet.packet_number)  # not reached: losses leave in number order
            else:
                numbers.append(packet.packet_number)
            self.lost_bytes += packet.size
            self.packets_lost += 1
        if congestive and (self._recovery_end is None or lost[-1].packet_number > self._recovery_end):
            self._recovery_end = self._largest_sent  # RFC 9002 7.3.2: a loss sent after it starts anew
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
        if packet_number in self._recently_lost:
            del self._recently_lost[packet_number]
            self._forget_number(packet_number)

    def _forget_number(self, packet_number: int) -> None:
        numbers = self._lost_numbers
        index = bisect_left(numbers, packet_number)
        if index < len(numbers) and numbers[index] == packet_number:
            del numbers[index]

    def get_loss_detection_timer(self) -> float | None:
        """The reorder timer when RACK armed it, else the TLP (or backed-off probe) deadline."""
        if self._rack_timer is not None:
            return self._rack_timer
        if not self._sent:
            return None
        return self._last_ack_eliciting_time + self.pto_period()

    def pto_period(self) -> float:
        """How long after the last ack-eliciting packet the next probe is due.

        The first timeout is RFC 8985's TLP: 2 x smoothed RTT, plus
        ``max_ack_delay`` when a single packet is in flight (its ACK may be
        delayed), but never later than the RFC 9002 PTO, QUIC's RTO-equivalent
        (and the PTO itself before any RTT sample). Later ones back the PTO
        off by doubling, but never beyond ``max(2 x PTO, MAX_PTO_PERIOD)``, so
        probes keep coming a few times a second through an outage instead of
        thinning out to one a minute.
        """
        rtt = self.rtt
        base = rtt.pto(self.max_ack_delay)
        if self.pto_count == 0:
            if not rtt.has_sample:
                return base
            tlp = 2 * rtt.smoothed_rtt
            if len(self._sent) == 1:
                tlp += self.max_ack_delay
            return min(tlp, base)
        backed_off = base * (1 << min(self.pto_count, MAX_PTO_BACKOFF))
        return min(backed_off, max(2 * base, MAX_PTO_PERIOD))

    def on_loss_detection_timeout(self, now: float) -> tuple[list[SentPacket], int]:
        """Returns (packets now deemed lost, probe packets to send now)."""
        if self._rack_timer is not None and now >= self._rack_timer:
            lost = self._detect_lost(now)
            if lost:
                self._report_lost(lost, now)
            return lost, 0
        if not self._sent:
            return [], 0
        probes = TLP_PROBES if self.pto_count == 0 else PTO_PROBES
        self.pto_count += 1
        self._last_ack_eliciting_time = now
        return [], probes

    def newest_in_flight(self) -> Iterable[SentPacket]:
        """Packets in flight, newest first: what a tail loss probe may send again (RFC 8985 7.3)."""
        return reversed(self._sent.values())

    def discard_all(self) -> list[SentPacket]:
        packets = list(self._sent.values())
        self._sent.clear()
        self.bytes_in_flight = 0
        self._rack_timer = None
        self._ranges_seen = set()
        return packets
