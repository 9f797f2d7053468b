"""Batched UDP I/O: Linux segmentation offload (GSO) and receive coalescing (GRO).

Theory of operation. A Python process pays far more per system call than the
kernel pays per datagram, so the endpoint moves datagrams in batches:

* **Send (GSO).** Consecutive datagrams to the same address that have the
  same size (the last may be shorter) are handed to the kernel in one
  ``sendmsg`` carrying a ``UDP_SEGMENT`` control message; the kernel (or the
  NIC) cuts the buffer into the original datagrams, so the peer sees exactly
  what plain ``sendto`` calls would have produced. Datagrams of other sizes or
  to other addresses start a new group, so nothing is ever merged wrongly.
* **Receive (GRO).** With ``UDP_GRO`` set, the kernel may deliver several
  same-flow datagrams as one buffer plus a control message giving the
  segment size; :func:`split_gro` cuts it back into datagrams.

Both are probed once when a :class:`BatchSocket` is made and fall back to
plain ``sendto``/``recvfrom`` where the kernel (or a sandbox) refuses them,
when the caller asks (``offload=False``), or when the environment variable
``SEAMLESS_NO_GSO=1`` is set (it turns off GRO as well). A GSO send the kernel
rejects at run time (a route through IPsec, a device without checksum
offload) turns GSO off for the socket and resends the group one by one.

**ECN** (docs/protocol.md 7.6). Where a loopback probe shows the kernel sets
and reports the codepoint, a send with a codepoint other than the socket's
default (Not-ECT, left as it is, so nothing is ever marked by accident:
handshakes, admission replies, connections not or no longer marking) adds an
``IP_TOS`` / ``IPV6_TCLASS`` control message to its ``sendmsg``, once per GSO
group, so no send calls ``setsockopt`` and an unmarked send stays a plain
``sendto`` (a marked single datagram costs about 1 us more). ``IP_RECVTOS`` /
``IPV6_RECVTCLASS`` make the kernel report each datagram's codepoint; a GRO
buffer has one for all its segments (the kernel only coalesces datagrams
whose TOS matches). ``SEAMLESS_NO_ECN=1``, ``ecn=False`` or a failed probe
leave the socket as it was: every datagram goes Not-ECT and is reported as
such.

No trio here: every call is a non-blocking system call; the trio endpoint
does the waiting.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

logger = logging.getLogger("seam.endpoint")

Address = tuple[str, int]

SOL_UDP = 17  # IPPROTO_UDP, the socket-option level of <linux/udp.h>
UDP_SEGMENT = 103  # <linux/udp.h>, Linux 4.18: GSO segment size (u16), socket option or control message
UDP_GRO = 104  # <linux/udp.h>, Linux 5.0: coalesce on receive; the control message holds the size (int)
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS in <linux/udp.h>; more makes sendmsg fail with EINVAL
GSO_MAX_BYTES = 65507  # 65535 - 20 (IPv4 header) - 8 (UDP header): the largest UDP payload, RFC 768/791
MAX_UDP_PAYLOAD = 65535  # bytes asked of recvfrom without GRO
GRO_BUFFER = 1 << 17  # bytes; above the 64 KiB a coalesced GRO buffer can reach, so nothing is truncated
DISABLE_ENV = "SEAMLESS_NO_GSO"  # set to 1 to use plain sendto/recvfrom
DISABLE_ECN_ENV = "SEAMLESS_NO_ECN"  # set to 1 to neither set nor read ECN codepoints
# <linux/in.h> and <linux/in6.h>, for Pythons that do not export them
IP_TOS = getattr(socket, "IP_TOS", 1)
IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)
IPV6_TCLASS = getattr(socket, "IPV6_TCLASS", 67)
IPV6_RECVTCLASS = getattr(socket, "IPV6_RECVTCLASS", 66)
ECT0 = 0b10  # RFC 3168 section 5
CE = 0b11
ECN_MASK = 0b11  # the ECN bits of the TOS / traffic class byte

_GRO_CMSG_SPACE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0  # room for one int
_CMSG_SPACE_2 = 2 * _GRO_CMSG_SPACE  # a GRO size and a TOS
# Errors with which a kernel refuses a GSO send it cannot do; a plain send may still work.
# A plain int: ``socket.MSG_TRUNC`` is an IntFlag, and ``int & IntFlag`` runs enum code per datagram.
_MSG_TRUNC = int(socket.MSG_TRUNC)
_GSO_REFUSALS = frozenset({errno.EIO, errno.EINVAL, errno.EMSGSIZE, errno.ENOPROTOOPT, errno.EOPNOTSUPP})


@dataclass(frozen=True, slots=True)
class Offload:
    """What the kernel agreed to for one socket."""

    gso: bool
    gro: bool


# <linux/in.h>, <linux/in6.h>: set DF, and do not let the kernel's path MTU cache shrink
# our datagrams or fragment them; a datagram above the route's MTU fails with EMSGSIZE.
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
PMTUDISC_PROBE = 3  # IP_PMTUDISC_PROBE and IPV6_PMTUDISC_PROBE


def set_dont_fragment(sock: socket.socket, family: int) -> bool:
    """Mark the socket's datagrams Don't Fragment, for path MTU discovery (seam.pmtud).

    Without DF a probe bigger than the path would be fragmented on the way and
    "succeed", and Seam would then send datagrams every one of which costs
    fragments. Linux only; elsewhere (or if refused) the search still works
    wherever the network drops what is too big. Returns whether DF is set.
    """
    if not sys.platform.startswith("linux"):
        return False
    options = [(socket.IPPROTO_IP, IP_MTU_DISCOVER)]
    if family == socket.AF_INET6:  # IPv6, and IPv4-mapped traffic on a dual-stack socket
        options = [(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER), *options]
    done = False
    for level, option in options:
        try:
            sock.setsockopt(level, option, PMTUDISC_PROBE)
            done = True
        except OSError:
            pass
    return done


def offload_disabled_by_env() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip() not in ("", "0")


def ecn_disabled_by_env() -> bool:
    return os.environ.get(DISABLE_ECN_ENV, "").strip() not in ("", "0")


def tos_cmsgs(family: int, codepoint: int) -> list[tuple[int, int, bytes]]:
    """Control messages giving one ``sendmsg`` the ECN ``codepoint`` (an int, as both options take).

    An IPv6 socket gets ``IP_TOS`` as well, for IPv4-mapped destinations.
    """
    value = struct.pack("=i", codepoint)
    if family == socket.AF_INET6:
        return [(socket.IPPROTO_IPV6, IPV6_TCLASS, value), (socket.IPPROTO_IP, IP_TOS, value)]
    return [(socket.IPPROTO_IP, IP_TOS, value)]


def _enable_ecn(sock: socket.socket) -> None:
    """Have the kernel report each datagram's codepoint; raises OSError if it refuses."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVTCLASS, 1)
        try:  # IPv4-mapped peers of a dual-stack socket
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
        except OSError:
            pass
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)


