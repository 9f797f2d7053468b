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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from seam.congestion.base import CongestionController

K_PACKET_THRESHOLD = 3  # packets, RFC 9002 section 6.1.1
K_TIME_THRESHOLD = 9 / 8  # of an RTT, RFC 9002 section 6.1.2
K_GRANULARITY = 0.001  # seconds, RFC 9002 section 6.1.2
K_INITIAL_RTT = 0.333  # seconds, RFC 9002 section 6.2.2
PTO_PROBES = 2  # probe packets per PTO, RFC 9002 section 6.2.4
MAX_PTO_BACKOFF = 6  # cap the exponential backoff at 2**6 x PTO


@dataclass(slots=True)
class SentPacket:
    packet_number: int
    time_sent: float
    size: int
    ack_eliciting: bool
    in_flight: bool
    frames: list[Any] = field(default_factory=list)  # opaque to recovery: retransmission records
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


@dataclass(frozen=True, slots=True)
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
    ) -> None:
        self.congestion = congestion
        self.max_ack_delay = max_ack_delay
        self.rtt = RttEstimator(initial_rtt)
        self._sent: dict[int, SentPacket] = {}  # insertion order == packet-number order
        self.bytes_in_flight = 0
        self.largest_acked = -1
        self.pto_count = 0
        self.packets_lost = 0
        self._loss_time: float | None = None
        self._last_ack_eliciting_time = 0.0
        # delivery-rate estimation (draft-ietf-ccwg-bbr-04 section 4.1.2.1.1)
        self.delivered = 0  # bytes acknowledged over the connection's lifetime
        self.delivered_time = 0.0  # when ``delivered`` last grew
        self.first_sent_time = 0.0  # send time of the newest packet delivered (or of the first after idle)
        self.lost_bytes = 0  # bytes declared lost over the connection's lifetime
        self.app_limited = 0  # ``delivered`` mark ending an application-limited bubble; 0 when none

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
        self, ranges: Iterable[tuple[int, int]], ack_delay: float, now: float
    ) -> tuple[list[SentPacket], list[SentPacket]]:
        """Process inclusive (smallest, largest) ranges; returns (newly acked, newly lost)."""
        sent = self._sent
        acked: list[SentPacket] = []
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
            return acked, []
        acked.sort(key=lambda p: p.packet_number)
        largest_newly = acked[-1]
        if largest_in_frame > self.largest_acked:
            self.largest_acked = largest_in_frame
        if largest_newly.packet_number == largest_in_frame:
            self.rtt.update(now - largest_newly.time_sent, ack_delay, self.max_ack_delay)
        newly_acked = 0
        for packet in acked:
            newly_acked += packet.size
            if packet.in_flight:
                self.bytes_in_flight -= packet.size
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
            congestion.on_packets_lost(lost, now, self.rtt)
        if congestion.wants_rate_samples:
            congestion.on_rate_sample(
                self._rate_sample(largest_newly, newly_acked, self.lost_bytes - lost_before, now),
                now,
                self.rtt,
            )
        return acked, lost

    def _rate_sample(self, newest: SentPacket, newly_acked: int, newly_lost: int, now: float) -> RateSample:
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
        )

    def _loss_delay(self) -> float:
        rtt = self.rtt
        return max(K_TIME_THRESHOLD * max(rtt.latest_rtt, rtt.smoothed_rtt), K_GRANULARITY)

    def _detect_lost(self, now: float) -> list[SentPacket]:
        """RFC 9002 6.1: packet and time thresholds.

        Both only grow with age, so the walk stops at the first survivor.
        """
        self._loss_time = None
        lost: list[SentPacket] = []
        loss_delay = self._loss_delay()
        largest = self.largest_acked
        sent = self._sent
        for pn, packet in sent.items():
            if pn > largest:
                break
            # One expression for both the test and the timer, so a timer firing
            # at exactly ``loss_time`` always finds the packet lost.
            deadline = packet.time_sent + loss_delay
            if deadline <= now or largest - pn >= K_PACKET_THRESHOLD:
                lost.append(packet)
            else:
                self._loss_time = deadline
                break
        for packet in lost:
            del sent[packet.packet_number]
            self.lost_bytes += packet.size
            if packet.in_flight:
                self.bytes_in_flight -= packet.size
        self.packets_lost += len(lost)
        return lost

    def get_loss_detection_timer(self) -> float | None:
        if self._loss_time is not None:
            return self._loss_time
        if not self._sent:
            return None
        backoff = 1 << min(self.pto_count, MAX_PTO_BACKOFF)
        return self._last_ack_eliciting_time + self.rtt.pto(self.max_ack_delay) * backoff

    def on_loss_detection_timeout(self, now: float) -> tuple[list[SentPacket], int]:
        """Returns (packets now deemed lost, probe packets to send now)."""
        if self._loss_time is not None and now >= self._loss_time:
            lost = self._detect_lost(now)
            if lost:
                self.congestion.on_packets_lost(lost, now, self.rtt)
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
