"""Pacing: spread each window over a round trip instead of sending it in one burst.

Theory of operation
-------------------
A :class:`Pacer` is a token bucket counted in bytes, the "leaky bucket"
RFC 9002 section 7.7 suggests. It refills at the pacing rate and holds at most
a burst of :data:`K_BURST_PACKETS` full-sized datagrams (RFC 9002's initial window,
the burst RFC 9002 section 7.7 allows), or :data:`K_BURST_INTERVAL` worth of
sending at the pacing rate when that is more. The send path asks
:meth:`Pacer.next_send_time` before each paced packet: ``None`` means a
full-sized datagram may leave now, a float is when the next may. Each paced
packet is then charged with :meth:`Pacer.on_packet_sent`.

Why the time-based floor on the burst: one ``datagrams_to_send(now)`` call
sees one ``now``, so it can never send more than one bucketful, and the
driver's timers fire late by up to a millisecond or so (trio's epoll timers
have 1 ms resolution). A fixed 10-datagram bucket would therefore cap a paced
sender at about 10 datagrams per millisecond (12 MB/s), however high its rate.
RFC 9002 section 7.7 allows such deviations "over time periods that are much
shorter than an RTT"; 2 ms of sending is that, and at rates under 6 MB/s the
10-datagram limit is the one that applies.

Like the rest of the core, the pacer never reads a clock: time is an argument,
and a connection that is held back reports the pacer's time through its
``get_timer()`` so its driver wakes up then. When held back, the pacer asks to
be woken once a small quantum of tokens has built up (about 1 ms of sending,
at most half the bucket) rather than after every single datagram, which bounds
the wake-ups per second without ever letting the bucket overflow in between.

The rate comes from :func:`pacing_rate_for`: the controller's own
``pacing_rate`` (BBR), else N x cwnd / smoothed RTT for window-based
controllers (RFC 9002 section 7.7). ACK-only and CLOSE packets, handshake
flights and PTO probes are not held back by the pacer (the caller decides).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seam.congestion.base import CongestionController
    from seam.recovery import RttEstimator

K_BURST_PACKETS = 10  # datagrams sent back to back at most; RFC 9002's initial window (section 7.7)
K_BURST_INTERVAL = 0.002  # seconds of sending at the pacing rate the bucket may hold, if more than that
K_PACING_GAIN = 1.25  # N for window-based controllers in congestion avoidance, RFC 9002 section 7.7
K_PACING_GAIN_SLOW_START = 2.0  # N in slow start, where the window doubles per RTT (Linux's default ratio)
K_WAKE_QUANTUM = 0.001  # seconds of sending to accumulate before a held-back sender is woken
K_EPSILON = 1e-6  # bytes: rounding slack, so a wake-up at the computed time always finds the tokens


class Pacer:
    """A token bucket in bytes; see the module docstring.

    A pacer without a rate (``rate is None``) never holds anything back and
    keeps its bucket full, so pacing resumes with at most one burst.
    """

    __slots__ = ("_burst_interval", "_last", "_tokens", "burst", "max_datagram_size", "min_burst", "rate")

    def __init__(
        self,
        *,
        max_datagram_size: int = 1200,
        burst_packets: int = K_BURST_PACKETS,
        burst_interval: float = K_BURST_INTERVAL,
    ) -> None:
        if burst_packets < 1:
            raise ValueError("the burst must allow at least one datagram")
        self.max_datagram_size = max_datagram_size
        self.min_burst = burst_packets * max_datagram_size  # bytes
        self._burst_interval = burst_interval
        self.burst = float(self.min_burst)  # bytes the bucket holds at the current rate
        self.rate: float | None = None  # bytes per second
        self._tokens = self.burst  # bytes that may leave now
        self._last = float("-inf")  # time of the last refill

    @property
    def tokens(self) -> float:
        """Bytes that may be sent at the time of the last call (for tests and statistics)."""
        return self._tokens

    def set_rate(self, rate: float | None, now: float) -> None:
        """Pace at ``rate`` bytes per second from ``now`` on (None or 0: stop pacing)."""
        self._refill(now)  # tokens earned so far were earned at the old rate
        if rate is None or rate <= 0:
            self.rate = None
            self.burst = float(self.min_burst)
            self._tokens = self.burst
        else:
            self.rate = rate
            self.burst = max(float(self.min_burst), rate * self._burst_interval)
            if self._tokens > self.burst:
                self._tokens = self.burst

    def _refill(self, now: float) -> None:
        if now > self._last:
            rate = self.rate
            if rate is not None:
                tokens = self._tokens + (now - self._last) * rate
                self._tokens = tokens if tokens < self.burst else self.burst
            self._last = now

    def next_send_time(self, now: float) -> float | None:
        """None if a full-sized datagram may be sent at ``now``, else the time one may."""
        rate = self.rate
        if rate is None:
            return None
        self._refill(now)
        size = self.max_datagram_size
        tokens = self._tokens
        if tokens + K_EPSILON >= size:
            return None
        quantum = min(max(size, rate * K_WAKE_QUANTUM), max(size, self.burst / 2))
        return now + (quantum - tokens) / rate

    def on_packet_sent(self, now: float, size: int) -> None:
        """Charge a packet that was just sent (a probe sent past the pacer may leave a debt)."""
        if self.rate is None:
            return
        self._refill(now)
        self._tokens = max(self._tokens - size, -self.burst)


def window_pacing_rate(congestion_window: int, smoothed_rtt: float, *, slow_start: bool) -> float | None:
    """RFC 9002 section 7.7: rate = N x congestion_window / smoothed_rtt, in bytes per second."""
    if smoothed_rtt <= 0:
        return None
    gain = K_PACING_GAIN_SLOW_START if slow_start else K_PACING_GAIN
    return gain * congestion_window / smoothed_rtt


def pacing_rate_for(congestion: CongestionController, rtt: RttEstimator) -> float | None:
    """The rate to pace at: the controller's own, else derived from its window."""
    rate = congestion.pacing_rate(rtt)
    if rate is not None:
        return rate
    return window_pacing_rate(
        congestion.congestion_window, rtt.smoothed_rtt, slow_start=congestion.in_slow_start
    )