@functools.cache
def _kernel_does_ecn(family: int) -> bool:
    """One loopback round trip, once per process and address family: are codepoints set and seen?

    Sends one plain datagram and one with a control message asking for
    ECT(0), and checks the receiver reports Not-ECT and ECT(0).
    """
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
            probe.settimeout(0.5)
            _enable_ecn(probe)
            me = probe.getsockname()
            probe.sendto(b"ecn", me)
            probe.sendmsg([b"ecn"], tos_cmsgs(family, ECT0), 0, me)
            seen = [ecn_codepoint(probe.recvmsg(16, _CMSG_SPACE_2)[1]) for _ in range(2)]
    except OSError:
        return False
    return seen == [0, ECT0]


def probe_ecn(sock: socket.socket, *, allow: bool = True) -> bool:
    """Turn on ECN for ``sock`` where the kernel supports it; False leaves the socket untouched."""
    if not allow or ecn_disabled_by_env() or not sys.platform.startswith("linux") or not _GRO_CMSG_SPACE:
        return False
    if sock.type != socket.SOCK_DGRAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    if not _kernel_does_ecn(sock.family):
        return False
    try:
        _enable_ecn(sock)
    except OSError:
        return False
    return True


def ecn_codepoint(ancdata: Sequence[tuple[int, int, bytes]]) -> int:
    """The ECN codepoint from an ``IP_TOS`` / ``IPV6_TCLASS`` control message, 0 (Not-ECT) if none."""
    for level, kind, data in ancdata:
        if data and (
            (level == socket.IPPROTO_IP and kind == IP_TOS)
            or (level == socket.IPPROTO_IPV6 and kind == IPV6_TCLASS)
        ):
            value = data[0] if len(data) < 4 else int.from_bytes(data[:4], sys.byteorder)  # u8 or int
            return value & ECN_MASK
    return 0


