"""Bulk transfers across an emulated link: Seam beside TCP, SSH and aioquic.

``python -m bench.lossy [--profiles a,b,c,d,e] [--runs N] [--seconds S] [--quick]``

Every transfer runs between two network namespaces joined by the userspace
link emulator (bench/netem/emulator.py), sender in A, receiver in B, and is
measured at the receiver: bytes from the first to the last byte received.
Profile (a) uses one fresh namespace's loopback instead. Peers, interleaved
within each run so slow drift in machine load hits them alike:

- ``tcp-cubic``, ``tcp-bbr``: one TCP socket (controller set per namespace
  with sysctl, and on the socket, and read back from it);
- ``ssh``: the same TCP transfer through ``ssh -L`` to a private sshd in B,
  so the bytes cross the link inside OpenSSH (its TCP uses cubic);
- ``aioquic``: one QUIC stream;
- ``seam-<cc>``: one Seam stream per congestion controller.

Each table gives the median of ``--runs`` runs. Profile (e) is 10 s clean,
a 2 s blackout (everything dropped, both ways), then 8 s clean; it reports
the time from the end of the blackout until the receiver's 100 ms samples
reach 90% of the link rate (and 90% of the peer's own rate over the 5 s
before the blackout) and whether the stream survived (the receiver's count
matches what the sender sent, no error on either side).

``--mode latency`` (profiles c and d by default) measures what FEC is for
instead: not throughput but the delay of small messages under loss. The
sender writes ``--message-size`` bytes ``--rate`` times a second on one
stream, each stamped with its sequence number and send time; the receiver
records each message's one-way delay from the application's write to its
read (both namespaces share CLOCK_MONOTONIC). Peers: TCP (cubic, bbr;
TCP_NODELAY) and Seam with each ``--seam-cc`` (default bbr with FEC off,
auto and 10:2). A message later than the base one-way delay plus one RTT
waited for a retransmission (or behind one: one stream, head-of-line).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import seam.build
from bench.netem.emulator import Child, Impairment, Link, LinkProfile, selftest, terminate_as_interrupt

T = TypeVar("T")
PY = sys.executable
SSHD_PORT = 2222  # inside namespace B, which is ours alone
SSH_LOCAL_PORT = 15001  # ssh -L listens here inside namespace A
# Seam's UDP payload: 1500-byte packets on the wire (IPv4 20 + UDP 8), the links' MTU (issue 4, profile a).
SEAM_DATAGRAM_SIZE = 1472  # bytes
READY_TIMEOUT = 30.0  # seconds for a process to report it is listening
EXTRA_TIMEOUT = 120.0  # seconds a transfer may overrun its duration before it is abandoned
RECOVERY_FRACTION = 0.9

BLACKOUT_AT = 10.0  # seconds into profile (e)'s transfer
BLACKOUT_FOR = 2.0
BLACKOUT_AFTER = 8.0  # seconds of clean link after the blackout
PRE_WINDOW = 5.0  # seconds before the blackout that set a peer's "own" rate

LATENCY_PROFILES = "c,d"
LATENCY_SEAM_CC = "bbr,bbr+auto,bbr+10:2"  # FEC off, auto, fixed K:M


def bdp_bytes(rate_mbit: float, rtt_ms: float) -> int:
    return int(rate_mbit * 1e6 / 8 * rtt_ms / 1000)


@dataclass(frozen=True)
class Profile:
    key: str
    title: str
    link: LinkProfile | None
    rate_mbit: float | None = None
    blackout: bool = False


def _link(rate: float, rtt_ms: float, **kw: Any) -> LinkProfile:
    return LinkProfile.symmetric(
        Impairment(delay_ms=rtt_ms / 2, rate_mbit=rate, queue_bytes=bdp_bytes(rate, rtt_ms), **kw)
    )


# Gilbert-Elliott for (d): mean bad run 1/0.2 = 5 packets, half of them lost;
# P(bad) = 0.0128 / (0.0128 + 0.2) = 6.0%, so mean loss 3.0% per direction.
BURSTY = {"ge_p_good_bad": 0.0128, "ge_p_bad_good": 0.2, "ge_loss_bad": 0.5}

PROFILES = {
    "a": Profile("a", "(a) loopback, no emulator", None),
    "b": Profile("b", "(b) 100 Mbit/s, 20 ms RTT, no loss", _link(100, 20), 100),
    "c": Profile("c", "(c) 50 Mbit/s, 40 ms RTT, 1% random loss", _link(50, 40, loss=0.01), 50),
    "d": Profile(
        "d",
        "(d) 20 Mbit/s, 100 ms RTT, 3% bursty loss (Gilbert-Elliott), 1% reordered by +10 ms",
        _link(20, 100, reorder=0.01, reorder_ms=10, **BURSTY),
        20,
    ),
    "e": Profile(
        "e",
        f"(e) 50 Mbit/s, 20 ms RTT: {BLACKOUT_AT:g} s clean, {BLACKOUT_FOR:g} s blackout, "
        f"{BLACKOUT_AFTER:g} s clean",
        _link(50, 20),
        50,
        blackout=True,
    ),
}


@dataclass(frozen=True)
class Peer:
    name: str
    kind: str  # tcp, ssh, aioquic, seam
    cc: str


@dataclass
class Outcome:
    """One transfer, as the receiver saw it."""

    mb_per_s: float | None = None
    cpu_s_per_gb: float | None = None
    error: str | None = None
    survived: bool | None = None
    recovery_link: float | None = None  # seconds after the blackout, None if never
    recovery_own: float | None = None
    samples: list[tuple[float, int]] = field(default_factory=list)  # receiver (monotonic s, bytes)
    blackout: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- one transfer


class Bench:
    def __init__(self, args: argparse.Namespace, ssh_dir: Path | None) -> None:
        self.args = args
        self.ssh_dir = ssh_dir

    def peers_cmd(self, kind: str, role: str, *extra: str) -> list[str]:
        return [PY, "-m", "bench.netem.peers", kind, role, *extra]

    def measure(self, link: Link, profile: Profile, peer: Peer, seconds: float) -> Outcome:
        return self.with_children(
            link,
            lambda start: self._measure(link, profile, peer, seconds, start),
            lambda error: Outcome(error=error),
        )

    @staticmethod
    def with_children(link: Link, body: Callable[[Any], T], failed: Callable[[str], T]) -> T:
        """Run ``body(start)``, where ``start(ns, argv, name)`` starts a child in a namespace;
        every child started is stopped afterwards, and a failure becomes ``failed(reason)``."""
        started: list[Child] = []

        def start(ns: str, argv: list[str], name: str) -> Child:
            child = link.run_in(ns, argv, name=name)
            started.append(child)
            return child

        try:
            return body(start)
        except (TimeoutError, EOFError, RuntimeError, OSError, ValueError) as exc:
            return failed(f"{type(exc).__name__}: {exc}")
        finally:
            for child in reversed(started):
                link.stop(child)

    def _measure(self, link: Link, profile: Profile, peer: Peer, seconds: float, start: Any) -> Outcome:
        limit = str(seconds + EXTRA_TIMEOUT)
        send_args = ["--seconds", str(seconds)]
        if peer.kind == "tcp":
            receiver = start(
                link.ns_b,
                self.peers_cmd("tcp", "recv", "--bind", link.addr_b, "--max-seconds", limit),
                "recv",
            )
            info = receiver.json(READY_TIMEOUT)
            sender_argv = self.peers_cmd(
                "tcp", "send", "--host", link.addr_b, "--port", str(info["port"]), "--cc", peer.cc, *send_args
            )
        elif peer.kind == "ssh":
            receiver = start(
                link.ns_b,
                self.peers_cmd("tcp", "recv", "--bind", "127.0.0.1", "--max-seconds", limit),
                "recv",
            )
            info = receiver.json(READY_TIMEOUT)
            self._start_ssh(link, start, info["port"], peer.cc)
            sender_argv = self.peers_cmd(
                "tcp",
                "send",
                "--host",
                "127.0.0.1",
                "--port",
                str(SSH_LOCAL_PORT),
                "--cc",
                peer.cc,
                *send_args,
            )
        elif peer.kind == "aioquic":
            cc = ["--congestion", peer.cc]
            receiver = start(
                link.ns_b,
                self.peers_cmd("aioquic", "recv", "--bind", link.addr_b, "--max-seconds", limit, *cc),
                "recv",
            )
            info = receiver.json(READY_TIMEOUT)
            sender_argv = self.peers_cmd(
                "aioquic", "send", "--host", link.addr_b, "--port", str(info["port"]), *cc, *send_args
            )
        else:
            # A Seam "controller" may carry an FEC spec after a '+': "bbr+auto", "cubic+10:2" (K:M).
            name, _, fec_spec = peer.cc.partition("+")
            cc = ["--congestion", name, "--fec", fec_spec.replace(":", ",") or "off"]
            cc += ["--mds", str(SEAM_DATAGRAM_SIZE)]
            receiver = start(
                link.ns_b,
                self.peers_cmd("seam", "recv", "--bind", link.addr_b, "--max-seconds", limit, *cc),
                "recv",
            )
            info = receiver.json(READY_TIMEOUT)
            keys = ["--x25519", info["x25519"], "--kem", info["kem"]]
            sender_argv = self.peers_cmd(
                "seam", "send", "--host", link.addr_b, "--port", str(info["port"]), *keys, *cc, *send_args
            )
        sender = start(link.ns_a, sender_argv, "send")
        first = sender.json(READY_TIMEOUT)
        window = None
        if "started" in first:
            if peer.kind == "tcp" and first.get("cc") != peer.cc:
                raise RuntimeError(f"socket uses {first.get('cc')}, not {peer.cc}")
            if profile.blackout:
                window = (first["started"] + BLACKOUT_AT, first["started"] + BLACKOUT_AT + BLACKOUT_FOR)
                link.blackout(*window)
            sent = sender.json(seconds + EXTRA_TIMEOUT)
        else:
            sent = first
        received = receiver.json(EXTRA_TIMEOUT)
        return self._outcome(profile, sent, received, window)

    def _start_ssh(self, link: Link, start: Any, target_port: int, cc: str) -> None:
        assert self.ssh_dir is not None
        d = self.ssh_dir
        config = d / f"sshd-{link.ns_b}.conf"
        config.write_text(
            "\n".join(
                [
                    f"Port {SSHD_PORT}",
                    f"ListenAddress {link.addr_b}",
                    f"HostKey {d / 'host_ed25519'}",
                    f"AuthorizedKeysFile {d / 'authorized_keys'}",
                    f"PidFile {d / ('sshd-' + link.ns_b + '.pid')}",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "AllowTcpForwarding yes",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        sshd = start(
            link.ns_b, [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(config)], "sshd"
        )
        wait_listening(sshd, SSHD_PORT)
        ssh = start(
            link.ns_a,
            [
                "ssh",
                "-N",
                "-F",
                "/dev/null",
                "-i",
                str(d / "client_ed25519"),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ExitOnForwardFailure=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
                f"ProxyCommand={PY} -m bench.netem.peers tcp fdpass --host %h --port %p --cc {cc}",
                "-o",
                "ProxyUseFdpass=yes",
                "-p",
                str(SSHD_PORT),
                "-L",
                f"127.0.0.1:{SSH_LOCAL_PORT}:127.0.0.1:{target_port}",
                f"root@{link.addr_b}",
            ],
            "ssh",
        )
        wait_listening(ssh, SSH_LOCAL_PORT)

    def _outcome(
        self,
        profile: Profile,
        sent: dict[str, Any],
        received: dict[str, Any],
        window: tuple[float, float] | None,
    ) -> Outcome:
        out = Outcome(
            extra={k: v for k, v in sent.items() if k not in ("sent", "reply", "error", "cpu", "cc")}
        )
        total = received["bytes"]
        if total and received["last"] > received["first"]:
            out.mb_per_s = total / (received["last"] - received["first"]) / 1e6
            out.cpu_s_per_gb = (sent.get("cpu", 0.0) + received["cpu"]) / (total / 1e9)
        errors = [e for e in (sent.get("error"), received.get("error")) if e]
        if sent.get("reply") != sent.get("sent"):
            errors.append(f"count mismatch: sent {sent.get('sent')}, receiver counted {sent.get('reply')}")
        out.error = "; ".join(errors) or None
        out.survived = out.error is None and received["eof"] and total == sent.get("sent")
        out.samples = received["samples"]
        out.blackout = window
        if window is not None and profile.rate_mbit:
            link_rate = profile.rate_mbit * 1e6 / 8
            out.recovery_link, out.recovery_own = recovery(received["samples"], window, link_rate)
        return out


@dataclass
class LatencyOutcome:
    """One latency run, as the receiver saw it: per-message one-way delays."""

    delays_ms: list[float] = field(default_factory=list)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # sender's and receiver's counters


class LatencyBench(Bench):
    """Paced small messages instead of a bulk transfer; same namespaces, same peers' plumbing."""

    def measure_latency(self, link: Link, peer: Peer, seconds: float) -> LatencyOutcome:
        return self.with_children(
            link,
            lambda start: self._measure_latency(link, peer, seconds, start),
            lambda error: LatencyOutcome(error=error),
        )

    def _measure_latency(self, link: Link, peer: Peer, seconds: float, start: Any) -> LatencyOutcome:
        limit = str(seconds + EXTRA_TIMEOUT)
        common = ["--message-size", str(self.args.message_size)]
        send_args = [*common, "--seconds", str(seconds), "--rate", str(self.args.rate)]
        if peer.kind == "tcp":
            receiver = start(
                link.ns_b,
                self.peers_cmd("tcp", "lat-recv", "--bind", link.addr_b, "--max-seconds", limit, *common),
                "recv",
            )
            info = receiver.json(READY_TIMEOUT)
            sender_argv = self.peers_cmd(
                "tcp", "lat-send", "--host", link.addr_b, "--port", str(info["port"]), "--cc", peer.cc
            )
        elif peer.kind == "seam":
            name, _, fec_spec = peer.cc.partition("+")
            cc = ["--congestion", name, "--fec", fec_spec.replace(":", ",") or "off"]
            cc += ["--mds", str(SEAM_DATAGRAM_SIZE)]
            receiver = start(
                link.ns_b,
                self.peers_cmd(
                    "seam", "lat-recv", "--bind", link.addr_b, "--max-seconds", limit, *cc, *common
                ),
                "recv",
            )
            info = receiver.json(READY_TIMEOUT)
            keys = ["--x25519", info["x25519"], "--kem", info["kem"]]
            sender_argv = self.peers_cmd(
                "seam", "lat-send", "--host", link.addr_b, "--port", str(info["port"]), *keys, *cc
            )
        else:
            raise ValueError(f"no latency peer for {peer.kind}")
        sender = start(link.ns_a, [*sender_argv, *send_args], "send")
        first = sender.json(READY_TIMEOUT)
        if "started" in first:
            if peer.kind == "tcp" and first.get("cc") != peer.cc:
                raise RuntimeError(f"socket uses {first.get('cc')}, not {peer.cc}")
            sent = sender.json(seconds + EXTRA_TIMEOUT)
        else:
            sent = first
        received = receiver.json(EXTRA_TIMEOUT)
        errors = [e for e in (sent.get("error"), received.get("error")) if e]
        if not (sent.get("sent") == sent.get("reply") == received.get("messages")):
            errors.append(
                f"count mismatch: sent {sent.get('sent')}, echoed {sent.get('reply')}, "
                f"received {received.get('messages')}"
            )
        if received.get("disorder"):
            errors.append(f"{received['disorder']} messages out of sequence")
        skip = {"sent", "reply", "error", "cc", "delays_ms", "messages", "eof"}
        extra = {k: v for k, v in sent.items() if k not in skip}
        extra |= {f"recv_{k}": v for k, v in received.items() if k not in skip}
        return LatencyOutcome(received.get("delays_ms", []), "; ".join(errors) or None, extra)


