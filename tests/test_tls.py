"""The relay's HTTPS certificates: generation, real loopback handshakes, SNI, reloads, SIGHUP, curl."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
import trio
from conftest import require_tool
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from seamless_relay.tls import CertificateStore, TlsConfigError, describe, generate_self_signed

Handler = Callable[[trio.SSLStream[trio.SocketStream]], Awaitable[None]]

# -- helpers -------------------------------------------------------------------------------------------


def load(cert_pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert_pem)


def dns_sans(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )


def ip_sans(cert: x509.Certificate) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [
        ip
        for ip in san.get_values_for_type(x509.IPAddress)
        if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)
    ]


def verifying_client(*trusted: bytes) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=b"".join(trusted).decode())
    context.set_alpn_protocols(["http/1.1"])
    return context


def trusting_nothing_client() -> ssl.SSLContext:
    """Accepts any certificate, so a test can look at which one the server picked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def write_atomically(path: Path, data: bytes) -> None:
    """How deployments (and certbot) replace files: a new inode renamed over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_pair(directory: Path, cert_pem: bytes, key_pem: bytes) -> tuple[Path, Path]:
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    write_atomically(cert_path, cert_pem)
    write_atomically(key_path, key_pem)
    return cert_path, key_path


async def eventually(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait (bounded) for a change another task or thread makes."""
    with trio.fail_after(seconds):
        for _ in range(int(seconds / 0.01) + 1):
            if predicate():
                return
            await trio.sleep(0.01)


async def echo(tls: trio.SSLStream[trio.SocketStream]) -> None:
    while data := await tls.receive_some():
        await tls.send_all(data)


@asynccontextmanager
async def tls_server(store: CertificateStore, handler: Handler = echo) -> AsyncIterator[int]:
    """A loopback server that wraps each accepted stream the way the relay will: store.context() now."""

    async def serve_one(tcp: trio.SocketStream) -> None:
        tls = trio.SSLStream(tcp, store.context(), server_side=True)
        try:
            await handler(tls)
        except trio.BrokenResourceError:
            pass  # the client refused our certificate or hung up: not this server's problem
        finally:
            await trio.aclose_forcefully(tls)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve_one, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def connect(
    port: int, client: ssl.SSLContext, server_hostname: str | None = "abc.localhost"
) -> trio.SSLStream[trio.SocketStream]:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    tls = trio.SSLStream(tcp, client, server_hostname=server_hostname)
    await tls.do_handshake()
    return tls


async def served_cert(port: int, server_hostname: str | None = "abc.localhost") -> x509.Certificate:
    """The certificate a fresh connection is shown (after checking the connection carries data)."""
    tls = await connect(port, trusting_nothing_client(), server_hostname)
    try:
        der = tls.getpeercert(binary_form=True)
        await tls.send_all(b"ping")
        assert await tls.receive_some() == b"ping"
    finally:
        await tls.aclose()
    assert der is not None
    return x509.load_der_x509_certificate(der)


# -- generation and description ------------------------------------------------------------------------


def test_self_signed_has_the_domain_and_wildcard() -> None:
    before = datetime.now(UTC)
    cert_pem, key_pem = generate_self_signed("Relay.Example.Test.")
    cert = load(cert_pem)
    assert dns_sans(cert) == ["relay.example.test", "*.relay.example.test"]
    assert ip_sans(cert) == []
    assert abs(cert.not_valid_before_utc - (before - timedelta(hours=1))) < timedelta(minutes=1)
    assert abs(cert.not_valid_after_utc - (before + timedelta(days=90))) < timedelta(minutes=1)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    cert.verify_directly_issued_by(cert)


@pytest.mark.parametrize("domain", ["localhost", "relay.localhost"])
def test_self_signed_localhost_adds_loopback(domain: str) -> None:
    cert = load(generate_self_signed(domain)[0])
    assert {domain, f"*.{domain}", "localhost"} == set(dns_sans(cert))
    assert ip_sans(cert) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]


def test_self_signed_for_an_ip_and_bad_names() -> None:
    cert = load(generate_self_signed("192.0.2.7")[0])
    assert ip_sans(cert) == [ipaddress.ip_address("192.0.2.7")]
    for bad in ["", "a..b", "*.example.test", "x" * 64 + ".test"]:
        with pytest.raises(ValueError):
            generate_self_signed(bad)


