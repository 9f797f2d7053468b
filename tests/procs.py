"""Start the real ``seamless-relay`` and ``seamless`` CLIs as processes for end-to-end tests.

Each process writes its output to a file in the test's tmp dir; tests wait
for a line with a bounded deadline, and every process is stopped by its PID
(SIGTERM, then SIGKILL) when the fixture ends.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Proc:
    """A running CLI process and its combined output file."""

    popen: subprocess.Popen[bytes]
    log: Path
    name: str

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, pattern: str, *, timeout: float = 20.0, after: int = 0) -> re.Match[str]:
        """Wait until ``pattern`` appears in the output (past offset ``after``); fail with the log."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            match = regex.search(self.output(), after)
            if match:
                return match
            if self.popen.poll() is not None:
                match = regex.search(self.output(), after)
                if match:
                    return match
                raise AssertionError(
                    f"{self.name} exited ({self.popen.returncode}) before {pattern!r}:\n{self.output()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no {pattern!r} within {timeout} s:\n{self.output()}")

    def stop(self, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        return self.popen.returncode


@dataclass
class ProcessGroup:
    """Every process a test starts; ``stop_all`` runs in the fixture's teardown."""

    tmp: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None) -> Proc:
        log = self.tmp / f"{name}-{len(self.procs)}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with log.open("wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=full_env)
        proc = Proc(popen, log, name)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@dataclass
class RelayInfo:
    proc: Proc
    seam_port: int
    http_port: int | None
    x25519: str
    kem: str
    store: Path


def start_relay(group: ProcessGroup, *extra: str, store: Path | None = None, http: bool = True) -> RelayInfo:
    store = store or group.tmp / "relay.json"
    argv = [sys.executable, "-m", "seamless_relay", "--seam-addr", "127.0.0.1:0", "--store", str(store)]
    argv += ["--http-addr", "127.0.0.1:0"] if http else ["--http-addr", "off"]
    proc = group.start("relay", argv + list(extra))
    x25519 = proc.wait_for(r"seam-pubkey-x25519 ([0-9a-f]{64})").group(1)
    kem = proc.wait_for(r"seam-pubkey-kem ([0-9a-f]{2368})").group(1)
    seam_port = int(proc.wait_for(r"seam listening on udp \S+?:(\d+)\b").group(1))
    http_port = int(proc.wait_for(r"http listening on \S+?:(\d+)\b").group(1)) if http else None
    proc.wait_for(r"connect: seamless http")
    return RelayInfo(proc, seam_port, http_port, x25519, kem, store)


def client_argv(relay: RelayInfo, *args: str, seam_port: int | None = None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "seamless_client",
        "--relay",
        f"127.0.0.1:{seam_port or relay.seam_port}",
        "--x25519",
        relay.x25519,
        "--kem",
        relay.kem,
        *args,
    ]


def start_client(group: ProcessGroup, relay: RelayInfo, *args: str, config_home: Path | None = None) -> Proc:
    home = config_home or group.tmp / "client-config"
    return group.start("client", client_argv(relay, *args), env={"XDG_CONFIG_HOME": str(home)})


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def curl(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", str(int(timeout)), *args],
        capture_output=True,
        text=True,
        timeout=timeout + 5,
        check=False,
    )