@functools.cache
def _kernel_sends_gso(family: int) -> bool:
    """One test GSO send over loopback, once per process and address family.

    The socket option can exist while ``sendmsg`` with the control message
    still fails (old kernels, some sandboxes), so a real send decides. The
    two test datagrams go to the probe socket itself and die with it.
    """
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
            sent = probe.sendmsg([bytes(16)], [gso_cmsg(8)], 0, probe.getsockname())
    except OSError:
        return False
    return sent == 16


def probe_offload(sock: socket.socket, *, allow: bool = True) -> Offload:
    """Turn on GRO and check GSO for ``sock``; everything off if not allowed or unsupported."""
    if not allow or offload_disabled_by_env() or not sys.platform.startswith("linux"):
        return Offload(gso=False, gro=False)
    if sock.type != socket.SOCK_DGRAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return Offload(gso=False, gro=False)
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)  # ENOPROTOOPT before Linux 4.18
        gso = _kernel_sends_gso(sock.family)
    except OSError:
        gso = False
    gro = False
    if _GRO_CMSG_SPACE:  # without recvmsg control messages a coalesced buffer could not be split
        try:
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)  # ENOPROTOOPT before Linux 5.0
            gro = True
        except OSError:
            pass
    return Offload(gso=gso, gro=gro)


@functools.lru_cache(maxsize=64)
def gso_cmsg(segment_size: int) -> tuple[int, int, bytes]:
    """The ``UDP_SEGMENT`` control message for ``sendmsg`` (a native-endian u16)."""
    return (SOL_UDP, UDP_SEGMENT, struct.pack("=H", segment_size))


def gso_group_end(
    datagrams: Sequence[tuple[bytes, Address]],
    start: int,
    *,
    max_segments: int = GSO_MAX_SEGMENTS,
    max_bytes: int = GSO_MAX_BYTES,
) -> int:
    """End (exclusive) of the GSO group that starts at ``datagrams[start]``.

    A group is consecutive datagrams to one address, all as long as the
    first except perhaps the last, which may be shorter; at most
    ``max_segments`` of them and ``max_bytes`` in all. A group of one is
    sent without GSO.
    """
    first, addr = datagrams[start]
    size = len(first)
    total = size
    end = start + 1
    limit = min(len(datagrams), start + max_segments)
    while end < limit:
        data, to = datagrams[end]
        length = len(data)
        if length > size or total + length > max_bytes or (to is not addr and to != addr):
            break
        total += length
        end += 1
        if length < size:
            break  # only the last segment may be shorter
    return end


def gro_segment_size(ancdata: Sequence[tuple[int, int, bytes]]) -> int:
    """The segment size from a ``UDP_GRO`` control message, or 0 if there is none."""
    for level, kind, data in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= 4:
            size: int = struct.unpack("=i", data[:4])[0]
            return size
    return 0


def split_gro(buffer: bytes | memoryview, segment_size: int) -> list[bytes]:
    """Cut a coalesced GRO buffer into its datagrams (the last may be shorter)."""
    length = len(buffer)
    if segment_size <= 0 or segment_size >= length:
        return [bytes(buffer)]
    return [bytes(buffer[offset : offset + segment_size]) for offset in range(0, length, segment_size)]


