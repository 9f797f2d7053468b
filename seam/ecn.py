"""Explicit Congestion Notification: codepoints, receive counts, and the sender's validation.

Theory of operation (docs/protocol.md section 7.6)
--------------------------------------------------
ECN lets a router signal congestion by rewriting two bits of the IP header
(RFC 3168) instead of dropping a packet. Seam uses it the way QUIC does
(RFC 9000 section 13.4, RFC 9002 section 7.1):

* **Receiver.** Every DATA packet that authenticates has its IP codepoint
  counted (dropped, undecryptable and duplicate packets are not); the
  cumulative ECT(0), ECT(1) and CE counts ride in ACK_ECN frames.
* **Sender.** :class:`EcnValidator` decides whether our DATA packets carry
  ECT(0). The path must prove it carries the marks: the first
  ``TESTING_PACKETS`` packets are marked (``TESTING``), then marking stops
  (``UNKNOWN``) until an ACK shows counts consistent with what we sent; from
  then on every packet is marked (``CAPABLE``). Counts that are missing,
  go backwards, exceed what we marked or fall short of what the ACK newly
  acknowledges (a path that bleaches or mangles the field) end ECN for the
  connection (``FAILED``), as does losing every test packet (a path that
  drops marked packets). An increase of the CE count in a validated ACK is
  a congestion signal for the controller.

The validator is sans-IO like the rest of the core: the connection reads
:attr:`EcnValidator.codepoint` for the datagrams of one transmit step, and
the I/O layer sets it on the socket or per ``sendmsg``.
"""

from __future__ import annotations

import enum

from seam.packet import EcnCounts

TESTING_PACKETS = 10  # packets marked before waiting for validation, RFC 9000 section 13.4.2


class Codepoint(enum.IntEnum):
    """The two ECN bits of the IP TOS / traffic class byte (RFC 3168 section 5)."""

    NOT_ECT = 0b00
    ECT1 = 0b01
    ECT0 = 0b10
    CE = 0b11


class EcnState(enum.Enum):
    """Where path validation stands (RFC 9000 appendix A.4)."""

    TESTING = "testing"
    UNKNOWN = "unknown"
    CAPABLE = "capable"
    FAILED = "failed"


class EcnValidator:
    """The sender's half of ECN (RFC 9000 section 13.4.2): whether to mark, and what ACKs say.

    The owner calls :meth:`on_packet_sent` for every DATA packet it marks and
    stamps the ack-eliciting ones (``SentPacket.ecn``), so loss recovery can
    say how many of those an ACK acknowledged or lost; it calls
    :meth:`begin_flight` before each batch so the codepoint only changes
    between batches. After ``FAILED`` nothing is marked again and counts
    are ignored.
    """

    __slots__ = (
        "_acked_counts",
        "_marked_acked",
        "_marked_lost",
        "_tracked_marked",
        "ce_marks",
        "failure",
        "marked_sent",
        "state",
    )

    def __init__(self, *, enabled: bool = True) -> None:
        self.state = EcnState.TESTING if enabled else EcnState.FAILED
        self.failure = "" if enabled else "disabled"  # why ECN stopped, for stats and logs
        self.marked_sent = 0  # DATA packets sent ECT(0), ack-eliciting or not
        self.ce_marks = 0  # CE marks the peer reported, from validated ACKs
        self._tracked_marked = 0  # ack-eliciting packets sent marked (recovery sees these)
        self._marked_acked = 0
        self._marked_lost = 0
        self._acked_counts = EcnCounts(0, 0, 0)  # from the last ACK that passed validation

    @property
    def codepoint(self) -> Codepoint:
        """What the datagrams of the current batch carry."""
        if self.state is EcnState.TESTING or self.state is EcnState.CAPABLE:
            return Codepoint.ECT0
        return Codepoint.NOT_ECT

    @property
    def marking(self) -> bool:
        return self.state is EcnState.TESTING or self.state is EcnState.CAPABLE

    def disable(self, reason: str) -> None:
        """Stop marking for good (validation failed, or the I/O layer cannot set the field)."""
        if self.state is not EcnState.FAILED:
            self.state = EcnState.FAILED
            self.failure = reason

    def begin_flight(self) -> None:
        """A new batch of datagrams starts: end the test period once enough packets went marked."""
        if self.state is EcnState.TESTING and self.marked_sent >= TESTING_PACKETS:
            self.state = EcnState.UNKNOWN

    def on_packet_sent(self) -> None:
        """One DATA packet (ack-eliciting or not) left with ECT(0)."""
        self.marked_sent += 1

    def on_tracked_sent(self) -> None:
        """Loss recovery took on an ack-eliciting packet sent with ECT(0)."""
        self._tracked_marked += 1

    def on_marked_lost(self, count: int) -> None:
        """Loss recovery declared ``count`` marked packets lost.

        While nothing marked has been acknowledged, losing every test packet
        suggests a path that drops ECT packets (RFC 9000 section 13.4.2).
        """
        self._marked_lost += count
        if (
            self.state is EcnState.UNKNOWN
            and self._marked_acked == 0
            and self._marked_lost >= self._tracked_marked
        ):
            self.disable("all marked packets lost")

    def on_ack(self, counts: EcnCounts | None, *, newly_acked_marked: int, largest_advanced: bool) -> int:
        """Validate one ACK (RFC 9000 section 13.4.2.1); returns how many new CE marks it reports.

        Only ACKs that raise the largest acknowledged packet number are
        judged: an older ACK arriving late carries older, smaller counts.
        New CE marks are returned only from an ACK that passed validation.
        """
        if self.state is EcnState.FAILED or not largest_advanced:
            return 0
        self._marked_acked += newly_acked_marked
        if counts is None:
            if newly_acked_marked:
                self.disable("marked packets acknowledged without ECN counts")
            return 0
        last = self._acked_counts
        if counts.ect0 < last.ect0 or counts.ect1 < last.ect1 or counts.ce < last.ce:
            self.disable("ECN counts went backwards")
            return 0
        if counts.ect1 > 0 or counts.ect0 + counts.ce > self.marked_sent:
            self.disable("ECN counts exceed the packets sent marked")
            return 0
        if (counts.ect0 - last.ect0) + (counts.ce - last.ce) < newly_acked_marked:
            self.disable("marked packets acknowledged without their marks (bleached)")
            return 0
        self._acked_counts = counts
        if newly_acked_marked and self.state is not EcnState.CAPABLE:
            self.state = EcnState.CAPABLE  # the path carried our marks
        new_ce = counts.ce - last.ce
        self.ce_marks += new_ce
        return new_ce