def test_describe_names_subject_sans_and_expiry() -> None:
    text = describe(generate_self_signed("relay.example.test")[0])
    assert "CN=relay.example.test" in text
    assert "relay.example.test, *.relay.example.test" in text
    assert "not after 20" in text and "self-signed" in text
    with pytest.raises(TlsConfigError):
        describe(b"not a certificate")


def test_context_settings() -> None:
    context = CertificateStore.self_signed("localhost").context()
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.sni_callback is not None
    assert all("ECDHE" in c["name"] or c["protocol"] == "TLSv1.3" for c in context.get_ciphers())


# -- handshakes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_version", [None, ssl.TLSVersion.TLSv1_2])
async def test_verified_handshake_over_loopback(max_version: ssl.TLSVersion | None) -> None:
    store = CertificateStore.self_signed("localhost")
    client = verifying_client(store.cert_pem)
    if max_version is not None:
        client.maximum_version = max_version
    async with tls_server(store) as port:
        tls = await connect(port, client, "abc.localhost")
        try:
            version = tls.version()
            assert version in ("TLSv1.2", "TLSv1.3")
            if max_version is not None:
                assert version == "TLSv1.2" and "ECDHE" in tls.cipher()[0]
            assert tls.selected_alpn_protocol() == "http/1.1"
            await tls.send_all(b"hello")
            assert await tls.receive_some() == b"hello"
        finally:
            await tls.aclose()


async def test_localhost_subdomains_get_leaves_issued_on_demand() -> None:
    # OpenSSL never matches "*.localhost" (a wildcard needs two labels after it), so the store issues a
    # leaf per SNI name, signed by the one certificate clients trust.
    store = CertificateStore.self_signed("localhost")
    client = verifying_client(store.cert_pem)
    async with tls_server(store) as port:
        for name in ["abc.localhost", "a.b.localhost", "localhost"]:
            tls = await connect(port, client, name)
            await tls.aclose()
        leaf = await served_cert(port, "abc.localhost")
        assert dns_sans(leaf) == ["abc.localhost"]
        assert leaf.issuer == load(store.cert_pem).subject
        assert (await served_cert(port, "abc.localhost")).serial_number == leaf.serial_number  # cached
        assert (await served_cert(port, None)).serial_number == load(store.cert_pem).serial_number

    # A multi-label self-signed domain needs none of this: its wildcard works.
    other = CertificateStore.self_signed("relay.test")
    async with tls_server(other) as port:
        tls = await connect(port, verifying_client(other.cert_pem), "abc.relay.test")
        await tls.aclose()
        assert dns_sans(await served_cert(port, "abc.relay.test"))[0] == "relay.test"


async def test_untrusted_client_refuses_a_foreign_certificate() -> None:
    store = CertificateStore.self_signed("localhost")
    other_cert, _ = generate_self_signed("localhost")
    async with tls_server(store) as port:
        with pytest.raises(trio.BrokenResourceError):
            await connect(port, verifying_client(other_cert), "abc.localhost")


async def test_sni_picks_added_certificates_and_falls_back_to_default() -> None:
    store = CertificateStore.self_signed("relay.test")
    app_cert, app_key = generate_self_signed("app.example.test")
    wild_cert, wild_key = generate_self_signed("wild.test")
    store.add_certificate(["app.example.test"], app_cert, app_key)
    store.add_certificate(["*.wild.test"], wild_cert, wild_key)
    async with tls_server(store) as port:
        for name, expected in [
            ("app.example.test", "app.example.test"),
            ("APP.example.test", "app.example.test"),
            ("x.wild.test", "wild.test"),
            ("a.b.wild.test", "relay.test"),  # a wildcard covers one label only
            ("wild.test", "relay.test"),
            ("other.test", "relay.test"),
            (None, "relay.test"),  # no SNI at all
        ]:
            assert dns_sans(await served_cert(port, name))[0] == expected, name

        # A verifying client gets through on the per-host context, ALPN included.
        tls = await connect(port, verifying_client(app_cert), "app.example.test")
        assert tls.selected_alpn_protocol() == "http/1.1"
        await tls.aclose()

        # Renewal: a later certificate for the same name replaces the earlier one.
        renewed_cert, renewed_key = generate_self_signed("app.example.test")
        store.add_certificate(["app.example.test"], renewed_cert, renewed_key)
        served = await served_cert(port, "app.example.test")
        assert served.serial_number == load(renewed_cert).serial_number


