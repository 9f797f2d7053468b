"""End to end: real ssh, redis-cli, dig and socket clients through the real relay and client.

Every process (relay, clients, sshd, redis-server, the small servers in
``tests/servers``) runs on loopback, is started through one ``ProcessGroup``
and is stopped by its PID when the test ends, pass or fail. Every wait and
every subprocess has a deadline, so a hung tunnel fails the test instead of
hanging the run.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import random
import socket
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require_tool

from tests.procs import Proc, ProcessGroup, RelayInfo, free_port, start_client, start_relay

pytestmark = pytest.mark.timeout(60)

SERVERS = Path(__file__).parent / "servers"
RUN_TIMEOUT = 30.0  # seconds for any one client command (ssh, redis-cli, dig)
REGISTER_TIMEOUT = 20.0  # seconds for a client to print its Forwarding line
DNS_ANSWER = "192.0.2.7"  # what the private dnsmasq answers for *.example.test


def relay_process(group: ProcessGroup, *flags: str) -> RelayInfo:
    return start_relay(group, *flags)


@pytest.fixture
def relay(procs: ProcessGroup) -> RelayInfo:
    return relay_process(procs)


def tunnel(
    group: ProcessGroup,
    relay: RelayInfo,
    kind: str,
    local_port: int,
    remote_port: int = 0,
    *,
    config_home: Path | None = None,
) -> tuple[Proc, int]:
    """Start ``seamless KIND LOCAL --remote-port N`` and return it with the public port it got."""
    client = start_client(
        group, relay, kind, str(local_port), "--remote-port", str(remote_port), config_home=config_home
    )
    match = client.wait_for(
        rf"Forwarding {kind}://127\.0\.0\.1:(\d+) -> {kind}://127\.0\.0\.1:{local_port}\b",
        timeout=REGISTER_TIMEOUT,
    )
    public = int(match.group(1))
    if remote_port:
        assert public == remote_port
    return client, public


def server_process(group: ProcessGroup, script: str, port: int) -> Proc:
    proc = group.start(script, [sys.executable, str(SERVERS / script), str(port)])
    proc.wait_for(rf"listening on {port}\b", timeout=10)
    return proc


def dnsmasq(group: ProcessGroup) -> int:
    """A private dnsmasq on a loopback port answering every *.example.test A query with DNS_ANSWER.

    dnsmasq binds the port for both UDP and TCP, and a port free for one may
    be taken for the other, so a failed start is retried on a new port.
    """
    binary = require_tool("dnsmasq")
    for _attempt in range(3):
        port = free_port(socket.SOCK_DGRAM)
        argv = [binary, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--pid-file="]
        argv += [f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces", "--log-facility=-"]
        argv += [f"--address=/example.test/{DNS_ANSWER}"]
        if os.geteuid() == 0:
            argv.append("--user=root")
        proc = group.start("dnsmasq", argv)
        try:
            proc.wait_for(r"started, version", timeout=10)
            return port
        except AssertionError:
            if proc.popen.poll() is None:
                raise
    raise AssertionError(f"dnsmasq did not start:\n{proc.output()}")


def redis_server(group: ProcessGroup) -> int:
    binary = require_tool("redis-server")
    require_tool("redis-cli")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--daemonize", "no", "--dir", str(group.tmp)]
    group.start("redis-server", argv).wait_for(r"Ready to accept connections", timeout=10)
    return port


def run(argv: list[str], *, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a client command to completion, failing with its output when it exits non-zero."""
    result = subprocess.run(argv, input=input, capture_output=True, timeout=RUN_TIMEOUT, check=False)
    assert result.returncode == 0, (
        f"{argv[0]} exited {result.returncode}:\n{result.stdout[-2000:]!r}\n{result.stderr[-2000:]!r}"
    )
    return result


def redis_cli(port: int, *args: str, input: bytes | None = None) -> str:
    return run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args], input=input).stdout.decode()


# -- ssh ------------------------------------------------------------------------------------------


