"""Timed bulk-transfer endpoints for the link benchmark, measured at the receiver.

``python -m bench.netem.peers KIND ROLE ...`` with KIND one of ``tcp``,
``seam``, ``aioquic``, ``flood`` and ROLE ``recv`` or ``send`` (``tcp fdpass`` is an ssh ProxyCommand).

A receiver binds (``--bind``, port 0), prints one JSON line with its port
(and keys), accepts one transfer, counts bytes, samples its byte count every
100 ms against ``time.monotonic()`` (one clock for every namespace on the
host), answers the total as 8 bytes when the sender's EOF arrives, and prints
one JSON result line: bytes, first/last byte times, samples, EOF seen, CPU
seconds, error. It gives up after ``--max-seconds``.

A sender connects, prints ``{"started": t}`` once the stream is open, sends
for ``--seconds``, sends EOF, waits for the receiver's count and prints its
result: bytes sent, the count echoed, CPU seconds, error.

Latency roles (``tcp``/``seam`` with ``lat-send``/``lat-recv``): the sender
writes ``--message-size``-byte messages at ``--rate`` per second on one
stream (TCP with TCP_NODELAY), each starting with its sequence number and its
``time.monotonic()`` just before the write; the receiver notes, per message,
the delay from that stamp to the read that completed it (one clock: both
namespaces share the host's CLOCK_MONOTONIC), and answers the message count
after EOF. It is interactive traffic, far below the link's rate, so a delay
is propagation plus whatever loss recovery (retransmission or FEC) adds.

bench/seam_peer.py and bench/aioquic_peer.py bind and dial 127.0.0.1 and time
a fixed size at the sender, so across two namespaces these endpoints stand in
for them; the aioquic certificate and client settings are imported from
bench/aioquic_peer.py so both benchmarks run aioquic the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

TICK = 0.1  # seconds between receiver byte-count samples
CHUNK = 256 * 1024  # bytes per send call; bounds how far a sender overshoots its deadline
REPLY_TIMEOUT = 60.0  # seconds a sender waits for the receiver's count after EOF
AIOQUIC_SEND_BUFFER = 1 << 20  # bytes buffered in aioquic before the sender waits (it has no backpressure)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def accept_one(args: argparse.Namespace) -> socket.socket | None:
    """Listen, announce the port, and accept the sender's one connection (None if none came)."""
    with socket.create_server((args.bind, 0)) as server:
        emit({"port": server.getsockname()[1]})
        server.settimeout(args.max_seconds)
        try:
            conn, _ = server.accept()
        except TimeoutError:
            return None
    return conn


def seam_config(args: argparse.Namespace) -> Any:
    """Seam as the product runs it: 1200-byte packets at first, grown by path MTU
    discovery up to ``--mds`` (the links' MTU; profile (a) caps it there too)."""
    import seam

    return seam.SeamConfig(congestion=args.congestion, pmtu_ceiling=args.mds, fec=args.fec)


def tcp_reply(sock: socket.socket) -> int | None:
    """The receiver's 8-byte count after our EOF; None if it never came whole."""
    sock.settimeout(REPLY_TIMEOUT)
    raw = b""
    while len(raw) < 8:
        part = sock.recv(8 - len(raw))
        if not part:
            break
        raw += part
    return int.from_bytes(raw, "big") if len(raw) == 8 else None


async def seam_reply(stream: Any) -> int | None:
    """:func:`tcp_reply` for a Seam stream."""
    import trio

    raw = b""
    with trio.move_on_after(REPLY_TIMEOUT):
        while len(raw) < 8:
            part = await stream.receive_some(8 - len(raw))
            if not part:
                break
            raw += part
    return int.from_bytes(raw, "big") if len(raw) == 8 else None


