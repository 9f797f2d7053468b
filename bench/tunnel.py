"""Seamless tunnels beside OpenSSH remote forwarding (``ssh -R``), measured in the same run.

Run alone with ``python bench/tunnel.py`` or ``python -m bench.tunnel``, or as
part of ``nox -s bench``. Prints one markdown table, metric | Seamless |
ssh -R | ratio (Seamless over ssh -R), then the product owner's targets
(reported, never asserted) and anything odd the tools said.

What runs, all on loopback, each process started here and stopped by its PID
(SIGTERM, then SIGKILL) in a ``finally``:

- a private nginx (tmp config, ``master_process off``) serving a small file;
- a helper server (``tunnel.py serve``): one byte picks echo, sink or source;
- the real relay and client CLIs (``python -m seamless_relay``,
  ``python -m seamless_client --quiet``), one HTTP and one TCP tunnel;
- a private sshd (generated host and client keys) and one ``ssh -N -R``
  carrying nginx and the helper server.

Measured:

1. HTTP: ``wrk -t2 -c32 -d10s --latency`` against nginx directly (reference),
   through the relay's HTTP port with ``Host: bench.localhost``, and through
   ssh's forwarded port. The relay opens a fresh Seam stream and a fresh
   connection to nginx per request (``Connection: close`` upstream), while
   ssh keeps wrk's 32 keep-alive connections as 32 channels.
2. TCP bulk, both directions, a sized transfer through each path.
3. New forwarded connection: connect, send one byte, read the echo, close;
   sequential, p50 and p99.
4. Memory (VmRSS): a fresh relay and the client with 1 tunnel, then the relay
   with 100 TCP tunnels registered by one driver process (``tunnel.py hold``:
   100 ``TunnelClient``s, each with its own key and Seam connection, as 100
   machines would register them; the relay caps tunnels per key), beside sshd
   (the listener and its per-connection processes, summed) and the ssh client
   with 1 and 100 ``-R`` forwards over a single ssh connection.

``--profile DIR`` then samples the relay and the client with py-spy during one
more HTTP run and one more bulk upload, and prints where the time goes.
Figures from a loaded 2-core machine are noisy: read ratios, not digits.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import http.client
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
SCRIPT = str(HERE / "tunnel.py")
# Children import this checkout's packages, whatever an editable install elsewhere points at.
CHILD_ENV = {
    "PYTHONUNBUFFERED": "1",
    "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
}

START_TIMEOUT = 30.0  # seconds for any process to report that it is ready
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
IO_TIMEOUT = 60.0  # seconds any one socket operation may block
BULK_DEADLINE = 600.0  # seconds one bulk transfer may take in all
HOLD_TIMEOUT = 180.0  # seconds for the driver to register all its tunnels
SETTLE = 2.0  # seconds to let a process settle before reading its RSS
WARMUP_CONNECTIONS = 10  # connect round trips before the timed ones
CHUNK = 1 << 20  # bytes per send/receive in the bulk transfers
PAGE = b"<!doctype html><title>bench</title><p>" + b"seamless " * 64 + b"</p>\n"  # ~620 bytes
SUBDOMAIN = "bench"
PROFILE_RATE = 100  # py-spy samples per second

# The product owner's targets: reported beside the figures, never asserted.
TARGET_HTTP_RATIO = 0.5  # Seamless requests/s over ssh -R's
TARGET_BULK_MB_S = 150.0  # MB/s (10^6 bytes) through a TCP tunnel
TARGET_CONNECT_P50_MS = 2.0  # milliseconds to open a forwarded connection
TARGET_RELAY_MB = 80.0  # MB (10^6 bytes) of relay RSS with 100 tunnels


def log(message: str) -> None:
    print(f"[tunnel bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def find_tool(name: str) -> str | None:
    """The tool's path; daemons live in sbin, which a non-root PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")


# -- processes -----------------------------------------------------------------------------------