def test_add_certificate_validates() -> None:
    store = CertificateStore.self_signed("relay.test")
    cert, _ = generate_self_signed("app.example.test")
    _, other_key = generate_self_signed("app.example.test")
    with pytest.raises(TlsConfigError, match=r"app\.example\.test"):
        store.add_certificate(["app.example.test"], cert, other_key)
    with pytest.raises(ValueError):
        store.add_certificate([], cert, other_key)
    with pytest.raises(ValueError):
        store.add_certificate(["bad..name"], cert, other_key)


# -- files and reloads -----------------------------------------------------------------------------------


async def test_reload_serves_new_files_to_new_connections_only(tmp_path: Path) -> None:
    cert_a, key_a = generate_self_signed("a.test")
    cert_b, key_b = generate_self_signed("b.test")
    cert_path, key_path = write_pair(tmp_path, cert_a, key_a)
    store = CertificateStore.from_files(cert_path, key_path)
    async with tls_server(store) as port:
        old = await connect(port, trusting_nothing_client())
        assert old.getpeercert(binary_form=True) == load(cert_a).public_bytes(serialization.Encoding.DER)

        write_pair(tmp_path, cert_b, key_b)
        assert store.reload() is True
        assert dns_sans(await served_cert(port)) == ["b.test", "*.b.test"]
        assert store.cert_pem == cert_b

        # The connection made before the reload carries on with certificate A.
        await old.send_all(b"still here")
        assert await old.receive_some() == b"still here"
        await old.aclose()

        assert store.reload() is False  # nothing changed
        os.utime(cert_path, ns=(1, 1))  # touched, same content
        assert store.reload() is False
        assert store.reload(force=True) is False
        assert dns_sans(await served_cert(port)) == ["b.test", "*.b.test"]


async def test_reload_keeps_the_old_certificate_when_files_break(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="seamless_relay.tls")
    cert_a, key_a = generate_self_signed("a.test")
    cert_b, key_b = generate_self_signed("b.test")
    cert_path, key_path = write_pair(tmp_path, cert_a, key_a)
    store = CertificateStore(cert_path, key_path)
    async with tls_server(store) as port:
        write_atomically(cert_path, b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
        assert store.reload() is False
        assert dns_sans(await served_cert(port))[0] == "a.test"
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and str(cert_path) in errors[0].getMessage()
        assert store.reload() is False
        assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1  # reported once

        # Half-way through a rotation: new certificate, old key. Still A, and the error names both files.
        write_atomically(cert_path, cert_b)
        assert store.reload() is False
        assert str(key_path) in caplog.records[-1].getMessage()
        assert dns_sans(await served_cert(port))[0] == "a.test"

        cert_path.unlink()
        assert store.reload() is False
        assert "cannot read certificate file" in caplog.records[-1].getMessage()
        assert dns_sans(await served_cert(port))[0] == "a.test"

        write_pair(tmp_path, cert_b, key_b)
        assert store.reload() is True
        assert dns_sans(await served_cert(port))[0] == "b.test"


async def test_watch_reloads_on_sighup(tmp_path: Path) -> None:
    cert_a, key_a = generate_self_signed("a.test")
    cert_b, key_b = generate_self_signed("b.test")
    store = CertificateStore.from_files(*write_pair(tmp_path, cert_a, key_a))
    # Should watch fail to take SIGHUP over, the test fails on its deadline instead of killing pytest.
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: None)
    try:
        async with tls_server(store) as port, trio.open_nursery() as nursery:
            await nursery.start(partial(store.watch, interval=3600))  # only SIGHUP can trigger a reload
            write_pair(tmp_path, cert_b, key_b)
            os.kill(os.getpid(), signal.SIGHUP)
            await eventually(lambda: store.cert_pem == cert_b)
            assert dns_sans(await served_cert(port))[0] == "b.test"
            nursery.cancel_scope.cancel()
    finally:
        signal.signal(signal.SIGHUP, previous)