def wait_listening(child: Child, port: int, timeout: float = READY_TIMEOUT) -> None:
    """Wait until ``child`` has a TCP socket listening on ``port`` in its namespace."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited ({child.proc.returncode}): {child.stderr_tail()}")
        if listening(child.pid, port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{child.name} not listening on {port} after {timeout:.0f} s: {child.stderr_tail()}")


def listening(pid: int, port: int) -> bool:
    """Whether /proc/PID/net/tcp{,6} (that process's namespace) has a LISTEN socket on ``port``."""
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def recovery(
    samples: Sequence[Sequence[float]], window: tuple[float, float], link_rate: float
) -> tuple[float | None, float | None]:
    """Seconds from the blackout's end to the end of the first 100 ms sample at 90% of the
    link rate, and of the peer's own median rate over the 5 s before the blackout."""
    _, end = window
    rates = []  # (interval start, interval end, bytes per second)
    for (t0, b0), (t1, b1) in itertools.pairwise(samples):
        if t1 > t0:
            rates.append((t0, t1, (b1 - b0) / (t1 - t0)))
    before = [r for t0, t1, r in rates if window[0] - PRE_WINDOW <= t0 and t1 <= window[0]]
    own = statistics.median(before) if before else None

    def first_at(threshold: float) -> float | None:
        for t0, t1, r in rates:
            if t0 >= end and r >= threshold:
                return t1 - end
        return None

    return (
        first_at(RECOVERY_FRACTION * link_rate),
        first_at(RECOVERY_FRACTION * own) if own else None,
    )


# ------------------------------------------------------------------ the tables


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.1f}" if value >= 100 else f"{value:.{digits}f}"