class BatchSocket:
    """Non-blocking batched send and receive on one UDP socket.

    ``count_drop`` is told the reason for every datagram lost to a local
    error. Neither method blocks or raises for a network error; the caller
    waits for readiness and keeps what was not sent.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        offload: bool = True,
        ecn: bool = True,
        count_drop: Callable[[str], None] | None = None,
    ) -> None:
        self.sock = sock
        probed = probe_offload(sock, allow=offload)
        self.gso = probed.gso
        self.gro = probed.gro
        self.ecn = probe_ecn(sock, allow=ecn)  # the socket sends Not-ECT; other codepoints per sendmsg
        # The control messages that give a send another codepoint than the socket's, by codepoint.
        self._tos: dict[int, list[tuple[int, int, bytes]]] = {
            cp: tos_cmsgs(sock.family, cp) for cp in (1, 2, 3)
        }
        self._cmsg_space = _CMSG_SPACE_2 if self.ecn else _GRO_CMSG_SPACE
        self._count_drop = count_drop or (lambda reason: None)
        self._buffer = bytearray(GRO_BUFFER) if self.gro else bytearray()
        self._view = memoryview(self._buffer)
        self.datagrams_sent = 0
        self.send_calls = 0
        self.datagrams_received = 0
        self.receive_calls = 0

    @property
    def offload(self) -> Offload:
        return Offload(gso=self.gso, gro=self.gro)

    def send(self, datagrams: Sequence[tuple[bytes, Address]], start: int = 0, ecn: int = 0) -> int:
        """Send ``datagrams[start:]`` with codepoint ``ecn``; return the index of the first one left unsent.

        Stops early only when the kernel buffer is full (``BlockingIOError``);
        datagrams refused for any other reason are counted as dropped and
        skipped, which loss recovery already handles. On a socket without
        ECN the codepoint is ignored (everything goes Not-ECT).
        """
        sock = self.sock
        index = start
        count = len(datagrams)
        singly_until = index  # datagrams before this index go one by one (a group the kernel refused)
        tos = self._tos[ecn & ECN_MASK] if self.ecn and ecn else None  # None: the socket's Not-ECT will do
        while index < count:
            data, addr = datagrams[index]
            end = gso_group_end(datagrams, index) if self.gso and index >= singly_until else index + 1
            try:
                if end - index == 1:
                    if tos is None:
                        sock.sendto(data, addr)
                    else:
                        sock.sendmsg([data], tos, 0, addr)
                else:
                    cmsgs = [gso_cmsg(len(data))] if tos is None else [gso_cmsg(len(data)), *tos]
                    sock.sendmsg([d for d, _ in datagrams[index:end]], cmsgs, 0, addr)
            except BlockingIOError:
                return index
            except OSError as exc:
                if end - index > 1 and exc.errno == errno.EMSGSIZE:
                    # Likely a path MTU probe bigger than the route allows (DF is set): send
                    # this group one by one, so only what is too big is refused; GSO stays on.
                    singly_until = end
                    continue
                if end - index > 1 and exc.errno in _GSO_REFUSALS:
                    logger.info("UDP GSO refused (%s); sending datagrams one by one", exc)
                    self.gso = False
                    continue  # the same group again, without GSO
                reason = errno.errorcode.get(exc.errno or 0, "unknown")
                for _ in range(end - index):
                    self._count_drop(f"send-error-{reason}")
            else:
                self.datagrams_sent += end - index
                self.send_calls += 1
            index = end
        return index

    def receive(
        self, out: list[tuple[bytes, Address]], limit: int, codepoints: list[int] | None = None
    ) -> bool:
        """Append received datagrams to ``out`` until it holds ``limit`` or the socket is empty.

        Returns True when the socket was drained (it would block), False when
        the batch is full and more may be waiting. A GRO buffer is split
        whole, so ``out`` may end up a little longer than ``limit``. With
        ``codepoints``, each datagram's ECN codepoint is appended to it, in
        step with ``out`` (0 on a socket without ECN).
        """
        if self.gro or (self.ecn and codepoints is not None):
            return self._receive_msg(out, limit, codepoints)
        sock = self.sock
        for _ in range(limit):
            if len(out) >= limit:
                return False
            try:
                data, addr = sock.recvfrom(MAX_UDP_PAYLOAD)
            except BlockingIOError:
                return True
            except OSError:
                self._count_drop("receive-error")
                continue
            self.receive_calls += 1
            out.append((data, (addr[0], addr[1])))
            if codepoints is not None:
                codepoints.append(0)
            self.datagrams_received += 1
        return False

    def _receive_msg(
        self, out: list[tuple[bytes, Address]], limit: int, codepoints: list[int] | None
    ) -> bool:
        """``recvmsg_into`` for control messages: GRO segment sizes and ECN codepoints."""
        sock = self.sock
        if not self._buffer:
            self._buffer = bytearray(MAX_UDP_PAYLOAD)
            self._view = memoryview(self._buffer)
        view = self._view
        space = self._cmsg_space
        ecn = self.ecn
        for _ in range(limit):
            if len(out) >= limit:
                return False
            try:
                nbytes, ancdata, flags, addr = sock.recvmsg_into((view,), space)
            except BlockingIOError:
                return True
            except OSError:
                self._count_drop("receive-error")
                continue
            self.receive_calls += 1
            if flags & _MSG_TRUNC:
                self._count_drop("receive-truncated")
                continue
            peer = (addr[0], addr[1])
            segment_size = gro_segment_size(ancdata) if ancdata else 0
            before = len(out)
            if segment_size and nbytes > segment_size:
                for datagram in split_gro(view[:nbytes], segment_size):
                    out.append((datagram, peer))
            else:
                out.append((bytes(view[:nbytes]), peer))
            added = len(out) - before
            self.datagrams_received += added
            if codepoints is not None:
                # One TOS control message covers every segment of a GRO buffer.
                codepoint = ecn_codepoint(ancdata) if ecn and ancdata else 0
                if added == 1:
                    codepoints.append(codepoint)
                else:
                    codepoints.extend([codepoint] * added)
        return False
