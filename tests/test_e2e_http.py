"""End to end over HTTP and HTTPS: the real relay and client processes, curl and raw sockets.

One relay, one echo service and one client serve the module (starting them
costs a few seconds); tests that stop or break something start their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.procs import ProcessGroup, RelayInfo, curl, free_port, start_client, start_relay

SERVERS = Path(__file__).parent / "servers"
MAX_BODY = 8_000_000


@dataclass
class Stack:
    procs: ProcessGroup
    relay: RelayInfo
    https_port: int
    echo_port: int

    def url(self, path: str, sub: str = "app") -> str:
        return f"http://{sub}.localhost:{self.relay.http_port}{path}"


def start_echo(procs: ProcessGroup, port: int | None = None) -> int:
    port = port or free_port()
    proc = procs.start("echo", [sys.executable, str(SERVERS / "http_echo.py"), str(port)])
    proc.wait_for("listening on")
    return port


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_tool("curl")
    procs = ProcessGroup(tmp_path_factory.mktemp("http"))
    try:
        relay = start_relay(
            procs, "--https-addr", "127.0.0.1:0", "--tls-self-signed", "--max-body-size", str(MAX_BODY)
        )
        https_port = int(relay.proc.wait_for(r"https listening on \S+?:(\d+)\b").group(1))
        echo_port = start_echo(procs)
        client = start_client(procs, relay, "http", str(echo_port), "--subdomain", "app")
        client.wait_for(r"Forwarding http://app\.localhost:\d+")
        yield Stack(procs, relay, https_port, echo_port)
    finally:
        procs.stop_all()


def upstream_headers(result_stdout: str) -> dict[str, list[str]]:
    report = json.loads(result_stdout)
    headers: dict[str, list[str]] = {}
    for name, value in report["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return headers


def raw_request(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes to the relay's HTTP port and read until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


# ------------------------------------------------------------------ routing


def test_get_through_tunnel_sets_forwarding_headers(stack: Stack) -> None:
    result = curl("-H", "X-Forwarded-For: 203.0.113.9", stack.url("/headers"))
    assert result.returncode == 0, result.stderr
    headers = upstream_headers(result.stdout)
    assert headers["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == ["app.localhost"]
    assert headers["connection"] == ["close"]


def test_host_is_case_insensitive_and_port_stripped(stack: Stack) -> None:
    url = f"http://127.0.0.1:{stack.relay.http_port}/headers"
    result = curl("-H", "Host: APP.LocalHost:9999", url)
    assert result.returncode == 0, result.stderr
    assert upstream_headers(result.stdout)["x-forwarded-host"] == ["app.localhost"]


def test_unknown_host_is_404_naming_it(stack: Stack) -> None:
    result = curl("-i", stack.url("/", sub="nobody"))
    assert result.stdout.startswith("HTTP/1.1 404")
    assert "nobody.localhost" in result.stdout


def test_keep_alive_forwards_headers_on_every_request(stack: Stack) -> None:
    result = curl("-v", stack.url("/headers"), stack.url("/headers"), stack.url("/"))
    assert result.returncode == 0, result.stderr
    assert "Re-using existing connection" in result.stderr
    assert result.stdout.count('["X-Forwarded-For", "127.0.0.1"]') == 2
    assert result.stdout.endswith("hello from the local service\n")


def test_hundred_keep_alive_requests_on_one_connection(stack: Stack) -> None:
    result = curl("-v", *[stack.url(f"/headers?n={n}") for n in range(100)])
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Re-using existing connection") == 99
    assert result.stdout.count('["X-Forwarded-For", "127.0.0.1"]') == 100


def test_two_hundred_concurrent_requests(stack: Stack) -> None:
    urls = [stack.url(f"/?n={n}") for n in range(200)]
    result = curl("--parallel", "--parallel-max", "200", "-w", "\\n%{http_code}\\n", *urls, timeout=60)
    # Parallel transfers may interleave their writes, so count substrings rather than lines.
    assert result.stdout.count("hello from the local service") == 200, result.stderr[-500:]
    assert (
        re.findall(r"\b\d{3}\b", result.stdout.replace("hello from the local service", "")) == ["200"] * 200
    )


def test_streamed_chunks_arrive_before_the_response_ends(stack: Stack) -> None:
    request = b"GET /slow HTTP/1.1\r\nHost: app.localhost\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", stack.relay.http_port or 0), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(request)
        data = b""
        while b"first" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        first_after = time.monotonic() - started
        while chunk := sock.recv(65536):
            data += chunk
        total = time.monotonic() - started
    assert first_after < 1.2 < total, (first_after, total)
    assert b"Transfer-Encoding: chunked" in data and data.endswith(b"0\r\n\r\n")


def test_random_subdomain_is_assigned_and_works(stack: Stack) -> None:
    client = start_client(stack.procs, stack.relay, "http", str(stack.echo_port))
    url = client.wait_for(r"Forwarding (http://([a-z0-9]{8})\.localhost:\d+)").group(1)
    assert curl(url + "/").stdout == "hello from the local service\n"


def test_connection_header_cannot_strip_forwarding_headers(stack: Stack) -> None:
    result = curl(
        "-H",
        "Connection: X-Forwarded-For, X-Secret",
        "-H",
        "X-Secret: 1",
        "-H",
        "Keep-Alive: 5",
        stack.url("/headers"),
    )
    headers = upstream_headers(result.stdout)
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert "x-secret" not in headers
    assert "keep-alive" not in headers


# ------------------------------------------------------------------ bodies


def test_upload_with_content_length_and_chunked(stack: Stack, tmp_path: Path) -> None:
    payload = os.urandom(5 * 1024 * 1024)
    source = tmp_path / "payload"
    source.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    for extra in ([], ["-H", "Transfer-Encoding: chunked"]):
        out = tmp_path / "echoed"
        result = curl("-D", "-", "-o", str(out), "--data-binary", f"@{source}", *extra, stack.url("/echo"))
        assert result.returncode == 0, result.stderr
        assert f"X-Body-SHA256: {digest}" in result.stdout
        assert hashlib.sha256(out.read_bytes()).hexdigest() == digest


def test_download_large_and_chunked_responses(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "big"
    result = curl("-o", str(out), stack.url("/big?mb=40"))
    assert result.returncode == 0, result.stderr
    block = bytes(range(256)) * 256
    expected = hashlib.sha256(block * 640).hexdigest()  # 40 MiB of the pattern
    assert hashlib.sha256(out.read_bytes()).hexdigest() == expected
    chunked = curl(stack.url("/chunked?n=300"))
    assert len(chunked.stdout) == 300_000


def test_body_over_limit_is_413(stack: Stack, tmp_path: Path) -> None:
    source = tmp_path / "too-big"
    source.write_bytes(b"x" * (MAX_BODY + 1))
    result = curl("-i", "--data-binary", f"@{source}", stack.url("/echo"))
    assert result.stdout.startswith("HTTP/1.1 413"), result.stdout[:200]
    chunked = curl(
        "-i", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{source}", stack.url("/echo")
    )
    final = chunked.stdout.removeprefix("HTTP/1.1 100 Continue\n\n")  # an interim 100 may come first
    assert final.startswith("HTTP/1.1 413"), chunked.stdout[:200]


# ------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (
            b"POST /echo HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            400,
        ),
        (b"POST /echo HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: +5\r\n\r\nhello", 400),
        (b"GET / HTTP/1.1\r\nHost: app.localhost\r\nX-A: 1\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: app.localhost\n\n", 400),
        (b"GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: app.localhost\r\nHost: other.localhost\r\n\r\n", 400),
    ],
    ids=[
        "cl-and-te",
        "conflicting-cl",
        "signed-cl",
        "obs-fold",
        "bare-lf",
        "huge-header",
        "no-host",
        "two-hosts",
    ],
)
def test_malformed_requests_get_clear_errors(stack: Stack, head: bytes, status: int) -> None:
    reply = raw_request(stack.relay.http_port or 0, head)
    assert reply.startswith(f"HTTP/1.1 {status} ".encode()), reply[:200]


# ---------------------------------------------------------------- upgrades


def test_websocket_upgrade_becomes_a_pipe(stack: Stack) -> None:
    from wsproto import WSConnection
    from wsproto.connection import ConnectionType
    from wsproto.events import AcceptConnection, CloseConnection, Message, Request, TextMessage

    ws_port = free_port()
    stack.procs.start("ws", [sys.executable, str(SERVERS / "ws_echo.py"), str(ws_port)]).wait_for("listening")
    client = start_client(stack.procs, stack.relay, "http", str(ws_port), "--subdomain", "ws")
    client.wait_for("Forwarding")
    ws = WSConnection(ConnectionType.CLIENT)
    with socket.create_connection(("127.0.0.1", stack.relay.http_port or 0), timeout=10) as sock:
        sock.sendall(ws.send(Request(host="ws.localhost", target="/")))
        received: list[str] = []
        partial = ""
        accepted = False
        deadline = time.monotonic() + 10
        sent = False
        while len(received) < 3 and time.monotonic() < deadline:
            ws.receive_data(sock.recv(65536))
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    accepted = True
                elif isinstance(event, TextMessage | Message):
                    partial += str(event.data)
                    if event.message_finished:
                        received.append(partial)
                        partial = ""
                elif isinstance(event, CloseConnection):
                    pytest.fail("closed early")
            if accepted and not sent:
                sent = True
                for text in ("one", "two", "x" * 100_000):
                    sock.sendall(ws.send(TextMessage(data=text)))
    assert accepted
    assert received == ["one", "two", "x" * 100_000]


def test_upgrade_refused_by_service_is_a_plain_response(stack: Stack) -> None:
    result = curl("-i", "-H", "Connection: Upgrade", "-H", "Upgrade: websocket", stack.url("/"))
    assert result.stdout.startswith("HTTP/1.1 200")
    assert "hello from the local service" in result.stdout


# ----------------------------------------------------------------- failures


def test_local_service_down_is_502(stack: Stack) -> None:
    client = start_client(stack.procs, stack.relay, "http", str(free_port()), "--subdomain", "down")
    client.wait_for("Forwarding")
    result = curl("-i", stack.url("/", sub="down"))
    assert result.stdout.startswith("HTTP/1.1 502"), result.stdout[:300]
    assert "could not reach its local service" in result.stdout


def test_stopped_client_is_503_and_name_stays_reserved(stack: Stack) -> None:
    home = stack.procs.tmp / "gone-home"
    client = start_client(
        stack.procs, stack.relay, "http", str(stack.echo_port), "--subdomain", "gone", config_home=home
    )
    client.wait_for("Forwarding")
    assert curl(stack.url("/", sub="gone")).stdout == "hello from the local service\n"
    client.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        result = curl("-i", stack.url("/", sub="gone"))
        if result.stdout.startswith("HTTP/1.1 503"):
            break
        time.sleep(0.2)
    assert result.stdout.startswith("HTTP/1.1 503"), result.stdout[:300]
    # A stranger (another client key) cannot take the reserved name...
    stranger = start_client(
        stack.procs, stack.relay, "http", "1", "--subdomain", "gone", config_home=home.with_name("x")
    )
    assert stranger.popen.wait(30) != 0
    assert "taken" in stranger.output()
    # ...but the same client gets it back.
    again = start_client(
        stack.procs, stack.relay, "http", str(stack.echo_port), "--subdomain", "gone", config_home=home
    )
    again.wait_for("Forwarding http://gone.localhost")
    assert curl(stack.url("/", sub="gone")).stdout == "hello from the local service\n"


# -------------------------------------------------------------------- HTTPS


def test_https_with_self_signed_certificate(stack: Stack) -> None:
    url = f"https://app.localhost:{stack.https_port}/headers"
    result = curl("-k", "--resolve", f"app.localhost:{stack.https_port}:127.0.0.1", url)
    assert result.returncode == 0, result.stderr
    headers = upstream_headers(result.stdout)
    assert headers["x-forwarded-proto"] == ["https"]
    verbose = curl("-k", "-v", "--tlsv1.2", url)
    assert "SSL connection using TLSv1." in verbose.stderr
    assert "CN=localhost" in verbose.stderr or "localhost" in verbose.stderr


# ------------------------------------------------------------ own stacks


def test_tokens_are_required_when_an_auth_file_is_given(procs: ProcessGroup) -> None:
    auth = procs.tmp / "tokens"
    auth.write_text("# team tokens\ns3cret-token-1\n\nother-token\n")
    relay = start_relay(procs, "--auth-file", str(auth))
    echo_port = start_echo(procs)
    nobody = start_client(procs, relay, "http", str(echo_port))
    assert nobody.popen.wait(30) == 1
    assert "token" in nobody.output()
    wrong = start_client(procs, relay, "--token", "s3cret-token-2", "http", str(echo_port))
    assert wrong.popen.wait(30) == 1
    good = start_client(
        procs, relay, "--token", "s3cret-token-1", "http", str(echo_port), "--subdomain", "ok"
    )
    good.wait_for("Forwarding")
    assert "s3cret-token-1" not in relay.proc.output()


def test_wrong_relay_keys_exit_with_a_clear_message(procs: ProcessGroup) -> None:
    relay = start_relay(procs)
    other = start_relay(procs, store=procs.tmp / "other.json")
    relay.x25519, relay.kem = other.x25519, other.kem
    client = start_client(procs, relay, "http", "1")
    assert client.popen.wait(30) == 1
    assert "keys do not match" in client.output()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_client_survives_relay_restart(procs: ProcessGroup, how: str) -> None:
    """SIGTERM: the relay says goodbye. SIGKILL: only the keepalive and idle timeout can tell."""
    seam_port, http_port = free_port(socket.SOCK_DGRAM), free_port()
    store = procs.tmp / "relay.json"
    argv = ("--seam-addr", f"127.0.0.1:{seam_port}", "--http-addr", f"127.0.0.1:{http_port}")
    relay = start_relay_fixed(procs, store, *argv)
    echo_port = start_echo(procs)
    client = start_client(procs, relay, "http", str(echo_port))
    url = client.wait_for(r"Forwarding (http://\S+)").group(1)
    assert curl(url + "/").stdout == "hello from the local service\n"
    if how == "sigkill":
        relay.proc.popen.kill()
        relay.proc.popen.wait(10)
    else:
        relay.proc.stop()
    started = time.monotonic()
    relay = start_relay_fixed(procs, store, *argv)
    deadline = started + 45
    while time.monotonic() < deadline:
        result = curl(url + "/", timeout=5)
        if result.stdout == "hello from the local service\n":
            break
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    assert result.stdout == "hello from the local service\n", client.output()
    assert elapsed < 40, f"back after {elapsed:.1f} s"
    assert client.popen.poll() is None


def start_relay_fixed(procs: ProcessGroup, store: Path, *argv: str) -> RelayInfo:
    """A relay on fixed ports (start_relay's defaults come first; later flags win in the CLI)."""
    argv_full = [sys.executable, "-m", "seamless_relay", "--store", str(store), *argv]
    proc = procs.start("relay-fixed", argv_full)
    x25519 = proc.wait_for(r"seam-pubkey-x25519 ([0-9a-f]{64})").group(1)
    kem = proc.wait_for(r"seam-pubkey-kem ([0-9a-f]{2368})").group(1)
    seam_port = int(proc.wait_for(r"seam listening on udp \S+?:(\d+)\b").group(1))
    http_port = int(proc.wait_for(r"http listening on \S+?:(\d+)\b").group(1))
    return RelayInfo(proc, seam_port, http_port, x25519, kem, store)


def test_seamless_demo_prints_a_working_url(procs: ProcessGroup) -> None:
    require_tool("curl")
    demo = procs.start("demo", [sys.executable, "-m", "seamless_client", "demo"])
    url = demo.wait_for(r"Public URL: (\S+)", timeout=30).group(1)
    result = curl(url)
    assert result.returncode == 0, result.stderr
    assert "It works" in result.stdout
    assert "curl http" in demo.output()


def test_second_process_with_the_same_key_replaces_the_first(stack: Stack) -> None:
    home = stack.procs.tmp / "twin-home"
    first = start_client(
        stack.procs, stack.relay, "http", str(stack.echo_port), "--subdomain", "twin", config_home=home
    )
    first.wait_for("Forwarding")
    second = start_client(
        stack.procs, stack.relay, "http", str(stack.echo_port), "--subdomain", "twin", config_home=home
    )
    second.wait_for("Forwarding")
    assert first.popen.wait(20) == 1  # it stops instead of fighting for the name
    assert "registered the same name" in first.output()
    assert second.popen.poll() is None
    assert curl(stack.url("/", sub="twin")).stdout == "hello from the local service\n"


def test_relay_startup_errors_are_one_clear_line(procs: ProcessGroup) -> None:
    relay = start_relay(procs)
    busy = procs.start(
        "busy",
        [
            sys.executable,
            "-m",
            "seamless_relay",
            "--seam-addr",
            f"127.0.0.1:{relay.seam_port}",
            "--http-addr",
            "127.0.0.1:0",
            "--store",
            str(procs.tmp / "b.json"),
        ],
    )
    assert busy.popen.wait(30) == 1
    assert "Address already in use" in busy.output() and "Traceback" not in busy.output()
    bad_cert = procs.tmp / "cert.pem"
    bad_cert.write_text("not a certificate")
    tls = procs.start(
        "tls",
        [
            sys.executable,
            "-m",
            "seamless_relay",
            "--seam-addr",
            "127.0.0.1:0",
            "--http-addr",
            "off",
            "--https-addr",
            "127.0.0.1:0",
            "--tls-cert",
            str(bad_cert),
            "--tls-key",
            str(bad_cert),
            "--store",
            str(procs.tmp / "c.json"),
        ],
    )
    assert tls.popen.wait(30) == 2
    assert "cert.pem" in tls.output() and "Traceback" not in tls.output()


def test_sighup_without_https_does_not_stop_the_relay(procs: ProcessGroup) -> None:
    import signal

    relay = start_relay(procs)
    os.kill(relay.proc.popen.pid, signal.SIGHUP)
    relay.proc.wait_for("no certificates to reload")
    assert relay.proc.popen.poll() is None


def test_reservations_survive_a_relay_restart(procs: ProcessGroup) -> None:
    seam_port, http_port = free_port(socket.SOCK_DGRAM), free_port()
    store = procs.tmp / "relay.json"
    argv = ("--seam-addr", f"127.0.0.1:{seam_port}", "--http-addr", f"127.0.0.1:{http_port}")
    relay = start_relay_fixed(procs, store, *argv)
    owner_home = procs.tmp / "owner"
    owner = start_client(procs, relay, "http", "1", "--subdomain", "keep", config_home=owner_home)
    owner.wait_for("Forwarding http://keep.localhost")
    relay.proc.popen.kill()  # no goodbye: the store must already know
    relay.proc.popen.wait(10)
    owner.stop()
    assert oct(store.stat().st_mode & 0o777) == "0o600"
    relay = start_relay_fixed(procs, store, *argv)
    relay.proc.wait_for("restored 1 name and port reservations")
    stranger = start_client(
        procs, relay, "http", "1", "--subdomain", "keep", config_home=procs.tmp / "stranger"
    )
    assert stranger.popen.wait(30) == 1
    assert "taken" in stranger.output()
    again = start_client(procs, relay, "http", "1", "--subdomain", "keep", config_home=owner_home)
    again.wait_for("Forwarding http://keep.localhost")


def test_custom_domain_when_the_relay_allows_it(procs: ProcessGroup) -> None:
    relay = start_relay(procs, "--allow-custom-domains")
    echo_port = start_echo(procs)
    client = start_client(procs, relay, "http", str(echo_port), "--hostname", "App.Example.com")
    client.wait_for(r"Forwarding http://app\.example\.com:\d+")
    result = curl("-H", "Host: app.example.com", f"http://127.0.0.1:{relay.http_port}/headers")
    assert upstream_headers(result.stdout)["x-forwarded-host"] == ["app.example.com"]
    strict = start_relay(procs, store=procs.tmp / "strict.json")
    refused = start_client(procs, strict, "http", str(echo_port), "--hostname", "app.example.com")
    assert refused.popen.wait(30) == 1
    assert "custom domains are not allowed" in refused.output()