def start_sshd(group: ProcessGroup, user: str) -> tuple[int, Path]:
    """A private sshd on a free loopback port that accepts one generated key for ``user``."""
    sshd = require_tool("sshd")
    keygen = require_tool("ssh-keygen")
    tmp = group.tmp
    for key in ("host_key", "client_key"):
        run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", f"seamless-test-{key}", "-f", str(tmp / key)])
    (tmp / "authorized_keys").write_bytes((tmp / "client_key.pub").read_bytes())
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    port = free_port()
    config = tmp / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {tmp / 'host_key'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\n"
        f"PidFile {tmp / 'sshd.pid'}\n"
        f"AllowUsers {user}\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "Subsystem sftp internal-sftp\n"
    )
    proc = group.start("sshd", [sshd, "-D", "-e", "-f", str(config)])
    proc.wait_for(rf"Server listening on 127\.0\.0\.1 port {port}\b", timeout=10)
    return port, tmp / "client_key"


def ssh_options(key: Path) -> list[str]:
    # -F /dev/null: the user's ~/.ssh/config must not change what the test does.
    options = ["-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"]
    for option in ("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "BatchMode=yes"):
        options += ["-o", option]
    return [*options, "-o", "ConnectTimeout=15", "-o", "LogLevel=ERROR"]


def test_ssh_and_scp_over_tcp_tunnel(procs: ProcessGroup, relay: RelayInfo) -> None:
    require_tool("ssh")
    require_tool("scp")
    user = getpass.getuser()
    sshd_port, key = start_sshd(procs, user)
    _, public = tunnel(procs, relay, "tcp", sshd_port)
    ssh = ["ssh", "-p", str(public), *ssh_options(key), f"{user}@127.0.0.1"]

    out = run([*ssh, "echo seamless-ok; head -c 5000000 /dev/zero | sha256sum"]).stdout.decode()
    assert out.split() == ["seamless-ok", hashlib.sha256(bytes(5_000_000)).hexdigest(), "-"]

    upload = procs.tmp / "upload.bin"
    upload.write_bytes(random.Random(7).randbytes(5_000_000))
    digest = hashlib.sha256(upload.read_bytes()).hexdigest()
    far = procs.tmp / "far-end.bin"
    run(["scp", "-P", str(public), *ssh_options(key), str(upload), f"{user}@127.0.0.1:{far}"])
    assert run([*ssh, f"sha256sum {far}"]).stdout.decode().split()[0] == digest

    # The same bytes again on ssh's stdin, hashed by the far end as they arrive.
    out = run([*ssh, "sha256sum"], input=upload.read_bytes()).stdout.decode()
    assert out.split()[0] == digest


# -- redis ----------------------------------------------------------------------------------------


def test_redis_over_tcp_tunnel_with_fixed_remote_port(procs: ProcessGroup, relay: RelayInfo) -> None:
    redis_port = redis_server(procs)
    remote = free_port()
    tunnel(procs, relay, "tcp", redis_port, remote)

    assert redis_cli(remote, "SET", "k", "v").strip() == "OK"
    assert redis_cli(remote, "GET", "k").strip() == "v"

    big = "".join(random.Random(1).choices(string.ascii_letters, k=1_000_000)).encode()
    assert redis_cli(remote, "-x", "SET", "big", input=big).strip() == "OK"
    assert redis_cli(remote, "STRLEN", "big").strip() == "1000000"
    assert redis_cli(remote, "GET", "big").encode() == big + b"\n"

    # 200 commands read from stdin, all on one connection.
    replies = redis_cli(remote, input=b"INCR one-conn\n" * 200).split()
    assert replies == [str(n) for n in range(1, 201)]

    resp = b"*2\r\n$4\r\nINCR\r\n$4\r\npipe\r\n" * 1000
    assert "errors: 0, replies: 1000" in redis_cli(remote, "--pipe", input=resp)
    assert redis_cli(remote, "GET", "pipe").strip() == "1000"


def test_concurrent_redis_clients_over_tcp_tunnel(procs: ProcessGroup, relay: RelayInfo) -> None:
    redis_port = redis_server(procs)
    _, public = tunnel(procs, relay, "tcp", redis_port)
    argv = ["redis-cli", "-h", "127.0.0.1", "-p", str(public), "-r", "50", "INCR", "counter"]
    clients = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(10)]
    try:
        outputs = [client.communicate(timeout=RUN_TIMEOUT)[0].decode() for client in clients]
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
    for client, output in zip(clients, outputs, strict=True):
        assert client.returncode == 0, output
        assert len(output.split()) == 50, output
    assert redis_cli(public, "GET", "counter").strip() == "500"


