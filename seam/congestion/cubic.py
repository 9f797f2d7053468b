"""CUBIC (RFC 9438), in bytes; window arithmetic in segments as the RFC writes it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from seam.congestion.base import CongestionController, register

if TYPE_CHECKING:
    from seam.recovery import RttEstimator, SentPacket

C_CUBIC = 0.4  # RFC 9438 section 5.1
BETA_CUBIC = 0.7  # RFC 9438 section 5.1
ALPHA_CUBIC = 3 * (1 - BETA_CUBIC) / (1 + BETA_CUBIC)  # RFC 9438 section 5.8


class Cubic(CongestionController):
    name = "cubic"

    def __init__(self, *, max_datagram_size: int = 1200) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self._epoch_start: float | None = None
        self.w_max = 0.0  # segments
        self.k = 0.0  # seconds
        self._w_est = 0.0  # segments
        self._cwnd_prior = 0.0  # segments, the window when ssthresh was last set (RFC 9438 section 4.3)
        self._cwnd_epoch = 0.0  # segments at the start of the epoch

    def w_cubic(self, t: float) -> float:
        """RFC 9438 equation 1: the window in segments, t seconds into the epoch."""
        return C_CUBIC * (t - self.k) ** 3 + self.w_max

    def on_packets_acked(self, packets: list[SentPacket], now: float, rtt: RttEstimator) -> None:
        mds = self.max_datagram_size
        for packet in packets:
            if packet.time_sent <= self._recovery_start:
                continue
            if self.ssthresh is None or self.congestion_window < self.ssthresh:
                self.congestion_window += packet.size  # slow start
                continue
            cwnd = self.congestion_window / mds
            if self._epoch_start is None:
                # Congestion avoidance entered without a loss (ssthresh from elsewhere).
                self._epoch_start = now
                self.w_max = cwnd
                self.k = 0.0
                self._w_est = cwnd
                self._cwnd_prior = cwnd
            t = now - self._epoch_start
            target = self.w_cubic(t + rtt.smoothed_rtt)
            target = min(max(target, cwnd), 1.5 * cwnd)  # RFC 9438 section 4.2
            acked_segments = packet.size / mds
            # RFC 9438 section 4.3: alpha is 1, Reno's own increase, once W_est is back at cwnd_prior.
            alpha = 1.0 if self._w_est >= self._cwnd_prior else ALPHA_CUBIC
            self._w_est += alpha * acked_segments / cwnd
            if self.w_cubic(t) < self._w_est:
                new = self._w_est  # Reno-friendly region
            else:
                new = cwnd + (target - cwnd) / cwnd * acked_segments  # RFC 9438 section 4.4
            self.congestion_window = max(int(new * mds), self.congestion_window)

    def on_persistent_congestion(self, now: float) -> None:
        """Like a timeout (RFC 9438 section 4.8): the next congestion avoidance stage starts a fresh
        epoch, with K = 0 and W_max the window at its start."""
        super().on_persistent_congestion(now)
        self._epoch_start = None

    def on_packets_lost(self, packets: list[SentPacket], now: float, rtt: RttEstimator) -> None:
        if packets:
            self.on_congestion_event(max(p.time_sent for p in packets), now)

    def on_congestion_event(self, sent_time: float, now: float) -> None:
        """RFC 9438 section 4.6: multiplicative decrease by beta, once per recovery period (loss or CE)."""
        if self.in_recovery(sent_time):
            return
        self._recovery_start = now
        mds = self.max_datagram_size
        cwnd = self.congestion_window / mds
        self._cwnd_prior = cwnd
        # RFC 9438 section 4.7: fast convergence.
        self.w_max = cwnd * (1 + BETA_CUBIC) / 2 if cwnd < self.w_max else cwnd
        new = max(cwnd * BETA_CUBIC, self.minimum_window / mds)
        self.congestion_window = int(new * mds)
        self.ssthresh = self.congestion_window
        self.k = ((self.w_max - new) / C_CUBIC) ** (1 / 3) if self.w_max > new else 0.0  # RFC 9438 eq. 2
        self._epoch_start = now
        self._w_est = new


register(Cubic)  # not a decorator: mypyc compiles only undecorated classes to native ones