def median_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def recovered(values: Sequence[float | None]) -> str:
    """Median recovery time over the runs that recovered; "never" if none did."""
    if values and all(v is None for v in values):
        return "never"
    return fmt(median_or_none(values))


def table(profile: Profile, peers: Sequence[Peer], outcomes: dict[str, list[Outcome]]) -> list[str]:
    mbps = {p.name: median_or_none([o.mb_per_s for o in outcomes[p.name]]) for p in peers}
    refs = {
        "TCP-cubic": mbps.get("tcp-cubic"),
        # one column per ssh peer: the targets compare with ssh -R under CUBIC and under BBR
        **{name: value for name, value in mbps.items() if name.startswith("ssh")},
        "aioquic": next((v for k, v in mbps.items() if k.startswith("aioquic")), None),
    }
    link_rate = profile.rate_mbit * 1e6 / 8 / 1e6 if profile.rate_mbit else None
    head = (
        ["peer", "MB/s", "fraction of link"] + [f"vs {r}" for r in refs] + ["CPU s/GB (both ends)", "runs ok"]
    )
    if profile.blackout:
        head += ["recovery to 90% link (s)", "recovery to 90% own rate (s)", "survived"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for peer in peers:
        runs = outcomes[peer.name]
        value = mbps[peer.name]
        ok = sum(1 for o in runs if o.error is None and o.mb_per_s)
        cells = [
            peer.name,
            fmt(value),
            fmt(value / link_rate if value and link_rate else None),
            *[f"{value / ref:.2f}x" if value and ref else "n/a" for ref in refs.values()],
            "n/a (ssh/sshd not counted)"
            if peer.kind == "ssh"
            else fmt(median_or_none([o.cpu_s_per_gb for o in runs])),
            f"{ok}/{len(runs)}",
        ]
        if profile.blackout:
            cells += [
                recovered([o.recovery_link for o in runs if o.mb_per_s]),
                recovered([o.recovery_own for o in runs if o.mb_per_s]),
                f"{sum(1 for o in runs if o.survived)}/{len(runs)}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
        for i, o in enumerate(runs):
            if o.error:
                notes.append(f"- {peer.name} run {i + 1}: {o.error[:300]}")
    return lines + (["", *notes] if notes else [])


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (an observed delay, never interpolated)."""
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[min(len(ordered), int(rank)) - 1]


def link_rtt_ms(profile: Profile) -> float:
    assert profile.link is not None
    return profile.link.a_to_b.delay_ms + profile.link.b_to_a.delay_ms


def latency_table(
    profile: Profile, peers: Sequence[Peer], outcomes: dict[str, list[LatencyOutcome]]
) -> list[str]:
    """Per peer: p50/p90/p99 as the median of the runs' values (each run has its own
    loss pattern); p99.9, max and the late fraction over all runs' messages pooled,
    since one run holds too few messages for them."""
    rtt = link_rtt_ms(profile)
    late_ms = rtt / 2 + rtt  # the base one-way delay plus one RTT
    head = [
        "peer",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        f"> {late_ms:g} ms",
        "messages",
        "runs ok",
        "writer late ms",
    ]
    head += ["repairs / msg", "recovered", "retransmitted", "auto on"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for peer in peers:
        runs = outcomes[peer.name]
        good = [o for o in runs if o.delays_ms]
        per_run = [sorted(o.delays_ms) for o in good]
        pooled = sorted(d for o in good for d in o.delays_ms)
        cells = [peer.name]
        for q in (50, 90, 99):
            cells.append(fmt(median_or_none([percentile(r, q) for r in per_run]), 1))
        if pooled:
            late = sum(1 for d in pooled if d > late_ms) / len(pooled)
            cells += [fmt(percentile(pooled, 99.9), 1), fmt(pooled[-1], 1), f"{100 * late:.2f}%"]
        else:
            cells += ["n/a"] * 3
        cells += [
            f"{len(pooled):,}",
            f"{sum(1 for o in runs if o.error is None and o.delays_ms)}/{len(runs)}",
            # Delays run from the write, so a writer held up (full socket buffer, busy CPU) hides time.
            fmt(max((o.extra.get("late_max_ms", 0.0) for o in good), default=None), 1),
        ]
        if peer.kind == "seam":
            sent = sum(len(o.delays_ms) for o in good)
            repairs = sum(o.extra.get("fec_repairs_sent", 0) for o in good)
            auto = median_or_none([o.extra.get("fec_on_fraction") for o in good])
            cells += [
                f"{repairs / sent:.2f}" if sent else "n/a",
                str(sum(o.extra.get("recv_fec_packets_recovered", 0) for o in good)),
                str(sum(o.extra.get("packets_retransmitted", 0) for o in good)),
                f"{100 * auto:.0f}%" if "auto" in peer.cc and auto is not None else "",
            ]
        else:
            cells += ["", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
        for i, o in enumerate(runs):
            if o.error:
                notes.append(f"- {peer.name} run {i + 1}: {o.error[:300]}")
    return lines + (["", *notes] if notes else [])


def emulator_summary(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "emulator: none (loopback)"
    drops: dict[str, int] = {}
    for direction in ("a_to_b", "b_to_a"):
        for key, value in stats[direction].items():
            if key.startswith("drop_") or key in ("reordered", "write_errors", "ce_marked"):
                drops[key] = drops.get(key, 0) + value
    kernel = sum(v or 0 for v in stats.get("tun_tx_dropped", {}).values())
    return (
        f"emulator: {stats['packets']:,} packets in {stats['elapsed_s']:.0f} s; "
        f"mean {stats['mean_pps']:,.0f} pkt/s, peak {stats['peak_pps']:,.0f} pkt/s (1 s window); "
        f"busy {stats['busy_s']:.1f} s ({100 * stats['busy_s'] / stats['elapsed_s']:.0f}%), "
        f"i.e. {stats['pps_per_busy_s']:,.0f} pkt per busy second; drops: "
        + ", ".join(f"{k.removeprefix('drop_')} {v:,}" for k, v in drops.items() if k != "ce_marked")
        + f"; CE-marked {drops.get('ce_marked', 0):,}"
        + f"; kernel TUN drops (forwarder too slow) {kernel:,}; "
        f"max queue {max(stats['a_to_b']['max_backlog_bytes'], stats['b_to_a']['max_backlog_bytes']):,} B"
    )


# ----------------------------------------------------------------- the driver


@contextlib.contextmanager
def ssh_keys() -> Iterator[Path | None]:
    if not (shutil.which("ssh") and shutil.which("sshd") and shutil.which("ssh-keygen")):
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix="seam-lossy-ssh-"))
    try:
        for name in ("host_ed25519", "client_ed25519"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / name)],
                check=True,
                timeout=30,
            )
        (directory / "authorized_keys").write_text((directory / "client_ed25519.pub").read_text())
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation directory
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def bbr_available() -> bool:
    path = Path("/proc/sys/net/ipv4/tcp_available_congestion_control")
    if "bbr" in path.read_text().split():
        return True
    if shutil.which("modprobe"):
        subprocess.run(["modprobe", "tcp_bbr"], capture_output=True, timeout=30)
    return "bbr" in path.read_text().split()


def default_seam_controllers() -> list[str]:
    from seam.congestion import available

    return available()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--mode",
        choices=["bulk", "latency"],
        default="bulk",
        help="bulk: throughput tables; latency: delay of paced small messages (see above)",
    )
    parser.add_argument(
        "--profiles",
        default=None,
        help=f"comma-separated profile letters (default a,b,c,d,e; latency: {LATENCY_PROFILES})",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per peer; tables show medians")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="sending time per transfer (not profile e)"
    )
    parser.add_argument("--quick", action="store_true", help="1 run x 5 s")
    parser.add_argument(
        "--seam-cc",
        default=None,
        help="comma-separated Seam controllers, each optionally +FEC (bbr+auto, cubic+10:2); "
        "default: seam.congestion.available()",
    )
    parser.add_argument(
        "--ssh-cc", default="cubic,bbr", help="comma-separated controllers for ssh's TCP socket"
    )
    parser.add_argument("--aioquic-cc", default="reno", help="aioquic's controller (its default is reno)")
    parser.add_argument("--peers", default=None, help="comma-separated peer names to run (default: all)")
    parser.add_argument("--no-calibrate", action="store_true", help="skip the emulator's flood self-test")
    parser.add_argument("--seed", type=int, default=1, help="seed of the emulator's loss and reordering")
    parser.add_argument(
        "--ecn",
        type=float,
        default=None,
        metavar="SHARE",
        help="the emulator marks ECT packets CE (instead of queueing them towards a drop) once its "
        "bottleneck queue holds more than SHARE of its bound (each profile's bound is one BDP), e.g. 0.2",
    )
    parser.add_argument(
        "--json", type=Path, help="also write every run's raw figures and 100 ms samples here"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="latency: messages per second")
    parser.add_argument("--message-size", type=int, default=1024, help="latency: bytes per message")
    args = parser.parse_args(argv)
    if args.profiles is None:
        args.profiles = LATENCY_PROFILES if args.mode == "latency" else "a,b,c,d,e"
    if args.message_size < 16:
        parser.error("--message-size must be at least 16 (sequence number and timestamp)")
    if args.quick:
        args.runs, args.seconds = 1, 5.0
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench.lossy needs root (network namespaces, TUN devices)")
    keys = [k.strip() for k in args.profiles.split(",") if k.strip()]
    unknown = [k for k in keys if k not in PROFILES]
    if unknown:
        sys.exit(f"unknown profiles {unknown}; choose from {','.join(PROFILES)}")
    if args.mode == "latency":
        latency_main(args, keys)
        return
    seam_cc = args.seam_cc.split(",") if args.seam_cc else default_seam_controllers()
    with terminate_as_interrupt(), ssh_keys() as ssh_dir:
        has_bbr = bbr_available()
        peers = tcp_peers(has_bbr)
        ssh_cc = [cc for cc in args.ssh_cc.split(",") if cc != "bbr" or has_bbr]
        peers += [Peer(f"ssh-{cc}", "ssh", cc) for cc in ssh_cc] if ssh_dir else []
        peers += [Peer(f"aioquic-{args.aioquic_cc}", "aioquic", args.aioquic_cc)]
        peers += [Peer(f"seam-{cc}", "seam", cc) for cc in seam_cc]
        peers = chosen(peers, args.peers)
        print(header(args, has_bbr, ssh_dir is not None, seam_cc), flush=True)
        if not args.no_calibrate:
            print(calibration(), flush=True)
        bench = Bench(args, ssh_dir)
        raw: dict[str, Any] = {}
        for key in keys:
            profile = PROFILES[key]
            seconds = BLACKOUT_AT + BLACKOUT_FOR + BLACKOUT_AFTER if profile.blackout else args.seconds
            began = time.monotonic()
            link_profile = with_ecn_marking(profile.link, args.ecn) if args.ecn is not None else profile.link
            measure = functools.partial(bench.measure, profile=profile, seconds=seconds)
            outcomes, stats = run_interleaved(args, link_profile, peers, seconds, measure)
            rate = f"link rate {profile.rate_mbit * 1e6 / 8 / 1e6:.2f} MB/s; " if profile.rate_mbit else ""
            print(f"\n### {profile.title}\n")
            print(
                f"{rate}median of {args.runs} run(s) x {seconds:g} s of sending per peer; "
                f"profile took {time.monotonic() - began:.0f} s\n"
            )
            print("\n".join(table(profile, peers, outcomes)))
            print(f"\n{emulator_summary(stats)}", flush=True)
            record(args, raw, key, stats, outcomes)


def tcp_peers(has_bbr: bool) -> list[Peer]:
    """Plain TCP under CUBIC and, where the kernel has it, BBR: every mode's first rows."""
    return [Peer("tcp-cubic", "tcp", "cubic")] + ([Peer("tcp-bbr", "tcp", "bbr")] if has_bbr else [])


def chosen(peers: list[Peer], names: str | None) -> list[Peer]:
    """``peers``, narrowed to the comma-separated ``--peers`` names when given."""
    if not names:
        return peers
    wanted = set(names.split(","))
    return [p for p in peers if p.name in wanted]


def run_interleaved(
    args: argparse.Namespace,
    link_profile: LinkProfile | None,
    peers: Sequence[Peer],
    seconds: float,
    measure: Callable[..., T],
) -> tuple[dict[str, list[T]], dict[str, Any] | None]:
    """``args.runs`` rounds of every peer in turn over one link, each ``measure(link=, peer=)``;
    the outcomes and the link's stats."""
    outcomes: dict[str, list[T]] = {p.name: [] for p in peers}
    # The forwarder stops by itself once every transfer could have timed out.
    budget = args.runs * len(peers) * (seconds + EXTRA_TIMEOUT + READY_TIMEOUT) + 60
    with Link(link_profile, max_seconds=budget, seed=args.seed) as link:
        for _ in range(args.runs):
            for peer in peers:
                outcomes[peer.name].append(measure(link=link, peer=peer))
        stats = link.stats()
    return outcomes, stats


def record(
    args: argparse.Namespace,
    raw: dict[str, Any],
    key: str,
    stats: dict[str, Any] | None,
    outcomes: dict[str, list[Any]],
) -> None:
    """Keep one profile's raw figures, and rewrite ``--json`` with everything so far."""
    raw[key] = {"emulator": stats, "runs": {k: [asdict(o) for o in v] for k, v in outcomes.items()}}
    if args.json:
        args.json.write_text(json.dumps(raw))


def latency_main(args: argparse.Namespace, keys: Sequence[str]) -> None:
    """The latency mode's driver: peers interleaved within each run, as in bulk mode."""
    if any(PROFILES[k].link is None or PROFILES[k].blackout for k in keys):
        sys.exit("latency mode runs on emulated links without a blackout: profiles b, c, d")
    seam_cc = (args.seam_cc or LATENCY_SEAM_CC).split(",")
    with terminate_as_interrupt():
        has_bbr = bbr_available()
        peers = tcp_peers(has_bbr)
        peers += [Peer(f"seam-{cc}", "seam", cc) for cc in seam_cc]
        peers = chosen(peers, args.peers)
        load = os.getloadavg()
        print(
            "\n".join(
                [
                    "## Message latency across an emulated link",
                    "",
                    f"{os.cpu_count()} cores, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
                    f"(1/5/15 min) at start, Linux {platform.release()}, Python {platform.python_version()}, "
                    f"Seam core {seam.build.describe()}",
                    f"{args.message_size}-byte messages, {args.rate:g} per second on one stream "
                    f"({args.message_size * args.rate * 8 / 1e6:.2f} Mbit/s of payload), "
                    f"{args.seconds:g} s per peer and run; TCP with TCP_NODELAY"
                    + ("" if has_bbr else "; TCP BBR UNAVAILABLE (tcp-bbr row skipped)"),
                    "Delay: sender's write to receiver's read, one clock (CLOCK_MONOTONIC). "
                    "p50-p99: median of the runs; p99.9, max, late fraction: all runs' messages. "
                    "Late: beyond the base one-way delay plus one RTT. Writer late: how far the sender's "
                    "writes fell behind their schedule (max of runs; delays do not include it). "
                    "Seam: repair packets sent per "
                    "message, packets rebuilt by FEC and retransmitted (all runs); "
                    "'auto on': time FEC auto would protect a block (median of runs).",
                ]
            ),
            flush=True,
        )
        if not args.no_calibrate:
            print(calibration(), flush=True)
        bench = LatencyBench(args, None)
        raw: dict[str, Any] = {}
        for key in keys:
            profile = PROFILES[key]
            began = time.monotonic()
            measure = functools.partial(bench.measure_latency, seconds=args.seconds)
            outcomes, stats = run_interleaved(args, profile.link, peers, args.seconds, measure)
            print(f"\n### {profile.title}\n")
            print(
                f"{args.runs} run(s) per peer; profile took {time.monotonic() - began:.0f} s; "
                f"load average {os.getloadavg()[0]:.2f} at its end\n"
            )
            print("\n".join(latency_table(profile, peers, outcomes)))
            print(f"\n{emulator_summary(stats)}", flush=True)
            record(args, raw, key, stats, outcomes)


def with_ecn_marking(link: LinkProfile | None, share: float) -> LinkProfile | None:
    """``link`` whose bottleneck queues mark CE above ``share`` of their bound (docs/protocol.md 7.6)."""
    if link is None:
        return None
    return LinkProfile(
        *(replace(imp, ecn_mark_bytes=int(share * imp.queue_bytes)) for imp in (link.a_to_b, link.b_to_a))
    )


def header(args: argparse.Namespace, has_bbr: bool, has_ssh: bool, seam_cc: Sequence[str]) -> str:
    ssh_version = "unavailable"
    if has_ssh:
        ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True, timeout=10).stderr.strip()
    try:
        from importlib.metadata import version

        aioquic = version("aioquic")
    except Exception:
        aioquic = "?"
    return "\n".join(
        [
            "## Seam across an emulated link",
            "",
            f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start, "
            f"Linux {platform.release()}, "
            f"Python {platform.python_version()}, Seam core {seam.build.describe()}, "
            f"aioquic {aioquic}, {ssh_version}",
            "TCP BBR: "
            + ("available" if has_bbr else "UNAVAILABLE (tcp_bbr module missing; tcp-bbr row skipped)")
            + "; "
            f"Seam controllers: {', '.join(seam_cc)}; aioquic controller: {args.aioquic_cc}",
            "Throughput is measured at the receiver (first to last byte); CPU is user+system seconds of "
            "both endpoint processes per GB received. Loss figures are per direction.",
        ]
    )


def calibration(seconds: float = 3.0) -> str:
    result = selftest(seconds)
    fwd = result["forwarder"]
    kernel = sum(v or 0 for v in fwd.get("tun_tx_dropped", {}).values())
    return (
        f"\nemulator ceiling (64-byte UDP flood through an unimpaired link for {seconds:g} s): "
        f"peak {fwd['peak_pps']:,.0f} pkt/s, {fwd['pps_per_busy_s']:,.0f} pkt per busy second; "
        f"the sender offered {result['sent']['pps']:,.0f} pkt/s, "
        f"the kernel dropped {kernel:,} at the TUN queue"
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted; namespaces and processes cleaned up", file=sys.stderr)
        sys.exit(130)
