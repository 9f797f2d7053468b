"""Run the benchmarks and print one markdown table: our figure beside a peer's, as a ratio.

Every figure is the median of ``--repeat`` runs, each a fresh client process
against a server process started for the benchmark; every process is stopped
by its PID at the end, and every wait is bounded.

Transport (issue 2): Seam vs aioquic, both single-stream bulk over loopback
with 1200-byte datagrams, handshakes per second, and the server's memory per
idle connection.

Tunnels: Seamless vs ``ssh -R`` (HTTP through nginx with wrk, TCP bulk, time
to open a forwarded connection, relay and client memory), in its own table
from ``bench/tunnel.py``, which also runs alone (``python -m bench.tunnel``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import seam.build

HERE = Path(__file__).parent
PY = sys.executable
TIMEOUT = 300  # seconds any single benchmark process may take
TUNNEL_TIMEOUT = 3600  # seconds for the whole tunnel section (bench/tunnel.py)


@dataclass
class Row:
    name: str
    ours: float | None
    peer: float | None
    unit: str
    peer_name: str

    def cells(self) -> list[str]:
        fmt = lambda v: "n/a" if v is None else (f"{v:,.1f}" if v >= 10 else f"{v:.2f}")  # noqa: E731
        ratio = "n/a" if not self.ours or not self.peer else f"{self.ours / self.peer:.2f}x"
        return [self.name, fmt(self.ours), self.unit, f"{self.peer_name}: {fmt(self.peer)}", ratio]


@contextmanager
def process(
    *args: str, stdin: int | None = None
) -> Iterator[tuple[subprocess.Popen[str], dict[str, object]]]:
    """Start a peer process, read its first JSON line, and always stop it by PID."""
    proc = subprocess.Popen(
        [PY, *args], stdout=subprocess.PIPE, stdin=stdin, text=True, cwd=HERE.parent, env={**os.environ}
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{args[0]} exited before it was ready")
        yield proc, json.loads(line)
    finally:
        proc.kill()
        proc.wait(timeout=30)


def run_json(*args: str) -> dict[str, float]:
    out = subprocess.run(
        [PY, *args], capture_output=True, text=True, timeout=TIMEOUT, cwd=HERE.parent, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def median(repeat: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(repeat))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def seam_rows(args: argparse.Namespace) -> list[Row]:
    seam = str(HERE / "seam_peer.py")
    quic = str(HERE / "aioquic_peer.py")
    rows = []
    with process(seam, "server") as (_, info):
        keys = ["--port", str(info["port"]), "--x25519", str(info["x25519"]), "--kem", str(info["kem"])]
        ours = median(
            args.repeat, lambda: run_json(seam, "bulk", *keys, "--size-mb", str(args.size_mb))["mb_per_s"]
        )
        hs = median(
            args.repeat, lambda: run_json(seam, "handshakes", *keys, "--count", str(args.handshakes))["per_s"]
        )
    with process(quic, "server") as (_, info):
        port = ["--port", str(info["port"])]
        peer = median(
            args.repeat, lambda: run_json(quic, "bulk", *port, "--size-mb", str(args.size_mb))["mb_per_s"]
        )
        peer_hs = median(
            args.repeat, lambda: run_json(quic, "handshakes", *port, "--count", str(args.handshakes))["per_s"]
        )
    rows.append(Row("Seam single-stream bulk, loopback, 1200 B datagrams", ours, peer, "MB/s", "aioquic"))
    rows.append(
        Row("handshakes per second (time to established, sequential)", hs, peer_hs, "/s", "aioquic (TLS 1.3)")
    )
    rows.append(Row("server memory per idle connection", idle_memory(seam, args.idle), None, "KiB", "-"))
    return rows


def idle_memory(seam: str, count: int) -> float:
    with process(seam, "server") as (server, info):
        keys = ["--port", str(info["port"]), "--x25519", str(info["x25519"]), "--kem", str(info["kem"])]
        time.sleep(0.5)
        before = rss_kib(server.pid)
        with process(seam, "hold", *keys, "--count", str(count), stdin=subprocess.PIPE):
            time.sleep(1.0)
            after = rss_kib(server.pid)
    return (after - before) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=64)
    parser.add_argument("--handshakes", type=int, default=200)
    parser.add_argument("--idle", type=int, default=500, help="idle connections for the memory figure")
    parser.add_argument(
        "--only", choices=["transport", "tunnel"], help="run one section (default: transport, then tunnel)"
    )
    args = parser.parse_args()
    if args.only != "tunnel":
        rows = seam_rows(args)
        print(
            f"\nmedian of {args.repeat} runs, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
            f"Seam core {seam.build.describe()}\n"
        )
        print("| benchmark | Seam | unit | peer (same run) | ratio |")
        print("|---|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row.cells()) + " |", flush=True)
    if args.only != "transport":
        # Its own process and table: its peers (nginx, sshd, wrk) and columns differ.
        tunnel = [PY, str(HERE / "tunnel.py"), "--repeat", str(args.repeat)]
        subprocess.run(tunnel, cwd=HERE.parent, timeout=TUNNEL_TIMEOUT, check=True)


if __name__ == "__main__":
    main()
