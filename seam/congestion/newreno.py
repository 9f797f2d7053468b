"""NewReno (RFC 9002 section 7): slow start, congestion avoidance, one cut per recovery period."""

from __future__ import annotations

from typing import TYPE_CHECKING

from seam.congestion.base import CongestionController, register

if TYPE_CHECKING:
    from seam.recovery import RttEstimator, SentPacket


class NewReno(CongestionController):
    name = "newreno"

    def __init__(self, *, max_datagram_size: int = 1200) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self._acked_bytes = 0

    def on_packets_acked(self, packets: list[SentPacket], now: float, rtt: RttEstimator) -> None:
        for packet in packets:
            if packet.time_sent <= self._recovery_start:
                continue
            if self.ssthresh is None or self.congestion_window < self.ssthresh:
                self.congestion_window += packet.size
            else:
                self._acked_bytes += packet.size
                if self._acked_bytes >= self.congestion_window:
                    self._acked_bytes -= self.congestion_window
                    self.congestion_window += self.max_datagram_size

    def on_packets_lost(self, packets: list[SentPacket], now: float, rtt: RttEstimator) -> None:
        if packets:
            self.on_congestion_event(max(p.time_sent for p in packets), now)


register(NewReno)  # not a decorator: mypyc compiles only undecorated classes to native ones