@dataclass
class Proc:
    """A process started by the bench, its combined output in a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, pattern: str, *, timeout: float = START_TIMEOUT) -> re.Match[str]:
        """Poll the output for ``pattern`` (multiline) until ``timeout``; fail with the output."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            exited = self.popen.poll() is not None
            match = regex.search(self.output())
            if match:
                return match
            if exited:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.output()[-3000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: no {pattern!r} within {timeout} s:\n{self.output()[-3000:]}")

    def json_line(self, *, timeout: float = START_TIMEOUT) -> dict[str, object]:
        loaded: dict[str, object] = json.loads(self.wait_for(r"^\{.*\}$", timeout=timeout).group(0))
        return loaded

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(STOP_TIMEOUT)


@dataclass
class Procs:
    """Every process the bench starts; ``stop_all`` (newest first) runs in a ``finally``."""

    tmp: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None) -> Proc:
        path = self.tmp / f"{len(self.procs):02d}-{name}.log"
        with path.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env={**os.environ, **CHILD_ENV, **(env or {})},
            )
        proc = Proc(name, popen, path)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def tree_rss_kib(root: int) -> int:
    """VmRSS summed over ``root`` and its descendants (sshd forks per connection)."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue  # the process ended while we looked
        ppid = re.search(r"^PPid:\s+(\d+)", text, re.MULTILINE)
        if ppid:
            children.setdefault(int(ppid.group(1)), []).append(int(status.parent.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError, RuntimeError):
            total += rss_kib(pid)
        todo.extend(children.get(pid, []))
    return total


def listening_ports() -> set[int]:
    """Loopback TCP ports in LISTEN state, from /proc/net/tcp{,6}."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def wait_listening(ports: list[int], proc: Proc, *, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(ports) <= listening_ports():
            return
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.output()[-3000:]}")
        time.sleep(0.1)
    missing = sorted(set(ports) - listening_ports())
    raise RuntimeError(f"{proc.name}: ports {missing[:5]}... not listening after {timeout} s")


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all bound at once, then released)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


# -- the helper server: echo, sink, source -------------------------------------------------------


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"EOF after {len(data)} of {size} bytes")
        data += chunk
    return data