# -- half-close -----------------------------------------------------------------------------------


def upper_roundtrip(port: int, payload: bytes) -> bytes:
    """Send ``payload``, half-close, and read the reply until the server's EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=RUN_TIMEOUT) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def test_tcp_half_close_crosses_the_tunnel_both_ways(procs: ProcessGroup, relay: RelayInfo) -> None:
    local = free_port()
    server_process(procs, "tcp_upper.py", local)
    _, public = tunnel(procs, relay, "tcp", local)

    big = "".join(random.Random(3).choices(string.ascii_lowercase, k=300_000)).encode()
    for payload in (b"hello, half-close", big, b""):
        assert upper_roundtrip(public, payload) == payload.upper()


# -- UDP ------------------------------------------------------------------------------------------


def dns_query(query_id: int, name: str) -> bytes:
    header = query_id.to_bytes(2, "big") + b"\x01\x00" + b"\x00\x01\x00\x00\x00\x00\x00\x00"
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00"
    return header + qname + b"\x00\x01\x00\x01"  # type A, class IN


def test_dns_over_udp_tunnel(procs: ProcessGroup, relay: RelayInfo) -> None:
    dig = require_tool("dig")
    local = dnsmasq(procs)
    _, public = tunnel(procs, relay, "udp", local)
    argv = [dig, "@127.0.0.1", "-p", str(public), "+short", "+time=2", "+tries=3"]

    assert run([*argv, "example.test", "A"]).stdout.decode().split() == [DNS_ANSWER]

    # Each dig binds its own random source port, so these are 20 flows at once.
    digs = [
        subprocess.Popen([*argv, f"q{n}.example.test", "A"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for n in range(20)
    ]
    try:
        outputs = [proc.communicate(timeout=RUN_TIMEOUT)[0].decode() for proc in digs]
    finally:
        for proc in digs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [output.split() for output in outputs] == [[DNS_ANSWER]] * 20, outputs

    # Two source sockets, both asking before either reads: each gets its own answer, not the other's.
    socks = {query_id: socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for query_id in (0x1111, 0x2222)}
    try:
        answered: set[int] = set()
        for _attempt in range(3):  # UDP: a datagram may be lost, so ask again
            for query_id, sock in socks.items():
                if query_id not in answered:
                    sock.sendto(dns_query(query_id, "flow.example.test"), ("127.0.0.1", public))
            for query_id, sock in socks.items():
                if query_id in answered:
                    continue
                sock.settimeout(2.0)
                try:
                    reply = sock.recv(4096)
                except TimeoutError:
                    continue
                assert int.from_bytes(reply[:2], "big") == query_id
                assert reply.endswith(socket.inet_aton(DNS_ANSWER))
                answered.add(query_id)
            if answered == set(socks):
                break
        assert answered == set(socks)
    finally:
        for sock in socks.values():
            sock.close()


def test_thousand_udp_datagrams_echoed(procs: ProcessGroup, relay: RelayInfo) -> None:
    local = free_port(socket.SOCK_DGRAM)
    server_process(procs, "udp_echo.py", local)
    _, public = tunnel(procs, relay, "udp", local)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3.0)
        sock.sendto(b"warm-up", ("127.0.0.1", public))
        assert sock.recv(2048) == b"warm-up"
        echoed: set[int] = set()
        for window in range(
            0, 1000, 50
        ):  # 50 in flight at a time: a burst, without flooding loopback buffers
            for n in range(window, window + 50):
                sock.sendto(n.to_bytes(4, "big") + bytes(500), ("127.0.0.1", public))
            deadline = time.monotonic() + 3
            while len(echoed) < window + 50 and time.monotonic() < deadline:
                try:
                    data = sock.recv(2048)
                except TimeoutError:
                    break
                echoed.add(int.from_bytes(data[:4], "big"))
    assert len(echoed) >= 990, f"{1000 - len(echoed)} of 1000 datagrams lost on loopback"


def test_udp_datagrams_of_1400_bytes_cross_once_the_path_mtu_is_found(
    procs: ProcessGroup, relay: RelayInfo
) -> None:
    """Over 1164 bytes needs the bigger packets path MTU discovery finds (docs/cli.md)."""
    local = free_port(socket.SOCK_DGRAM)
    server_process(procs, "udp_echo.py", local)
    _, public = tunnel(procs, relay, "udp", local)
    big = os.urandom(1400)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        echoed = False
        for attempt in range(50):  # small traffic meanwhile lets the search run (a probe per round trip)
            sock.sendto(b"small %d" % attempt, ("127.0.0.1", public))
            sock.sendto(big, ("127.0.0.1", public))
            try:
                for _ in range(2):
                    if sock.recv(2048) == big:
                        echoed = True
            except TimeoutError:
                pass
            if echoed:
                break
    assert echoed, "no 1400-byte datagram came back in 50 tries"


# -- passthrough, port ownership ------------------------------------------------------------------


def test_tcp_passthrough_without_a_client(procs: ProcessGroup) -> None:
    redis_port = redis_server(procs)
    relay = relay_process(procs, "--tcp-passthrough", f"0:127.0.0.1:{redis_port}")
    match = relay.proc.wait_for(rf"passthrough tcp 127\.0\.0\.1:(\d+) -> 127\.0\.0\.1:{redis_port}\b")
    listen = int(match.group(1))
    assert listen not in (0, redis_port)
    assert redis_cli(listen, "PING").strip() == "PONG"
    assert redis_cli(listen, "SET", "via", "passthrough").strip() == "OK"
    assert redis_cli(redis_port, "GET", "via").strip() == "passthrough"


def test_fixed_port_taken_by_another_client(procs: ProcessGroup, relay: RelayInfo) -> None:
    local = free_port()
    server_process(procs, "tcp_upper.py", local)
    remote = free_port()
    tunnel(procs, relay, "tcp", local, remote, config_home=procs.tmp / "first")

    second = start_client(
        procs, relay, "tcp", str(local), "--remote-port", str(remote), config_home=procs.tmp / "second"
    )
    code = second.popen.wait(timeout=30)
    assert code != 0, second.output()
    assert "taken" in second.output()
    # The refusal left the first client's tunnel alone.
    assert upper_roundtrip(remote, b"still mine") == b"STILL MINE"


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_same_client_gets_its_port_back(procs: ProcessGroup, relay: RelayInfo, how: str) -> None:
    """After a clean stop the relay frees the port; after SIGKILL it still holds the old
    tunnel, and the same client identity must take it over rather than be told "taken"."""
    redis_port = redis_server(procs)
    remote = free_port()
    home = procs.tmp / "client-home"
    first, _ = tunnel(procs, relay, "tcp", redis_port, remote, config_home=home)
    assert redis_cli(remote, "SET", "k", "before").strip() == "OK"
    if how == "sigkill":
        first.popen.kill()
        first.popen.wait(10)
    else:
        first.stop()

    tunnel(procs, relay, "tcp", redis_port, remote, config_home=home)
    assert redis_cli(remote, "GET", "k").strip() == "before"
    assert redis_cli(remote, "INCR", "n").strip() == "1"
