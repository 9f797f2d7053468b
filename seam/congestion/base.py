"""The congestion-controller plug-in interface and its name registry."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:
    import random

    from seam.recovery import RateSample, RttEstimator, SentPacket

K_MINIMUM_WINDOW_PACKETS = 2  # RFC 9002 section 7.2
K_LOSS_REDUCTION_FACTOR = 0.5  # RFC 9002 section 7.2
# Chromium's and quic-go's initial window, not RFC 9002's 10 packets (docs/protocol.md 7.3):
# Seam paces from the first packet, at a rate set by the handshake's RTT sample.
K_INITIAL_WINDOW_PACKETS = 32
K_INITIAL_WINDOW_CAP = K_INITIAL_WINDOW_PACKETS * 1472  # bytes: RFC 9002's 14720 (10 x 1472) scaled


def initial_window(max_datagram_size: int) -> int:
    """RFC 9002 section 7.2's formula with 32 packets: min(32 * mds, max(47104, 2 * mds))."""
    return min(K_INITIAL_WINDOW_PACKETS * max_datagram_size, max(K_INITIAL_WINDOW_CAP, 2 * max_datagram_size))


_ABSTRACT_METHODS = ("on_packets_acked", "on_packets_lost")


def _refuse_abstract(cls: type) -> None:
    """abc's own check, which classes compiled by mypyc (setup.py) skip."""
    missing = [
        name
        for name in _ABSTRACT_METHODS
        if not any(name in vars(klass) for klass in cls.__mro__ if klass is not CongestionController)
    ]
    if missing:
        raise TypeError(f"can't instantiate {cls.__name__}: it does not implement {', '.join(missing)}")


# Compiled with the rest of the core (setup.py), yet open to controllers written in plain Python.
@mypyc_attr(allow_interpreted_subclasses=True)
class CongestionController(abc.ABC):
    """Decides how many bytes may be in flight; fed by :class:`seam.recovery.LossRecovery`.

    Per ACK, recovery calls ``on_packets_acked``, then ``on_packets_lost`` (if
    the ACK revealed losses), then ``on_ecn_ce`` (if it reported new CE marks),
    then ``on_rate_sample`` (only for controllers that set
    ``wants_rate_samples``). Window-based controllers implement the first two;
    model-based ones (BBR) mostly the last, and also say how fast to pace
    through ``pacing_rate``.
    """

    name: ClassVar[str]
    wants_rate_samples: ClassVar[bool] = False  # build a RateSample per ACK for on_rate_sample

    def __init__(self, *, max_datagram_size: int = 1200) -> None:
        _refuse_abstract(type(self))
        self.max_datagram_size = max_datagram_size
        self.congestion_window = initial_window(max_datagram_size)
        self.ssthresh: int | None = None
        self.minimum_window = K_MINIMUM_WINDOW_PACKETS * max_datagram_size
        self._recovery_start = float("-inf")  # RFC 9002 B.2 congestion_recovery_start_time

    def on_packet_sent(self, packet: SentPacket, bytes_in_flight: int, now: float) -> None:  # noqa: B027
        """Optional hook; window-based controllers need nothing here."""

    @abc.abstractmethod
    def on_packets_acked(self, packets: list[SentPacket], now: float, rtt: RttEstimator) -> None: ...

    @abc.abstractmethod
    def on_packets_lost(self, packets: list[SentPacket], now: float, rtt: RttEstimator) -> None: ...

    def on_persistent_congestion(self, now: float) -> None:
        """Persistent congestion (RFC 9002 section 7.6.2): collapse to the minimum window.

        Called by recovery right after ``on_packets_lost`` for the batch that
        established it; ``ssthresh`` keeps the value that call gave it, so the
        window slow-starts back up to there.
        """
        self.congestion_window = self.minimum_window

    def in_recovery(self, sent_time: float) -> bool:
        """RFC 9002 B.5 InCongestionRecovery: was a packet sent at ``sent_time`` sent before the last cut?"""
        return sent_time <= self._recovery_start

    def on_congestion_event(self, sent_time: float, now: float) -> None:
        """RFC 9002 B.6 OnCongestionEvent: halve the window, once per recovery period.

        ``sent_time`` is when the packet that carried the signal (the newest lost
        packet, or the newest acknowledged one for CE) was sent; signals about
        packets sent before the last reduction are the same congestion episode.
        """
        if self.in_recovery(sent_time):
            return
        self._recovery_start = now
        self.congestion_window = max(
            int(self.congestion_window * K_LOSS_REDUCTION_FACTOR), self.minimum_window
        )
        self.ssthresh = self.congestion_window

    def on_ecn_ce(self, ce_marks: int, sent_time: float, now: float) -> None:
        """A validated ACK reported ``ce_marks`` new CE marks (RFC 9002 section 7.1 and B.7).

        The default treats it as a loss with nothing to retransmit: one
        ``on_congestion_event`` per recovery period, timed by the send time of
        the newest packet the ACK acknowledged.
        """
        self.on_congestion_event(sent_time, now)

    def on_rate_sample(self, sample: RateSample, now: float, rtt: RttEstimator) -> None:  # noqa: B027
        """Optional hook: one delivery-rate sample per ACK that newly acknowledged data."""

    def use_rng(self, rng: random.Random) -> None:  # noqa: B027
        """Optional hook: the connection's seeded generator, for controllers that randomise."""

    def pacing_rate(self, rtt: RttEstimator) -> float | None:
        """Bytes per second to pace at, or None to let the pacer derive it from the window.

        Window-based controllers return None: :func:`seam.pacing.pacing_rate_for`
        then paces at N x cwnd / smoothed RTT (RFC 9002 section 7.7).
        """
        return None

    @property
    def in_slow_start(self) -> bool:
        """True while the window grows by the bytes acknowledged (no loss seen yet)."""
        return self.ssthresh is None or self.congestion_window < self.ssthresh

    @property
    def phase(self) -> str:
        """Where the controller is, for statistics: ``slow_start`` or ``avoidance`` here."""
        return "slow_start" if self.in_slow_start else "avoidance"


_REGISTRY: dict[str, type[CongestionController]] = {}
C = TypeVar("C", bound=type[CongestionController])


def register(cls: C) -> C:
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, **kwargs: Any) -> CongestionController:
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown congestion controller {name!r}; choose one of {', '.join(available())}"
        ) from None
    return cls(**kwargs)