class Meter:
    """Receiver-side byte count with 100 ms samples of ``(monotonic time, total)``."""

    def __init__(self) -> None:
        self.total = 0
        self.first: float | None = None
        self.last: float | None = None
        self.eof = False
        self.error: str | None = None
        self.samples: list[tuple[float, int]] = []
        self._next = time.monotonic()
        self._cpu0 = cpu_seconds()  # interpreter start-up and imports are not the transfer's

    def add(self, count: int) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.last = now
        self.total += count

    def maybe_sample(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self.sample(now)

    def sample(self, now: float) -> None:
        self.samples.append((round(now, 4), self.total))
        self._next = now + TICK

    def result(self) -> dict[str, Any]:
        self.sample(time.monotonic())
        return {
            "bytes": self.total,
            "first": self.first,
            "last": self.last,
            "eof": self.eof,
            "error": self.error,
            "cpu": cpu_seconds() - self._cpu0,
            "samples": self.samples,
        }


# ------------------------------------------------------------ latency messages

MESSAGE_HEADER = struct.Struct("!Qd")  # sequence number, sender's time.monotonic() at the write


class Schedule:
    """Send times ``started + i / rate`` for ``seconds``: a steady rate that does not
    drift when one write is late, and a record of how late the sender itself ran
    (a busy CPU, not the network, if large)."""

    def __init__(self, started: float, rate: float, seconds: float) -> None:
        self.started = started
        self.interval = 1.0 / rate
        self.count = int(seconds * rate)
        self.late_max = 0.0

    def due(self, i: int) -> float:
        return self.started + i * self.interval

    def stamp(self, i: int, size: int) -> bytes:
        """Message ``i``, stamped now; notes how far behind its slot the write is."""
        now = time.monotonic()
        self.late_max = max(self.late_max, now - self.due(i))
        return MESSAGE_HEADER.pack(i, now).ljust(size, b"\0")


class Delays:
    """Receiver side: reassemble fixed-size messages from a byte stream and record
    each one's delay from its stamp to the read that completed it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.buf = bytearray()
        self.delays_ms: list[float] = []
        self.disorder = 0  # messages whose sequence number was not the next one (a stream bug if > 0)
        self.eof = False
        self.error: str | None = None
        self._cpu0 = cpu_seconds()

    def feed(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self.buf
        buf += data
        size = self.size
        whole = len(buf) - len(buf) % size
        for offset in range(0, whole, size):
            seq, sent = MESSAGE_HEADER.unpack_from(buf, offset)
            if seq != len(self.delays_ms):
                self.disorder += 1
            self.delays_ms.append(round((now - sent) * 1000, 3))
        del buf[:whole]

    def result(self) -> dict[str, Any]:
        return {
            "messages": len(self.delays_ms),
            "delays_ms": self.delays_ms,
            "disorder": self.disorder,
            "partial": len(self.buf),
            "eof": self.eof,
            "error": self.error,
            "cpu": cpu_seconds() - self._cpu0,
        }


def tcp_lat_recv(args: argparse.Namespace) -> None:
    delays = Delays(args.message_size)
    deadline = time.monotonic() + args.max_seconds
    conn = accept_one(args)
    if conn is None:
        delays.error = "no connection"
        emit(delays.result())
        return
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(TICK)
        try:
            while time.monotonic() < deadline:
                try:
                    data = conn.recv(1 << 16)
                except TimeoutError:
                    continue
                if not data:
                    delays.eof = True
                    break
                delays.feed(data)
            if delays.eof:
                conn.settimeout(10)
                conn.sendall(len(delays.delays_ms).to_bytes(8, "big"))
                conn.shutdown(socket.SHUT_WR)
                conn.recv(1)
        except OSError as exc:
            delays.error = _describe(exc)
    emit(delays.result())


def tcp_lat_send(args: argparse.Namespace) -> None:
    out: dict[str, Any] = {"sent": 0, "reply": None, "error": None, "cc": None}
    cpu0 = cpu_seconds()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if args.cc:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, args.cc.encode())
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(30)
            sock.connect((args.host, args.port))
            cc = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()
            out["cc"] = cc
            sock.settimeout(None)
            schedule = Schedule(time.monotonic(), args.rate, args.seconds)
            emit({"started": schedule.started, "cc": cc})
            for i in range(schedule.count):
                time.sleep(max(0.0, schedule.due(i) - time.monotonic()))
                sock.sendall(schedule.stamp(i, args.message_size))
                out["sent"] += 1
            out["late_max_ms"] = round(schedule.late_max * 1000, 2)
            sock.shutdown(socket.SHUT_WR)
            out["reply"] = tcp_reply(sock)
    except OSError as exc:
        out["error"] = _describe(exc)
    out["cpu"] = cpu_seconds() - cpu0
    emit(out)


def seam_lat_recv(args: argparse.Namespace) -> None:
    delays = Delays(args.message_size)
    fec: dict[str, Any] = {}

    def count(stats: Any) -> int:
        fec["fec_repairs_received"] = stats.fec_repairs_received
        fec["fec_packets_recovered"] = stats.fec_packets_recovered
        return len(delays.delays_ms)

    seam_receiver(args, delays, delays.feed, count)
    emit(delays.result() | fec)


def seam_lat_send(args: argparse.Namespace) -> None:
    import trio

    async def send(conn: Any, stream: Any, out: dict[str, Any]) -> None:
        schedule = Schedule(time.monotonic(), args.rate, args.seconds)
        emit({"started": schedule.started})
        fec_on = 0  # 100 ms samples in which "auto" would protect a block (repair_count > 0)
        samples = 0
        window: list[tuple[float, int, int]] = []  # (s since start, cwnd, bytes in flight): stalls

        async def watch() -> None:
            nonlocal fec_on, samples
            while True:
                await trio.sleep(TICK)
                samples += 1
                stats = conn.stats()
                fec_on += stats.fec_repair_count > 0
                elapsed = round(time.monotonic() - schedule.started, 2)
                window.append((elapsed, stats.congestion_window, stats.bytes_in_flight))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            for i in range(schedule.count):
                # trio's clock is not time.monotonic() (it adds a random offset): sleep a duration.
                await trio.sleep(max(0.0, schedule.due(i) - time.monotonic()))
                await stream.send_all(schedule.stamp(i, args.message_size))
                out["sent"] += 1
            nursery.cancel_scope.cancel()
        out["late_max_ms"] = round(schedule.late_max * 1000, 2)
        out["fec_on_fraction"] = round(fec_on / samples, 3) if samples else None
        out["window"] = window

    def report(stats: Any, out: dict[str, Any]) -> None:
        out["packets_sent"] = stats.packets_sent
        out["packets_lost"] = stats.packets_lost
        out["packets_retransmitted"] = stats.packets_retransmitted
        out["packets_spuriously_lost"] = stats.packets_spuriously_lost
        out["fec_repairs_sent"] = stats.fec_repairs_sent
        out["fec_retransmissions_avoided"] = stats.fec_retransmissions_avoided
        out["fec_loss_rate"] = round(stats.fec_loss_rate, 5)
        out["srtt_ms"] = round(stats.smoothed_rtt * 1000, 2)

    seam_sender(args, send, report)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------ TCP


def tcp_recv(args: argparse.Namespace) -> None:
    meter = Meter()
    deadline = time.monotonic() + args.max_seconds
    conn = accept_one(args)
    if conn is None:
        meter.error = "no connection"
        emit(meter.result())
        return
    with conn:
        conn.settimeout(TICK)
        buf = bytearray(1 << 20)
        try:
            while time.monotonic() < deadline:
                meter.maybe_sample()
                try:
                    n = conn.recv_into(buf)
                except TimeoutError:
                    continue
                if not n:
                    meter.eof = True
                    break
                meter.add(n)
            if meter.eof:
                conn.settimeout(10)
                conn.sendall(meter.total.to_bytes(8, "big"))
                conn.shutdown(socket.SHUT_WR)
                conn.recv(1)  # the sender closes after reading the count
        except OSError as exc:
            meter.error = _describe(exc)
    emit(meter.result())


def tcp_send(args: argparse.Namespace) -> None:
    data = os.urandom(CHUNK)
    sent = 0
    reply = None
    error = None
    cc = None
    cpu0 = cpu_seconds()
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            if args.cc:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, args.cc.encode())
            sock.settimeout(30)
            sock.connect((args.host, args.port))
            cc = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()
            sock.settimeout(None)
            started = time.monotonic()
            emit({"started": started, "cc": cc})
            deadline = started + args.seconds
            while time.monotonic() < deadline:
                sock.sendall(data)
                sent += len(data)
            sock.shutdown(socket.SHUT_WR)
            reply = tcp_reply(sock)
    except OSError as exc:
        error = _describe(exc)
    emit({"sent": sent, "reply": reply, "error": error, "cpu": cpu_seconds() - cpu0, "cc": cc})


def tcp_fdpass(args: argparse.Namespace) -> None:
    """An ssh ``ProxyCommand`` with ``ProxyUseFdpass=yes``: connect with the chosen
    congestion controller and hand the socket to ssh over stdout (SCM_RIGHTS).

    ssh has no option for its socket's controller, and a namespace's default
    may only be one of the host's ``tcp_allowed_congestion_control``.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if args.cc:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, args.cc.encode())
        sock.settimeout(30)
        sock.connect((args.host, args.port))
        with socket.socket(fileno=os.dup(1)) as channel:
            socket.send_fds(channel, [b"\0"], [sock.fileno()])


# ----------------------------------------------------------------------- Seam


def seam_recv(args: argparse.Namespace) -> None:
    import trio

    meter = Meter()

    async def sampler() -> None:
        while True:
            meter.sample(time.monotonic())
            await trio.sleep(TICK)

    seam_receiver(args, meter, lambda chunk: meter.add(len(chunk)), lambda stats: meter.total, sampler)
    emit(meter.result())


def seam_receiver(
    args: argparse.Namespace,
    sink: Meter | Delays,
    feed: Callable[[bytes], None],
    count: Callable[[Any], int],
    beside: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """One Seam receiver: serve one connection, ``feed`` its first stream to EOF, answer
    ``count(conn.stats())`` and wait for the sender to close; EOF and errors go in ``sink``.
    ``beside`` runs alongside until the transfer ends (the bulk meter's sampler)."""
    import trio

    import seam

    identity = seam.Identity.generate()
    config = seam_config(args)
    done = trio.Event()

    async def handler(conn: seam.SeamConnection) -> None:
        try:
            stream = await conn.accept_stream()
            while chunk := await stream.receive_some(1 << 16):
                feed(chunk)
            sink.eof = True
            await stream.send_all(count(conn.stats()).to_bytes(8, "big"))
            await stream.send_eof()
            with trio.move_on_after(10):  # let the count reach the sender before closing
                await conn.wait_closed()
        except Exception as exc:
            sink.error = _describe(exc)
        finally:
            done.set()

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            listener = await nursery.start(
                lambda task_status: seam.serve(
                    handler, args.bind, 0, identity=identity, config=config, task_status=task_status
                )
            )
            emit(
                {"port": listener.port, "x25519": identity.public.x25519_hex, "kem": identity.public.kem_hex}
            )
            if beside is not None:
                nursery.start_soon(beside)
            with trio.move_on_after(args.max_seconds):
                await done.wait()
            nursery.cancel_scope.cancel()

    trio.run(run)


def seam_send(args: argparse.Namespace) -> None:
    srtts: list[float] = []  # smoothed RTT every 100 ms while sending
    probe_rtt: list[float] = []  # when a 100 ms sample found BBR in ProbeRTT
    phases: dict[str, int] = {}  # 100 ms samples per controller phase

    async def send(conn: Any, stream: Any, out: dict[str, Any]) -> None:
        data = os.urandom(CHUNK)
        started = time.monotonic()
        emit({"started": started})
        deadline = started + args.seconds
        next_sample = started + 0.1
        while (now := time.monotonic()) < deadline:
            await stream.send_all(data)
            out["sent"] += len(data)
            if now >= next_sample:
                stats = conn.stats()
                srtts.append(stats.smoothed_rtt)
                phases[stats.congestion_phase] = phases.get(stats.congestion_phase, 0) + 1
                if stats.congestion_phase == "probe_rtt" and (not probe_rtt or now - probe_rtt[-1] > 1.0):
                    probe_rtt.append(now)  # seen in ProbeRTT (one sample per visit)
                next_sample = now + 0.1
        out["probe_rtt_at_s"] = [round(t - started, 1) for t in probe_rtt]
        out["phase_samples"] = phases

    def report(stats: Any, out: dict[str, Any]) -> None:
        out["packets_sent"] = stats.packets_sent
        out["packets_lost"] = stats.packets_lost
        out["packets_spuriously_lost"] = stats.packets_spuriously_lost
        out["packets_retransmitted"] = stats.packets_retransmitted
        out["srtt_ms"] = round(stats.smoothed_rtt * 1000, 2)
        out["datagram_size"] = stats.datagram_size
        out["ecn"] = stats.ecn_state
        out["ce_marks"] = stats.ecn_ce_marks
        if srtts:
            srtts.sort()
            out["srtt_p50_ms"] = round(srtts[len(srtts) // 2] * 1000, 2)
            out["srtt_p95_ms"] = round(srtts[int(0.95 * len(srtts))] * 1000, 2)

    seam_sender(args, send, report)


def seam_sender(
    args: argparse.Namespace,
    send: Callable[[Any, Any, dict[str, Any]], Awaitable[None]],
    report: Callable[[Any, dict[str, Any]], None],
) -> None:
    """One Seam sender: connect, ``send(conn, stream, out)`` on one stream, EOF, the
    receiver's count, then ``report(conn.stats(), out)``; errors and CPU go in ``out``."""
    import trio

    import seam

    out: dict[str, Any] = {"sent": 0, "reply": None, "error": None}
    cpu0 = cpu_seconds()

    async def run() -> None:
        keys = seam.PublicKeys.from_hex(args.x25519, args.kem)
        async with seam.connect(args.host, args.port, server_keys=keys, config=seam_config(args)) as conn:
            stream = await conn.open_stream()
            await send(conn, stream, out)
            await stream.send_eof()
            out["reply"] = await seam_reply(stream)
            report(conn.stats(), out)

    try:
        trio.run(run)
    except Exception as exc:
        out["error"] = _describe(exc)
    out["cpu"] = cpu_seconds() - cpu0
    emit(out)


# -------------------------------------------------------------------- aioquic


def aioquic_recv(args: argparse.Namespace) -> None:
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.asyncio.server import serve
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import ConnectionTerminated, StreamDataReceived

    from bench.aioquic_peer import ALPN, _certificate

    meter = Meter()

    async def run() -> None:
        import tempfile

        answered = asyncio.Event()
        closed = asyncio.Event()

        class Counter(QuicConnectionProtocol):
            def quic_event_received(self, event: object) -> None:
                if isinstance(event, StreamDataReceived):
                    meter.add(len(event.data))
                    if event.end_stream:
                        meter.eof = True
                        self._quic.send_stream_data(
                            event.stream_id, meter.total.to_bytes(8, "big"), end_stream=True
                        )
                        self.transmit()
                        answered.set()
                elif isinstance(event, ConnectionTerminated):
                    if not meter.eof:
                        meter.error = f"connection terminated: {event.reason_phrase or event.error_code}"
                    closed.set()

        async def sampler() -> None:
            while True:
                meter.sample(time.monotonic())
                await asyncio.sleep(TICK)

        with tempfile.TemporaryDirectory() as tmp:
            config = QuicConfiguration(
                is_client=False, alpn_protocols=ALPN, congestion_control_algorithm=args.congestion
            )
            config.load_cert_chain(*_certificate(tmp))
            server = await serve(args.bind, 0, configuration=config, create_protocol=Counter)
            assert server._transport is not None
            emit({"port": server._transport.get_extra_info("sockname")[1]})
            sampling = asyncio.create_task(sampler())
            try:
                done = asyncio.create_task(closed.wait())
                ended = asyncio.create_task(answered.wait())
                await asyncio.wait(
                    {done, ended}, timeout=args.max_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                if ended.done():  # let the count reach the sender before closing
                    await asyncio.wait({done}, timeout=10)
                done.cancel()
                ended.cancel()
            finally:
                sampling.cancel()
                server.close()

    asyncio.run(run())
    emit(meter.result())


def aioquic_send(args: argparse.Namespace) -> None:
    from aioquic.asyncio.client import connect

    from bench.aioquic_peer import _client_config

    out: dict[str, Any] = {"sent": 0, "reply": None, "error": None}
    cpu0 = cpu_seconds()

    async def run() -> None:
        config = _client_config()
        config.congestion_control_algorithm = args.congestion
        data = os.urandom(CHUNK)
        async with connect(args.host, args.port, configuration=config) as client:
            reader, writer = await client.create_stream()
            stream_id = writer.get_extra_info("stream_id")
            started = time.monotonic()
            emit({"started": started})
            deadline = started + args.seconds
            while time.monotonic() < deadline:
                writer.write(data)
                out["sent"] += len(data)
                await writer.drain()
                # aioquic buffers whatever it is given and signals nothing when data is
                # acknowledged, so poll its send buffer down to a bound.
                while True:
                    stream = client._quic._streams.get(stream_id)
                    if stream is None:
                        raise ConnectionError("stream gone")
                    if len(stream.sender._buffer) <= AIOQUIC_SEND_BUFFER:
                        break
                    await asyncio.sleep(0.002)
            writer.write_eof()
            raw = await asyncio.wait_for(reader.readexactly(8), REPLY_TIMEOUT)
            out["reply"] = int.from_bytes(raw, "big")

    try:
        asyncio.run(run())
    except Exception as exc:
        out["error"] = _describe(exc)
    out["cpu"] = cpu_seconds() - cpu0
    emit(out)


# ---------------------------------------------------------------------- flood


def flood_recv(args: argparse.Namespace) -> None:
    """Count UDP datagrams (the emulator self-test)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((args.bind, 0))
        emit({"port": sock.getsockname()[1]})
        sock.settimeout(0.5)
        count = 0
        first = last = None
        deadline = time.monotonic() + args.max_seconds
        while time.monotonic() < deadline:
            try:
                sock.recv(2048)
            except TimeoutError:
                if count:
                    break
                continue
            last = time.monotonic()
            first = first or last
            count += 1
    span = (last - first) if first and last and last > first else None
    emit({"received": count, "pps": count / span if span else None})


def flood_send(args: argparse.Namespace) -> None:
    payload = b"\0" * args.size
    sent = refused = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((args.host, args.port))
        start = time.monotonic()
        deadline = start + args.seconds
        while time.monotonic() < deadline:
            for _ in range(64):
                try:
                    sock.send(payload)
                    sent += 1
                except OSError:  # ENOBUFS when the TUN queue is full
                    refused += 1
        elapsed = time.monotonic() - start
    emit({"sent": sent, "refused": refused, "pps": sent / elapsed})


ROLES = {
    ("tcp", "recv"): tcp_recv,
    ("tcp", "send"): tcp_send,
    ("tcp", "fdpass"): tcp_fdpass,
    ("seam", "recv"): seam_recv,
    ("seam", "send"): seam_send,
    ("aioquic", "recv"): aioquic_recv,
    ("aioquic", "send"): aioquic_send,
    ("tcp", "lat-recv"): tcp_lat_recv,
    ("tcp", "lat-send"): tcp_lat_send,
    ("seam", "lat-recv"): seam_lat_recv,
    ("seam", "lat-send"): seam_lat_send,
    ("flood", "recv"): flood_recv,
    ("flood", "send"): flood_send,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("kind", choices=["tcp", "seam", "aioquic", "flood"])
    parser.add_argument("role", choices=["recv", "send", "fdpass", "lat-recv", "lat-send"])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int)
    parser.add_argument("--seconds", type=float, default=10.0, help="sender: how long to send")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="receiver: give up after")
    parser.add_argument("--cc", help="tcp: congestion control for this socket")
    parser.add_argument("--congestion", default="cubic", help="seam/aioquic congestion controller")
    parser.add_argument("--mds", type=int, default=1200, help="seam: max datagram size")
    parser.add_argument("--fec", default="off", help="seam: off | auto | K,M")
    parser.add_argument("--x25519")
    parser.add_argument("--kem")
    parser.add_argument("--size", type=int, default=64, help="flood: payload bytes")
    parser.add_argument("--rate", type=float, default=200.0, help="lat-send: messages per second")
    parser.add_argument(
        "--message-size", type=int, default=1024, help="lat-send/lat-recv: bytes per message (>= 16)"
    )
    args = parser.parse_args()
    ROLES[args.kind, args.role](args)


if __name__ == "__main__":
    main()
