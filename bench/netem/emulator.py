"""A userspace link emulator: two network namespaces joined by a Python forwarder.

Theory of operation. ``Link`` creates namespaces A and B. A forwarder process
in the root namespace enters each namespace in turn (``setns``), opens
``/dev/net/tun`` there and attaches a non-persistent TUN device to the file
descriptor, then returns to the root namespace. The devices therefore live
exactly as long as the forwarder's descriptors: if the forwarder dies, they
vanish with it. ``Link`` then gives the devices their addresses (10.77.0.1/24
in A, 10.77.0.2/24 in B), MTU 1500, and brings them up. Whatever A's stack
routes to 10.77.0.0/24 is read by the forwarder from A's TUN and, after the
impairments of the A->B direction, written into B's TUN, and vice versa.

Per direction, in this order, a packet read at time ``now``:

1. is dropped if a blackout window covers ``now``;
2. enters the bottleneck: a byte-level token bucket (GCRA form: ``tat`` is the
   theoretical time the bucket next has room; a packet departs at
   ``max(now, tat - burst/rate)``), in front of a drop-tail queue bounded in
   bytes; a packet that would push the backlog past the bound is dropped;
   with ``ecn_mark_bytes`` set, an ECN-capable (ECT) packet that finds more
   than that many bytes queued is marked CE instead (a step-marking AQM in
   the manner of DCTCP's; RFC 3168 section 5): the forwarder rewrites the ECN
   bits of the IPv4 TOS byte and the header checksum (UDP's checksum does
   not cover the IP header), or the IPv6 traffic class (no checksum);
3. is lost on the wire with the random-loss probability, then with the
   Gilbert-Elliott model (two states, per-packet transitions good->bad and
   bad->good, a loss probability in each state);
4. is released after the one-way delay, plus the reordering delay for a
   random fraction of packets (so later packets overtake it). Released
   packets whose release time falls inside a blackout are dropped too.

The forwarder is a single-threaded loop: ``select`` over both TUNs and its
control pipe (stdin), a FIFO per direction for in-order releases (their
release times are monotone) and a heap for the reordered ones. It stops by
itself after ``--max-seconds`` or when stdin closes, and reports its packet
rate, busy time (time not spent waiting in ``select``), and drops by cause.

Control commands, one per line on the forwarder's stdin: ``blackout T1 T2``
(``time.monotonic()`` values, shared by every process on the host),
``stats`` (answers one JSON line), ``stop``.

Non-secret randomness (loss, reordering) comes from a seeded ``random.Random``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import heapq
import itertools
import json
import os
import queue
import random
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable

ADDR_A = "10.77.0.1"
ADDR_B = "10.77.0.2"
PREFIX = 24
MTU = 1500  # bytes, the TUN devices' MTU
DEVICE = "seamtun"  # the TUN device's name inside each namespace
NETNS_DIR = Path("/run/netns")  # where `ip netns add` bind-mounts namespaces

# linux/if_tun.h and linux/sched.h
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000

READ_SIZE = 4096  # bytes per os.read; > MTU, so a packet is never truncated
READ_BATCH = 64  # packets read from one TUN before releases are checked again
RATE_WINDOW = 1.0  # seconds over which the forwarder's packet rate is sampled
FORWARDER_NICE = -5  # the emulator is the network: it should not queue behind the endpoints
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL when stopping a child


# ---------------------------------------------------------------- the profile


@dataclass(frozen=True, slots=True)
class Impairment:
    """What one direction of the link does to packets.

    ``rate_mbit`` None means unlimited (then ``queue_bytes`` is unused).
    Gilbert-Elliott is off while ``ge_p_good_bad`` is 0.
    """

    delay_ms: float = 0.0  # one-way propagation delay
    rate_mbit: float | None = None  # bottleneck rate, 10**6 bit/s
    queue_bytes: int = 256 * 1024  # drop-tail bound of the bottleneck queue
    burst_bytes: int = 2 * MTU  # token-bucket depth
    loss: float = 0.0  # independent random loss probability
    ge_p_good_bad: float = 0.0  # Gilbert-Elliott: P(good -> bad) per packet
    ge_p_bad_good: float = 1.0  # P(bad -> good) per packet; mean burst = 1/p
    ge_loss_bad: float = 1.0  # loss probability in the bad state
    ge_loss_good: float = 0.0  # loss probability in the good state
    reorder: float = 0.0  # fraction of packets held back by reorder_ms
    reorder_ms: float = 0.0  # extra delay of a reordered packet
    ecn_mark_bytes: int | None = None  # mark ECT packets CE above this backlog (None: never mark)

    @property
    def mean_loss(self) -> float:
        """Long-run loss probability (random and Gilbert-Elliott combined)."""
        ge = 0.0
        if self.ge_p_good_bad > 0:
            bad = self.ge_p_good_bad / (self.ge_p_good_bad + self.ge_p_bad_good)
            ge = bad * self.ge_loss_bad + (1 - bad) * self.ge_loss_good
        return 1 - (1 - self.loss) * (1 - ge)


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """Both directions of an emulated link (usually symmetric)."""

    a_to_b: Impairment = field(default_factory=Impairment)
    b_to_a: Impairment = field(default_factory=Impairment)

    @classmethod
    def symmetric(cls, impairment: Impairment) -> LinkProfile:
        return cls(impairment, impairment)

    def to_json(self) -> str:
        return json.dumps({"a_to_b": asdict(self.a_to_b), "b_to_a": asdict(self.b_to_a)})

    @classmethod
    def from_json(cls, text: str) -> LinkProfile:
        raw = json.loads(text)
        return cls(Impairment(**raw["a_to_b"]), Impairment(**raw["b_to_a"]))


# --------------------------------------------------------- the forwarder core


class Direction:
    """One direction's impairment state: token bucket, loss chains, release queues.

    Pure logic: ``admit(packet, now)`` schedules or drops; ``release(now, write)``
    hands over every packet that is due. Time is an argument.
    """

    __slots__ = (
        "blackouts",
        "burst_s",
        "counters",
        "delay",
        "fifo",
        "ge_bad",
        "imp",
        "late",
        "max_backlog",
        "rate",
        "rng",
        "seq",
        "tat",
    )

    def __init__(self, imp: Impairment, rng: random.Random, blackouts: list[tuple[float, float]]) -> None:
        self.imp = imp
        self.rng = rng
        self.blackouts = blackouts  # shared with the other direction
        self.delay = imp.delay_ms / 1000
        self.rate = imp.rate_mbit * 1e6 / 8 if imp.rate_mbit else 0.0  # bytes per second
        self.burst_s = imp.burst_bytes / self.rate if self.rate else 0.0
        self.tat = 0.0
        self.ge_bad = False
        self.fifo: deque[tuple[float, bytes]] = deque()
        self.late: list[tuple[float, int, bytes]] = []
        self.seq = itertools.count()
        self.max_backlog = 0.0
        self.counters = dict.fromkeys(
            (
                "rx",
                "rx_bytes",
                "tx",
                "tx_bytes",
                "drop_queue",
                "drop_loss",
                "drop_burst",
                "drop_blackout",
                "reordered",
                "write_errors",
                "ce_marked",
            ),
            0,
        )

    def _blacked_out(self, t: float) -> bool:
        return any(start <= t < end for start, end in self.blackouts)

    def admit(self, packet: bytes, now: float) -> None:
        c = self.counters
        size = len(packet)
        c["rx"] += 1
        c["rx_bytes"] += size
        if self.blackouts and self._blacked_out(now):
            c["drop_blackout"] += 1
            return
        depart = now
        if self.rate:
            tat = self.tat if self.tat > now else now
            backlog = (tat - now - self.burst_s) * self.rate  # bytes queued beyond the burst allowance
            if backlog + size > self.imp.queue_bytes:
                c["drop_queue"] += 1
                return
            if backlog > self.max_backlog:
                self.max_backlog = backlog
            mark = self.imp.ecn_mark_bytes
            if mark is not None and backlog > mark:
                marked = mark_ce(packet)
                if marked is not None:
                    packet = marked
                    c["ce_marked"] += 1
            start = tat - self.burst_s
            if start > now:
                depart = start
            self.tat = tat + size / self.rate
        imp = self.imp
        rng = self.rng.random
        if imp.loss and rng() < imp.loss:
            c["drop_loss"] += 1
            return
        if imp.ge_p_good_bad:
            # Gilbert-Elliott: decide this packet's fate in the current state, then move.
            if rng() < (imp.ge_loss_bad if self.ge_bad else imp.ge_loss_good):
                lost = True
            else:
                lost = False
            if self.ge_bad:
                if rng() < imp.ge_p_bad_good:
                    self.ge_bad = False
            elif rng() < imp.ge_p_good_bad:
                self.ge_bad = True
            if lost:
                c["drop_burst"] += 1
                return
        release = depart + self.delay
        if imp.reorder and rng() < imp.reorder:
            c["reordered"] += 1
            heapq.heappush(self.late, (release + imp.reorder_ms / 1000, next(self.seq), packet))
        else:
            self.fifo.append((release, packet))

    def release(self, now: float, write: Callable[[bytes], object]) -> None:
        fifo = self.fifo
        late = self.late
        while fifo and fifo[0][0] <= now:
            when, packet = fifo.popleft()
            self._emit(when, packet, write)
        while late and late[0][0] <= now:
            when, _, packet = heapq.heappop(late)
            self._emit(when, packet, write)

    def _emit(self, when: float, packet: bytes, write: Callable[[bytes], object]) -> None:
        c = self.counters
        if self.blackouts and self._blacked_out(when):
            c["drop_blackout"] += 1
            return
        try:
            write(packet)
        except OSError:
            c["write_errors"] += 1
            return
        c["tx"] += 1
        c["tx_bytes"] += len(packet)

    def next_release(self) -> float | None:
        heads = [q[0][0] for q in (self.fifo, self.late) if q]
        return min(heads) if heads else None


# ------------------------------------------------------ the forwarder process


_libc = ctypes.CDLL(None, use_errno=True)


def mark_ce(packet: bytes) -> bytes | None:
    """``packet`` (an IP packet) with its ECN field set to CE, or None if it is not ECT.

    IPv4: the TOS byte's low two bits, and the header checksum recomputed
    (RFC 791; the UDP checksum covers addresses, not TOS, so it stays valid).
    IPv6: the low two bits of the traffic class, which has no checksum.
    Not-ECT packets are never marked (RFC 3168 section 5), nor CE ones again.
    """
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        if packet[1] & 0b11 not in (0b01, 0b10):
            return None
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or len(packet) < ihl:
            return None
        header = bytearray(packet[:ihl])
        header[1] |= 0b11
        header[10:12] = b"\0\0"
        total = sum(struct.unpack(f"!{ihl // 2}H", header))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        header[10:12] = struct.pack("!H", ~total & 0xFFFF)
        return bytes(header) + packet[ihl:]
    if version == 6 and len(packet) >= 40:
        if (packet[1] >> 4) & 0b11 not in (0b01, 0b10):
            return None
        return packet[:1] + bytes((packet[1] | 0x30,)) + packet[2:]
    return None


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace behind ``fd`` (os.setns is 3.12+)."""
    if hasattr(os, "setns"):
        os.setns(fd, nstype)
        return
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def open_tun_in(namespace: str, name: str = DEVICE) -> int:
    """Open a TUN device created inside ``namespace``; returns its non-blocking fd.

    The device belongs to the namespace the /dev/net/tun file was opened in,
    so the open must happen after setns. The caller's namespace is restored.
    """
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(NETNS_DIR / namespace, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(target)
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
            except BaseException:
                os.close(fd)
                raise
        finally:
            setns(home)
    finally:
        os.close(target)
        os.close(home)
    return fd


def forward(ns_a: str, ns_b: str, profile: LinkProfile, *, max_seconds: float, seed: int) -> dict[str, Any]:
    """Run the forwarder loop until ``max_seconds``, ``stop`` or stdin EOF; returns the stats."""
    with contextlib.suppress(OSError):
        os.nice(FORWARDER_NICE)
    fd_a = open_tun_in(ns_a)
    fd_b = open_tun_in(ns_b)
    rng = random.Random(seed)
    blackouts: list[tuple[float, float]] = []
    ab = Direction(profile.a_to_b, rng, blackouts)
    ba = Direction(profile.b_to_a, rng, blackouts)
    write_a = lambda p: os.write(fd_a, p)  # noqa: E731
    write_b = lambda p: os.write(fd_b, p)  # noqa: E731
    ctl = sys.stdin.fileno()
    os.set_blocking(ctl, False)
    watched = [fd_a, fd_b, ctl]
    readers = {fd_a: ab, fd_b: ba}

    start = time.monotonic()
    end = start + max_seconds
    idle = 0.0
    total = 0
    window_start, window_count, peak = start, 0, 0.0
    pending = b""
    running = True
    read = os.read
    monotonic = time.monotonic

    def stats() -> dict[str, Any]:
        now = monotonic()
        elapsed = now - start
        busy = max(elapsed - idle, 1e-9)
        return {
            "elapsed_s": elapsed,
            "busy_s": busy,
            "packets": total,
            "mean_pps": total / elapsed if elapsed else 0.0,
            "peak_pps": max(
                peak, window_count / max(now - window_start, 1e-9) if now - window_start > 0.2 else 0
            ),
            "pps_per_busy_s": total / busy,
            "a_to_b": {**ab.counters, "max_backlog_bytes": int(ab.max_backlog)},
            "b_to_a": {**ba.counters, "max_backlog_bytes": int(ba.max_backlog)},
        }

    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    try:
        while running:
            now = monotonic()
            if now >= end:
                break
            ab.release(now, write_b)
            ba.release(now, write_a)
            deadline = end
            for d in (ab, ba):
                t = d.next_release()
                if t is not None and t < deadline:
                    deadline = t
            before = monotonic()
            # select() takes microseconds where epoll rounds up to whole milliseconds,
            # which would add up to 1 ms to every timed release.
            ready, _, _ = select.select(watched, [], [], max(deadline - before, 0.0))
            now = monotonic()
            idle += now - before
            for fd in ready:
                if fd == ctl:
                    try:
                        chunk = read(ctl, 4096)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        running = False
                        break
                    pending += chunk
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        words = line.decode().split()
                        if not words:
                            continue
                        if words[0] == "blackout":
                            blackouts.append((float(words[1]), float(words[2])))
                        elif words[0] == "stats":
                            print(json.dumps(stats()), flush=True)
                        elif words[0] == "stop":
                            running = False
                    continue
                direction = readers[fd]
                admit = direction.admit
                for _ in range(READ_BATCH):
                    try:
                        packet = read(fd, READ_SIZE)
                    except BlockingIOError:
                        break
                    except OSError as exc:  # EIO while a device is still down
                        if exc.errno != errno.EIO:
                            raise
                        break
                    admit(packet, now)
                    total += 1
                    window_count += 1
            if now - window_start >= RATE_WINDOW:
                rate = window_count / (now - window_start)
                if rate > peak:
                    peak = rate
                window_start, window_count = now, 0
    except KeyboardInterrupt:
        pass
    finally:
        os.close(fd_a)
        os.close(fd_b)
    return stats()


# ------------------------------------------------------------ child processes


class Child:
    """A started process: stdout read line by line on a thread, stopped by PID.

    ``line(timeout)`` never blocks longer than asked; stderr goes to a file so
    failures can be shown.
    """

    def __init__(
        self, argv: Sequence[str], *, name: str, stderr_path: Path, stdin: int | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=REPO,
            start_new_session=True,  # Ctrl-C reaches only the driver, which stops us in order
        )
        self.pid = self.proc.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw.decode(errors="replace"))
        self._lines.put(None)

    def line(self, timeout: float) -> str:
        """The next stdout line; TimeoutError after ``timeout`` s, EOFError if it exited."""
        try:
            got = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.name}: no output within {timeout:.0f} s") from None
        if got is None:
            self._lines.put(None)
            raise EOFError(f"{self.name} exited ({self.proc.poll()}): {self.stderr_tail()}")
        return got

    def json(self, timeout: float) -> dict[str, Any]:
        """The next stdout line that is a JSON object (other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.line(max(deadline - time.monotonic(), 0.01)).strip()
            if text.startswith("{"):
                result: dict[str, Any] = json.loads(text)
                return result

    def write(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stderr_tail(self, lines: int = 5) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; always reaps. Idempotent."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            if self.wait(STOP_GRACE) is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self._stderr.close()


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30).stdout


# ------------------------------------------------------------------ the link


class Link:
    """Two namespaces joined by the emulator (or one namespace, for loopback).

    ``with Link(profile) as link:`` gives ``link.ns_a``/``link.ns_b`` and
    ``link.addr_a``/``link.addr_b``. With ``profile=None`` there is no
    emulator: one fresh namespace whose loopback both ends use, so per-namespace
    sysctls still never touch the host. Every process started with
    ``run_in`` is stopped by PID on exit, then any process still inside the
    namespaces (daemons' children), then the forwarder; then the namespaces
    are deleted. Exit runs on errors and Ctrl-C alike.
    """

    _serial = itertools.count()

    def __init__(self, profile: LinkProfile | None, *, max_seconds: float = 3600.0, seed: int = 1) -> None:
        self.profile = profile
        self.max_seconds = max_seconds
        self.seed = seed
        tag = f"{os.getpid()}-{next(self._serial)}"
        if profile is None:
            self.ns_a = self.ns_b = f"seamL-{tag}"
            self.addr_a = self.addr_b = "127.0.0.1"
        else:
            self.ns_a, self.ns_b = f"seamA-{tag}", f"seamB-{tag}"
            self.addr_a, self.addr_b = ADDR_A, ADDR_B
        self.tmp = Path(tempfile.mkdtemp(prefix=f"seam-netem-{tag}-"))
        self.children: list[Child] = []
        self.forwarder: Child | None = None
        self._created: list[str] = []
        self.final_stats: dict[str, Any] | None = None

    @property
    def namespaces(self) -> list[str]:
        return sorted({self.ns_a, self.ns_b})

    def __enter__(self) -> Link:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self) -> None:
        for ns in self.namespaces:
            ip("netns", "add", ns)
            self._created.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        if self.profile is None:
            return
        self.forwarder = Child(
            [
                PY,
                "-m",
                "bench.netem.emulator",
                "forward",
                "--ns-a",
                self.ns_a,
                "--ns-b",
                self.ns_b,
                "--profile",
                self.profile.to_json(),
                "--max-seconds",
                str(self.max_seconds),
                "--seed",
                str(self.seed),
            ],
            name="forwarder",
            stderr_path=self.tmp / "forwarder.err",
            stdin=subprocess.PIPE,
        )
        self.forwarder.json(timeout=30)
        for ns, addr in ((self.ns_a, self.addr_a), (self.ns_b, self.addr_b)):
            # No IPv6 on the link: its link-local chatter would only add noise to the counters.
            self.sysctl(ns, f"net.ipv6.conf.{DEVICE}.disable_ipv6", "1")
            ip("-n", ns, "addr", "add", f"{addr}/{PREFIX}", "dev", DEVICE)
            ip("-n", ns, "link", "set", DEVICE, "mtu", str(MTU), "up")

    # -- processes

    def run_in(
        self, ns: str, argv: Sequence[str], *, name: str | None = None, stdin: int | None = None
    ) -> Child:
        """Start ``argv`` inside ``ns`` (``ip netns exec`` execs, so the PID is the program's)."""
        label = name or Path(argv[0]).name
        child = Child(
            ["ip", "netns", "exec", ns, *argv],
            name=label,
            stderr_path=self.tmp / f"{label}-{len(self.children)}.err",
            stdin=stdin,
        )
        self.children.append(child)
        return child

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self.children:
            self.children.remove(child)

    def sysctl(self, ns: str, key: str, value: str) -> None:
        subprocess.run(
            ["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}"],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def read_sysctl(self, ns: str, key: str) -> str:
        out = subprocess.run(
            ["ip", "netns", "exec", ns, "sysctl", "-n", key],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout.strip()

    # -- the emulator

    def blackout(self, start: float, end: float) -> None:
        """Drop everything, both ways, from ``start`` to ``end`` (time.monotonic() values)."""
        if self.forwarder is None:
            raise RuntimeError("a loopback link has no emulator")
        self.forwarder.write(f"blackout {start!r} {end!r}\n")

    def stats(self) -> dict[str, Any] | None:
        """The forwarder's counters so far, plus the kernel's TUN drop counts."""
        if self.forwarder is None:
            return None
        self.forwarder.write("stats\n")
        result = self.forwarder.json(timeout=10)
        result["tun_tx_dropped"] = {ns: self._tun_dropped(ns) for ns in (self.ns_a, self.ns_b)}
        return result

    def _tun_dropped(self, ns: str) -> int | None:
        """Packets the kernel dropped because the forwarder did not read them in time."""
        try:
            info = json.loads(ip("-n", ns, "-s", "-j", "link", "show", DEVICE))
            return int(info[0]["stats64"]["tx"]["dropped"])
        except (subprocess.CalledProcessError, KeyError, IndexError, ValueError):
            return None

    # -- teardown

    def close(self) -> None:
        """Stop every process by PID, then the forwarder, then delete the namespaces."""
        try:
            for child in reversed(self.children):
                child.stop()
            self.children.clear()
            for ns in self._created:
                self._kill_stragglers(ns)
            if self.forwarder is not None:
                if self.forwarder.proc.poll() is None:
                    with contextlib.suppress(OSError, TimeoutError, EOFError, ValueError):
                        self.final_stats = self.stats()
                    with contextlib.suppress(OSError):
                        self.forwarder.write("stop\n")
                    self.forwarder.wait(5)
                self.forwarder.stop()
        finally:
            for ns in self._created:
                with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                    ip("netns", "del", ns)
            self._created.clear()
            for path in self.tmp.glob("*"):
                with contextlib.suppress(OSError):
                    path.unlink()
            with contextlib.suppress(OSError):
                self.tmp.rmdir()

    @staticmethod
    def _kill_stragglers(ns: str) -> None:
        """Processes still in a namespace we made were started by us (e.g. sshd's children)."""
        try:
            pids = ip("netns", "pids", ns).split()
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            return
        for pid in map(int, pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def cleanup_stale() -> list[str]:
    """Delete namespaces a killed driver left behind (their creator PID is gone)."""
    removed = []
    for path in NETNS_DIR.glob("seam[ABL]-*-*") if NETNS_DIR.exists() else []:
        pid = int(path.name.split("-")[1])
        if Path(f"/proc/{pid}").exists():
            continue
        Link._kill_stragglers(path.name)
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("netns", "del", path.name)
            removed.append(path.name)
    return removed


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Let SIGTERM unwind like Ctrl-C, so every ``finally`` runs."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------- self-test


def selftest(seconds: float, payload: int = 64) -> dict[str, Any]:
    """Flood small UDP datagrams through an unimpaired link: the forwarder's ceiling.

    Returns the forwarder's stats (its peak and busy-time packet rates) and
    what the receiver counted.
    """
    with Link(LinkProfile(), max_seconds=seconds + 60) as link:
        sink = link.run_in(
            link.ns_b,
            [
                PY,
                "-m",
                "bench.netem.peers",
                "flood",
                "recv",
                "--bind",
                link.addr_b,
                "--max-seconds",
                str(seconds + 5),
            ],
            name="flood-recv",
        )
        port = sink.json(timeout=30)["port"]
        source = link.run_in(
            link.ns_a,
            [
                PY,
                "-m",
                "bench.netem.peers",
                "flood",
                "send",
                "--host",
                link.addr_b,
                "--port",
                str(port),
                "--seconds",
                str(seconds),
                "--size",
                str(payload),
            ],
            name="flood-send",
        )
        sent = source.json(timeout=seconds + 30)
        received = sink.json(timeout=30)
        stats = link.stats() or {}
    return {"sent": sent, "received": received, "forwarder": stats}


def main() -> None:
    parser = argparse.ArgumentParser(description="userspace link emulator (forwarder, self-test, cleanup)")
    sub = parser.add_subparsers(dest="command", required=True)
    fwd = sub.add_parser("forward", help="the forwarder process (started by Link)")
    fwd.add_argument("--ns-a", required=True)
    fwd.add_argument("--ns-b", required=True)
    fwd.add_argument("--profile", required=True, help="LinkProfile as JSON")
    fwd.add_argument("--max-seconds", type=float, default=3600.0)
    fwd.add_argument("--seed", type=int, default=1)
    test = sub.add_parser("selftest", help="flood an unimpaired link and report the forwarder's packet rate")
    test.add_argument("--seconds", type=float, default=3.0)
    sub.add_parser("cleanup", help="delete namespaces left by a killed run")
    args = parser.parse_args()
    if args.command == "forward":
        stats = forward(
            args.ns_a,
            args.ns_b,
            LinkProfile.from_json(args.profile),
            max_seconds=args.max_seconds,
            seed=args.seed,
        )
        with contextlib.suppress(BrokenPipeError):
            print(json.dumps({"final": True, **stats}), flush=True)
    elif args.command == "selftest":
        with terminate_as_interrupt():
            print(json.dumps(selftest(args.seconds), indent=2))
    else:
        print(json.dumps({"removed": cleanup_stale()}))


if __name__ == "__main__":
    main()