class _HelperHandler(socketserver.BaseRequestHandler):
    """First byte ``U``: count bytes to EOF and answer the count (8 bytes, big endian).
    ``D`` + 8-byte size: send that many bytes, then EOF. Anything else: echo it and
    everything after it until EOF."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(IO_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        first = sock.recv(1)
        if first == b"U":
            buffer, count = bytearray(CHUNK), 0
            while received := sock.recv_into(buffer):
                count += received
            sock.sendall(count.to_bytes(8, "big"))
        elif first == b"D":
            remaining = int.from_bytes(recv_exactly(sock, 8), "big")
            block = memoryview(os.urandom(CHUNK))
            while remaining > 0:
                sock.sendall(block[: min(remaining, CHUNK)])
                remaining -= min(remaining, CHUNK)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(CHUNK):  # wait for the peer to close, so it sees no reset
                pass
        elif first:
            sock.sendall(first)
            while data := sock.recv(CHUNK):
                sock.sendall(data)


class _HelperServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512


def serve_helper() -> None:
    with _HelperServer(("127.0.0.1", 0), _HelperHandler) as server:
        print(json.dumps({"port": server.server_address[1]}), flush=True)
        server.serve_forever()


# -- the 100-tunnel driver -----------------------------------------------------------------------


def hold_tunnels(args: argparse.Namespace) -> None:
    """Register ``--count`` TCP tunnels from one process, print their ports, hold until killed."""
    import logging

    import trio

    from seam import Identity
    from seamless_client.config import ClientSettings
    from seamless_client.tunnel import TunnelClient

    async def main() -> None:
        ports: list[int] = []
        async with trio.open_nursery() as nursery:
            with trio.fail_after(HOLD_TIMEOUT):
                for _ in range(args.count):
                    settings = ClientSettings(
                        relay_host="127.0.0.1",
                        relay_port=args.relay_port,
                        x25519_hex=args.x25519,
                        kem_hex=args.kem,
                        kind="tcp",
                        local_port=args.local_port,
                        remote_port=0,
                        quiet=True,
                    )
                    # One key per tunnel, as 100 machines would have (the relay caps tunnels per key).
                    client = TunnelClient(settings, identity=Identity.generate(), out=lambda line: None)
                    reply = await nursery.start(client.run)
                    ports.append(int(reply.remote_port))
            print(json.dumps({"ports": ports}), flush=True)
            await trio.sleep_forever()  # until the bench stops this process by its PID

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")  # reconnects
    trio.run(main)


# -- starting the peers ----------------------------------------------------------------------------


@dataclass
class Relay:
    proc: Proc
    seam_port: int
    http_port: int
    x25519: str
    kem: str


def start_relay(procs: Procs, name: str) -> Relay:
    store = procs.tmp / f"{name}.json"
    argv = [PY, "-m", "seamless_relay", "--seam-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]
    proc = procs.start(name, [*argv, "--store", str(store)])
    x25519 = proc.wait_for(r"seam-pubkey-x25519 ([0-9a-f]{64})").group(1)
    kem = proc.wait_for(r"seam-pubkey-kem ([0-9a-f]{2368})").group(1)
    seam_port = int(proc.wait_for(r"seam listening on udp \S+?:(\d+)\b").group(1))
    http_port = int(proc.wait_for(r"http listening on \S+?:(\d+)\b").group(1))
    return Relay(proc, seam_port, http_port, x25519, kem)


def start_client(procs: Procs, relay: Relay, *command: str) -> tuple[Proc, str]:
    """``seamless --quiet KIND ...``; returns the process and its public URL."""
    argv = [PY, "-m", "seamless_client", "--relay", f"127.0.0.1:{relay.seam_port}"]
    argv += ["--x25519", relay.x25519, "--kem", relay.kem, "--quiet", *command]
    # A private config dir: the client's identity file stays in tmp, not in ~/.config.
    proc = procs.start(f"client-{command[0]}", argv, env={"XDG_CONFIG_HOME": str(procs.tmp / "xdg")})
    url = proc.wait_for(r"Forwarding (\S+) -> ").group(1)
    return proc, url


def start_helper(procs: Procs) -> int:
    port = procs.start("helper", [PY, SCRIPT, "serve"]).json_line()["port"]
    assert isinstance(port, int)
    return port


def start_nginx(procs: Procs, nginx: str) -> int:
    tmp = procs.tmp / "nginx"
    (tmp / "www").mkdir(parents=True)
    (tmp / "www" / "index.html").write_bytes(PAGE)
    port = free_ports(1)[0]
    temps = "".join(
        f"  {kind}_temp_path {tmp / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = tmp / "nginx.conf"
    conf.write_text(
        "daemon off;\nmaster_process off;\nworker_processes 1;\n"
        f"pid {tmp / 'nginx.pid'};\nerror_log {tmp / 'error.log'} warn;\n"
        "events { worker_connections 4096; }\n"
        "http {\n  access_log off;\n" + temps + f"  server {{\n    listen 127.0.0.1:{port};\n"
        f"    root {tmp / 'www'};\n  }}\n}}\n"
    )
    proc = procs.start("nginx", [nginx, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)])
    wait_listening([port], proc)
    return port


@dataclass
class Sshd:
    proc: Proc
    port: int
    key: Path
    user: str


def start_sshd(procs: Procs, sshd: str, keygen: str) -> Sshd:
    """A private sshd on loopback that accepts one generated key for the current user."""
    tmp = procs.tmp / "ssh"
    tmp.mkdir()
    for key in ("host_key", "client_key"):
        argv = [keygen, "-q", "-t", "ed25519", "-N", "", "-C", f"seamless-bench-{key}", "-f", str(tmp / key)]
        subprocess.run(argv, check=True, capture_output=True, timeout=START_TIMEOUT)
    (tmp / "authorized_keys").write_bytes((tmp / "client_key.pub").read_bytes())
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    user = getpass.getuser()
    port = free_ports(1)[0]
    config = tmp / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\n"
        f"HostKey {tmp / 'host_key'}\nAuthorizedKeysFile {tmp / 'authorized_keys'}\n"
        f"PidFile {tmp / 'sshd.pid'}\nAllowUsers {user}\n"
        "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "AllowTcpForwarding yes\n"
    )
    proc = procs.start("sshd", [sshd, "-D", "-e", "-f", str(config)])
    proc.wait_for(rf"Server listening on 127\.0\.0\.1 port {port}\b")
    return Sshd(proc, port, tmp / "client_key", user)


def start_ssh_forwards(procs: Procs, ssh: str, sshd: Sshd, forwards: list[tuple[int, int]]) -> Proc:
    """One ``ssh -N`` with ``-R REMOTE:127.0.0.1:LOCAL`` per pair; returns once all listen."""
    argv = [ssh, "-F", "/dev/null", "-i", str(sshd.key), "-p", str(sshd.port), "-N"]
    for option in (
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=yes",
        "ExitOnForwardFailure=yes",
        "LogLevel=ERROR",
    ):
        argv += ["-o", option]
    for remote, local in forwards:
        argv += ["-R", f"{remote}:127.0.0.1:{local}"]
    proc = procs.start(f"ssh-R{len(forwards)}", [*argv, f"{sshd.user}@127.0.0.1"])
    wait_listening([remote for remote, _ in forwards], proc)
    return proc


# -- measurements --------------------------------------------------------------------------------


@dataclass
class Wrk:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    problems: list[str]


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def run_wrk(wrk: str, url: str, *, host: str | None, duration: int, label: str) -> Wrk:
    argv = [wrk, "-t2", "-c32", f"-d{duration}s", "--latency", url]
    if host:
        argv += ["-H", f"Host: {host}"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    out = result.stdout
    if result.returncode != 0 or "Requests/sec:" not in out:
        raise RuntimeError(f"wrk ({label}) failed ({result.returncode}):\n{out}\n{result.stderr}")

    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
        if not match:
            raise RuntimeError(f"wrk ({label}): no {percent}% latency in:\n{out}")
        return float(match.group(1)) * _UNITS_MS[match.group(2)]

    problems = []
    for pattern in (r"Socket errors: .*", r"Non-2xx or 3xx responses: \d+"):
        for match in re.finditer(pattern, out):
            problems.append(f"wrk {label}: {match.group(0)}")
    if result.stderr.strip():
        problems.append(f"wrk {label} stderr: {result.stderr.strip()[:300]}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return Wrk(rate, latency("50"), latency("99"), problems)


def check_http(port: int, host: str | None) -> None:
    """Fifty sequential GETs must return the page: a wrong route would only show as non-2xx in wrk."""
    for _ in range(50):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=IO_TIMEOUT)
        try:
            conn.request("GET", "/index.html", headers={"Host": host} if host else {})
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200 or body != PAGE:
            raise RuntimeError(f"GET through port {port} (Host {host}): {response.status} {body[:200]!r}")


def bulk_upload(port: int, size: int) -> float:
    """MB/s sending ``size`` bytes into the sink, until it confirms the count."""
    block = memoryview(os.urandom(CHUNK))
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
        start = time.perf_counter()
        sock.sendall(b"U")
        remaining = size
        while remaining > 0:
            if time.perf_counter() - start > BULK_DEADLINE:
                raise RuntimeError(f"upload through {port}: over {BULK_DEADLINE} s")
            sock.sendall(block[: min(remaining, CHUNK)])
            remaining -= min(remaining, CHUNK)
        sock.shutdown(socket.SHUT_WR)
        count = int.from_bytes(recv_exactly(sock, 8), "big")
        elapsed = time.perf_counter() - start
    if count != size:
        raise RuntimeError(f"upload through {port}: the sink counted {count} of {size} bytes")
    return size / elapsed / 1e6


def bulk_download(port: int, size: int) -> float:
    """MB/s receiving ``size`` bytes from the source, until its EOF."""
    buffer = bytearray(CHUNK)
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
        start = time.perf_counter()
        sock.sendall(b"D" + size.to_bytes(8, "big"))
        count = 0
        while received := sock.recv_into(buffer):
            count += received
            if time.perf_counter() - start > BULK_DEADLINE:
                raise RuntimeError(f"download through {port}: over {BULK_DEADLINE} s")
        elapsed = time.perf_counter() - start
    if count != size:
        raise RuntimeError(f"download through {port}: got {count} of {size} bytes")
    return size / elapsed / 1e6


def connect_times(port: int, count: int) -> list[float]:
    """Milliseconds per connect + 1-byte echo + close, ``count`` times after a short warm-up."""
    times = []
    for index in range(WARMUP_CONNECTIONS + count):
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(b"x")
            if sock.recv(1) != b"x":
                raise RuntimeError(f"connect through {port}: no echo")
        if index >= WARMUP_CONNECTIONS:
            times.append((time.perf_counter() - start) * 1000)
    return times


def percentile(values: list[float], pct: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


# -- the report ----------------------------------------------------------------------------------


@dataclass
class Row:
    metric: str
    ours: float | None
    peer: float | None

    def cells(self) -> list[str]:
        ratio = "n/a" if not self.ours or not self.peer else f"{self.ours / self.peer:.2f}x"
        return [self.metric, _fmt(self.ours), _fmt(self.peer), ratio]


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value >= 1000 else f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    reference: list[Row] = field(default_factory=list)  # no tunnel: ours column only
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)

    def print(self, repeat: int) -> None:
        print(
            f"\n### Tunnels: Seamless vs ssh -R (median of {repeat} runs, {os.cpu_count()} cores, "
            f"Python {sys.version.split()[0]}; ratio = Seamless / ssh -R)\n"
        )
        print("| metric | Seamless | ssh -R | ratio |")
        print("|---|---|---|---|")
        for row in self.rows:
            print("| " + " | ".join(row.cells()) + " |")
        for row in self.reference:
            print(f"| reference, no tunnel: {row.metric} | {_fmt(row.ours)} (direct) | - | - |")
        for title, lines in (
            ("Targets (reported, not asserted)", self.targets),
            ("Skipped", self.skipped),
            ("Notes", self.notes),
            ("Profiles (py-spy)", self.profiles),
        ):
            if lines:
                print(f"\n{title}:\n")
                print("\n".join(line if line.startswith("  ") else f"- {line}" for line in lines))


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class Rig:
    """The throughput rig: every path to nginx and to the helper server."""

    helper: int
    nginx: int | None = None
    relay: Relay | None = None
    http_client: Proc | None = None
    tcp_client: Proc | None = None
    tcp_public: int | None = None
    sshd: Sshd | None = None
    ssh: Proc | None = None
    ssh_nginx: int | None = None
    ssh_helper: int | None = None


def build_rig(procs: Procs, tools: dict[str, str | None]) -> Rig:
    rig = Rig(helper=start_helper(procs))
    if tools["nginx"]:
        rig.nginx = start_nginx(procs, tools["nginx"])
    rig.relay = start_relay(procs, "relay")
    if rig.nginx:
        command = ("http", str(rig.nginx), "--subdomain", SUBDOMAIN)
        rig.http_client, url = start_client(procs, rig.relay, *command)
        log(f"Seamless HTTP tunnel: {url}")
    rig.tcp_client, url = start_client(procs, rig.relay, "tcp", str(rig.helper), "--remote-port", "0")
    rig.tcp_public = int(url.rsplit(":", 1)[1])
    if tools["sshd"] and tools["ssh"] and tools["ssh-keygen"]:
        rig.sshd = start_sshd(procs, tools["sshd"], tools["ssh-keygen"])
        rig.ssh_helper, ssh_nginx = free_ports(2)
        forwards = [(rig.ssh_helper, rig.helper)]
        if rig.nginx:
            rig.ssh_nginx = ssh_nginx
            forwards.append((ssh_nginx, rig.nginx))
        rig.ssh = start_ssh_forwards(procs, tools["ssh"], rig.sshd, forwards)
    return rig


def http_rows(rig: Rig, report: Report, tools: dict[str, str | None], args: argparse.Namespace) -> None:
    wrk = tools["wrk"]
    if not wrk or not rig.nginx or not rig.relay:
        report.rows += [Row("HTTP requests/s (wrk -t2 -c32)", None, None)]
        return
    paths: dict[str, tuple[int, str | None]] = {
        "direct": (rig.nginx, None),
        "seamless": (rig.relay.http_port, f"{SUBDOMAIN}.localhost"),
    }
    if rig.ssh_nginx:
        paths["ssh"] = (rig.ssh_nginx, None)
    for port, host in paths.values():
        check_http(port, host)
    results: dict[str, list[Wrk]] = {name: [] for name in paths}
    for run in range(args.repeat):
        for name, (port, host) in paths.items():  # interleaved, so drift in load hits every path
            log(f"wrk {name}, run {run + 1}/{args.repeat}, {args.duration} s")
            url = f"http://127.0.0.1:{port}/index.html"
            result = run_wrk(wrk, url, host=host, duration=args.duration, label=f"{name} run {run + 1}")
            results[name].append(result)
            report.notes += result.problems

    def fig(name: str, attr: str) -> float | None:
        return med([getattr(r, attr) for r in results.get(name, [])])

    title = f"HTTP requests/s (wrk -t2 -c32 -d{args.duration}s, {len(PAGE)} B static file)"
    report.rows += [
        Row(title, fig("seamless", "requests_per_s"), fig("ssh", "requests_per_s")),
        Row("HTTP latency p50 (ms)", fig("seamless", "p50_ms"), fig("ssh", "p50_ms")),
        Row("HTTP latency p99 (ms)", fig("seamless", "p99_ms"), fig("ssh", "p99_ms")),
    ]
    report.reference += [
        Row("HTTP requests/s, wrk straight to nginx", fig("direct", "requests_per_s"), None),
        Row("HTTP latency p50 (ms)", fig("direct", "p50_ms"), None),
        Row("HTTP latency p99 (ms)", fig("direct", "p99_ms"), None),
    ]


def bulk_rows(rig: Rig, report: Report, args: argparse.Namespace) -> None:
    size = args.bulk_mib << 20
    paths = {"direct": rig.helper, "seamless": rig.tcp_public, "ssh": rig.ssh_helper}
    figures: dict[tuple[str, str], list[float]] = {}
    for run in range(args.repeat):
        for name, port in paths.items():
            if port is None:
                continue
            for direction, measure in (("up", bulk_upload), ("down", bulk_download)):
                log(f"bulk {direction} {args.bulk_mib} MiB {name}, run {run + 1}/{args.repeat}")
                figures.setdefault((name, direction), []).append(measure(port, size))

    def fig(name: str, direction: str) -> float | None:
        return med(figures.get((name, direction), []))

    directions = (("up", "public client -> local service"), ("down", "local service -> public client"))
    for direction, what in directions:
        metric = f"TCP bulk {args.bulk_mib} MiB, {what} (MB/s)"
        report.rows.append(Row(metric, fig("seamless", direction), fig("ssh", direction)))
        report.reference.append(Row(f"TCP bulk, {what} (MB/s)", fig("direct", direction), None))


def connect_rows(rig: Rig, report: Report, args: argparse.Namespace) -> None:
    paths = {"direct": rig.helper, "seamless": rig.tcp_public, "ssh": rig.ssh_helper}
    p50: dict[str, list[float]] = {}
    p99: dict[str, list[float]] = {}
    for run in range(args.repeat):
        for name, port in paths.items():
            if port is None:
                continue
            log(f"{args.connects} new connections {name}, run {run + 1}/{args.repeat}")
            times = connect_times(port, args.connects)
            p50.setdefault(name, []).append(percentile(times, 50))
            p99.setdefault(name, []).append(percentile(times, 99))
    what = f"new forwarded connection, connect + 1-byte echo, {args.connects} sequential"
    report.rows += [
        Row(f"{what}: p50 (ms)", med(p50.get("seamless", [])), med(p50.get("ssh", []))),
        Row(f"{what}: p99 (ms)", med(p99.get("seamless", [])), med(p99.get("ssh", []))),
    ]
    report.reference += [
        Row("connect + 1-byte echo p50 (ms)", med(p50.get("direct", [])), None),
        Row("connect + 1-byte echo p99 (ms)", med(p99.get("direct", [])), None),
    ]


def mb(kib: int | None) -> float | None:
    """KiB (as /proc reports) to MB (10^6 bytes, as the targets are stated)."""
    return None if kib is None else kib * 1024 / 1e6


def memory_rows(procs: Procs, rig: Rig, report: Report, tools: dict[str, str | None], tunnels: int) -> None:
    """A fresh relay with 1, then ``tunnels`` tunnels; sshd with 1, then ``tunnels`` forwards."""
    relay = start_relay(procs, "relay-memory")
    one, _ = start_client(procs, relay, "tcp", str(rig.helper), "--remote-port", "0")
    time.sleep(SETTLE)
    relay_one, client_one = rss_kib(relay.proc.pid), rss_kib(one.pid)
    one.stop()
    log(f"registering {tunnels} tunnels from one driver process")
    argv = [PY, SCRIPT, "hold", "--count", str(tunnels), "--relay-port", str(relay.seam_port)]
    argv += ["--x25519", relay.x25519, "--kem", relay.kem, "--local-port", str(rig.helper)]
    driver = procs.start("hold", argv)
    ports = driver.json_line(timeout=HOLD_TIMEOUT + 10)["ports"]
    assert isinstance(ports, list) and len(ports) == tunnels
    wait_listening([int(port) for port in ports], relay.proc)
    time.sleep(SETTLE)
    relay_many, client_many = rss_kib(relay.proc.pid), rss_kib(driver.pid)
    driver.stop()
    relay.proc.stop()

    sshd_one = ssh_one = sshd_many = ssh_many = None
    if rig.sshd and tools["ssh"]:
        if rig.ssh:
            rig.ssh.stop()  # its connection's sshd processes would count too
        time.sleep(1.0)
        forward = start_ssh_forwards(procs, tools["ssh"], rig.sshd, [(free_ports(1)[0], rig.helper)])
        time.sleep(SETTLE)
        sshd_one, ssh_one = tree_rss_kib(rig.sshd.proc.pid), rss_kib(forward.pid)
        forward.stop()
        time.sleep(1.0)
        pairs = [(port, rig.helper) for port in free_ports(tunnels)]
        forward = start_ssh_forwards(procs, tools["ssh"], rig.sshd, pairs)
        time.sleep(SETTLE)
        sshd_many, ssh_many = tree_rss_kib(rig.sshd.proc.pid), rss_kib(forward.pid)
        forward.stop()

    report.rows += [
        Row("relay / sshd RSS, 1 tunnel (MB)", mb(relay_one), mb(sshd_one)),
        Row(f"relay / sshd RSS, {tunnels} tunnels (MB)", mb(relay_many), mb(sshd_many)),
        Row("client / ssh RSS, 1 tunnel (MB)", mb(client_one), mb(ssh_one)),
        Row(f"client / ssh RSS, {tunnels} tunnels in one process (MB)", mb(client_many), mb(ssh_many)),
    ]
    report.notes.append(
        f"memory: Seamless {tunnels} tunnels = {tunnels} client keys and Seam connections in one driver "
        "process; "
        f"ssh = {tunnels} -R on one ssh connection. sshd figure = listener + per-connection processes, "
        "VmRSS summed, so shared library pages count once per process (overstates sshd a little)."
    )


def evaluate_targets(report: Report, tunnels: int) -> None:
    rows = {row.metric: row for row in report.rows}

    def find(prefix: str) -> Row | None:
        return next((row for name, row in rows.items() if name.startswith(prefix)), None)

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else "met" if ok else "MISSED"

    http = find("HTTP requests/s")
    if http:
        ratio = http.ours / http.peer if http.ours and http.peer else None
        shown = "n/a" if ratio is None else f"{ratio:.2f}x"
        report.targets.append(
            f"HTTP requests/s >= {TARGET_HTTP_RATIO}x ssh -R: {shown} "
            f"-> {verdict(None if ratio is None else ratio >= TARGET_HTTP_RATIO)}"
        )
    for row in report.rows:
        if row.metric.startswith("TCP bulk"):
            ok = None if row.ours is None else row.ours >= TARGET_BULK_MB_S
            report.targets.append(
                f"{row.metric.split(', ', 1)[1].removesuffix(' (MB/s)')} >= {TARGET_BULK_MB_S:.0f} MB/s: "
                f"{_fmt(row.ours)} -> {verdict(ok)}"
            )
    connect = find("new forwarded connection")
    if connect:
        ok = None if connect.ours is None else connect.ours < TARGET_CONNECT_P50_MS
        report.targets.append(
            f"new forwarded connection p50 < {TARGET_CONNECT_P50_MS} ms: "
            f"{_fmt(connect.ours)} ms -> {verdict(ok)}"
        )
    memory = find(f"relay / sshd RSS, {tunnels} tunnels")
    if memory:
        ok = None if memory.ours is None else memory.ours < TARGET_RELAY_MB
        report.targets.append(
            f"relay RSS with {tunnels} tunnels < {TARGET_RELAY_MB:.0f} MB: "
            f"{_fmt(memory.ours)} MB -> {verdict(ok)}"
        )


# -- profiling -----------------------------------------------------------------------------------


def summarise_profile(path: Path, seconds: float, rate: int, top: int = 12) -> list[str]:
    """Top functions by own and by inclusive samples, from py-spy's raw (collapsed stack) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short_frame(frame) for frame in stack.split(";")]
        frames = [frame for frame in frames if not frame.startswith("process ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return [f"  {path.name}: no samples"]
    busy = 100 * total / (seconds * rate)
    lines = [
        f"  {path.name}: {total} active samples (idle excluded), the process busy ~{busy:.0f}% of one core"
    ]
    lines.append("    own time (the function itself, C calls included):")
    lines += [f"      {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("    inclusive time (the function and what it calls):")
    # Frames on every sample (the CLI, trio.run) say nothing; the scheduler loop neither.
    shown = [
        (frame, n)
        for frame, n in inclusive.most_common()
        if n < total and not frame.startswith(("unrolled_run ", "run ("))
    ]
    lines += [f"      {100 * n / total:5.1f}%  {frame}" for frame, n in shown[:top]]
    return lines


def _short_frame(frame: str) -> str:
    """``func (/long/path/pkg/mod.py)`` -> ``func (pkg/mod.py)``."""
    match = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    parts = Path(match.group(2)).parts
    return f"{match.group(1)} ({'/'.join(parts[-2:])})"


def sample(
    procs: Procs,
    pyspy: str,
    targets: dict[str, int],
    out_dir: Path,
    scenario: str,
    work: Callable[[], object],
) -> tuple[object, list[tuple[Path, float]]]:
    """Run ``work`` with py-spy recording each target; SIGINT makes py-spy write its file."""
    spies = []
    for name, pid in targets.items():
        out = out_dir / f"{name}-{scenario}.txt"
        argv = [pyspy, "record", "--pid", str(pid), "--format", "raw", "--nolineno"]
        argv += ["--rate", str(PROFILE_RATE), "--output", str(out)]
        spies.append((procs.start(f"py-spy-{name}-{scenario}", argv), out))
    start = time.monotonic()  # py-spy samples from here (attaching) to the SIGINT
    time.sleep(1.0)  # let py-spy attach
    try:
        result = work()
    finally:
        elapsed = time.monotonic() - start
        for spy, _ in spies:
            if spy.popen.poll() is None:
                os.kill(spy.pid, signal.SIGINT)
            try:
                spy.popen.wait(STOP_TIMEOUT * 3)
            except subprocess.TimeoutExpired:
                spy.stop()
    return result, [(out, elapsed) for _, out in spies]


def profile(
    procs: Procs, rig: Rig, report: Report, tools: dict[str, str | None], args: argparse.Namespace
) -> None:
    pyspy = find_tool("py-spy")
    if not pyspy:
        report.skipped.append("--profile: py-spy not installed (pip install py-spy)")
        return
    out_dir = Path(args.profile).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    assert rig.relay and rig.tcp_client and rig.tcp_public
    relay = rig.relay
    runs: list[tuple[str, dict[str, int], Callable[[], object]]] = []
    wrk, http_client = tools["wrk"], rig.http_client
    if wrk and http_client:
        url = f"http://127.0.0.1:{relay.http_port}/index.html"

        def http_run() -> Wrk:
            host = f"{SUBDOMAIN}.localhost"
            return run_wrk(wrk, url, host=host, duration=args.duration, label="seamless, profiled")

        runs.append(("http", {"relay": relay.proc.pid, "client": http_client.pid}, http_run))
    public, size = rig.tcp_public, args.bulk_mib << 20
    targets = {"relay": relay.proc.pid, "client": rig.tcp_client.pid}
    runs.append(("bulk-up", targets, lambda: bulk_upload(public, size)))
    for scenario, pids, work in runs:
        log(f"profiling relay and client during {scenario}")
        result, outputs = sample(procs, pyspy, pids, out_dir, scenario, work)
        if isinstance(result, Wrk):
            report.notes += result.problems
        report.profiles.append(f"{scenario} under py-spy (sampling slows the target): {_describe(result)}")
        for out, elapsed in outputs:
            if out.exists():
                report.profiles += summarise_profile(out, elapsed, PROFILE_RATE)
            else:
                report.profiles.append(f"  {out.name}: py-spy wrote nothing")
    report.profiles.append(f"raw collapsed stacks in {out_dir} (flamegraph.pl or speedscope read them)")


def _describe(result: object) -> str:
    if isinstance(result, Wrk):
        return f"{result.requests_per_s:,.0f} requests/s, p50 {result.p50_ms:.2f} ms"
    if isinstance(result, float):
        return f"{result:,.1f} MB/s"
    return str(result)


# -- main ----------------------------------------------------------------------------------------


def run_bench(args: argparse.Namespace) -> Report:
    report = Report()
    names = ("wrk", "nginx", "sshd", "ssh", "ssh-keygen")
    tools = {name: find_tool(name) for name in names}
    if not tools["wrk"]:
        report.skipped.append("HTTP rows: wrk not installed (apt-get install -y wrk)")
    if not tools["nginx"]:
        report.skipped.append("HTTP rows: nginx not installed (apt-get install -y nginx-light)")
    for name in ("sshd", "ssh", "ssh-keygen"):
        if not tools[name]:
            hint = "apt-get install -y openssh-server openssh-client"
            report.skipped.append(f"every ssh -R figure: {name} not installed ({hint})")
    with tempfile.TemporaryDirectory(prefix="seamless-tunnel-bench-") as tmp:
        procs = Procs(Path(tmp))
        try:
            rig = build_rig(procs, tools)
            http_rows(rig, report, tools, args)
            bulk_rows(rig, report, args)
            connect_rows(rig, report, args)
            if args.profile:
                profile(procs, rig, report, tools, args)
            for proc in (rig.http_client, rig.tcp_client, rig.relay.proc if rig.relay else None):
                if proc:
                    proc.stop()  # the memory figures use a fresh relay
            memory_rows(procs, rig, report, tools, args.tunnels)
        finally:
            procs.stop_all()
    evaluate_targets(report, args.tunnels)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure; the median is shown")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--bulk-mib", type=int, default=512, help="MiB per bulk transfer")
    parser.add_argument("--connects", type=int, default=200, help="timed connections per path")
    parser.add_argument("--tunnels", type=int, default=100, help="tunnels for the memory figure")
    parser.add_argument("--profile", metavar="DIR", help="also sample relay and client with py-spy")
    sub = parser.add_subparsers(dest="role", help="helper processes the bench starts itself")
    sub.add_parser("serve", help="the echo / sink / source server")
    hold = sub.add_parser("hold", help="register --count TCP tunnels from one process and hold them")
    hold.add_argument("--count", type=int, required=True)
    hold.add_argument("--relay-port", type=int, required=True)
    hold.add_argument("--x25519", required=True)
    hold.add_argument("--kem", required=True)
    hold.add_argument("--local-port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.role == "serve":
        serve_helper()
    elif args.role == "hold":
        hold_tunnels(args)
    else:
        run_bench(args).print(args.repeat)


if __name__ == "__main__":
    main()