async def test_watch_polls_when_sighup_is_unavailable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert_a, key_a = generate_self_signed("a.test")
    cert_b, key_b = generate_self_signed("b.test")
    store = CertificateStore.from_files(*write_pair(tmp_path, cert_a, key_a))

    async def in_worker_thread() -> None:
        # Signal receivers only work in the main thread, so here watch must fall back to polling.
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(store.watch, interval=0.02))
            write_pair(tmp_path, cert_b, key_b)
            await eventually(lambda: store.cert_pem == cert_b)
            nursery.cancel_scope.cancel()

    await trio.to_thread.run_sync(trio.run, in_worker_thread)
    assert store.cert_pem == cert_b
    assert any("SIGHUP unavailable" in r.getMessage() for r in caplog.records)


async def test_self_signed_store_renews_before_expiry() -> None:
    store = CertificateStore.self_signed("localhost", now=datetime.now(UTC) - timedelta(days=80))
    old_root = store.cert_pem
    async with tls_server(store) as port:
        tls = await connect(port, verifying_client(old_root), "abc.localhost")  # issues a leaf
        await tls.aclose()

        assert store.reload() is True
        renewed = load(store.cert_pem)
        assert renewed.serial_number != load(old_root).serial_number
        assert renewed.not_valid_after_utc > datetime.now(UTC) + timedelta(days=89)
        assert "localhost" in dns_sans(renewed)
        assert store.reload() is False

        # The leaf issued by the old root is gone: the same name now chains to the renewed one.
        tls = await connect(port, verifying_client(store.cert_pem), "abc.localhost")
        await tls.aclose()
    assert CertificateStore.from_pem(*generate_self_signed("localhost")).reload(force=True) is False


# -- construction errors ---------------------------------------------------------------------------------


def test_construction_errors_name_the_file(tmp_path: Path) -> None:
    cert_a, key_a = generate_self_signed("a.test")
    _, key_b = generate_self_signed("a.test")
    cert_path, key_path = write_pair(tmp_path, cert_a, key_b)
    with pytest.raises(TlsConfigError, match=f"private key file {key_path} does not match"):
        CertificateStore(cert_path, key_path)

    with pytest.raises(TlsConfigError, match=f"cannot read certificate file {tmp_path / 'nope.pem'}"):
        CertificateStore(tmp_path / "nope.pem", key_path)
    with pytest.raises(TlsConfigError, match=f"cannot read private key file {tmp_path}"):
        CertificateStore(cert_path, tmp_path)  # a directory

    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"hello")
    with pytest.raises(TlsConfigError, match=f"certificate file {garbage}"):
        CertificateStore(garbage, key_path)
    with pytest.raises(TlsConfigError, match=f"private key file {garbage}"):
        CertificateStore(cert_path, garbage)

    encrypted = tmp_path / "encrypted.pem"
    key = serialization.load_pem_private_key(key_a, password=None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TlsConfigError, match="encrypted"):
        CertificateStore(cert_path, encrypted)

    with pytest.raises(ValueError):
        CertificateStore(cert_path)
    with pytest.raises(ValueError):
        CertificateStore(cert_path, key_path, cert_pem=cert_a, key_pem=key_a)


def test_combined_pem_file_and_full_chain(tmp_path: Path) -> None:
    cert_a, key_a = generate_self_signed("a.test")
    extra, _ = generate_self_signed("intermediate.test")
    combined = tmp_path / "combined.pem"
    combined.write_bytes(cert_a + extra + key_a)
    store = CertificateStore(combined, combined)
    assert dns_sans(load(store.cert_pem))[0] == "a.test"
    assert "chain of 2" in describe(store.cert_pem)


# -- a real HTTPS client --------------------------------------------------------------------------------


async def test_curl_fetches_over_https(tmp_path: Path) -> None:
    curl = require_tool("curl")
    store = CertificateStore.self_signed("localhost")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(store.cert_pem)

    async def http(tls: trio.SSLStream[trio.SocketStream]) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = await tls.receive_some()
            if not chunk:
                return
            request += chunk
        assert request.startswith(b"GET /hello HTTP/1.1\r\n")
        await tls.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        await tls.aclose()

    async with tls_server(store, http) as port:
        with trio.fail_after(20):
            result = await trio.run_process(
                [
                    curl,
                    "--silent",
                    "--show-error",
                    "--cacert",
                    str(ca),
                    "--resolve",
                    f"abc.localhost:{port}:127.0.0.1",
                    "--write-out",
                    " %{http_version}",
                    f"https://abc.localhost:{port}/hello",
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"hello 1.1"
