"""aioquic side of the transport benchmarks: the nearest Python peer to Seam.

``server`` prints its port as JSON; ``bulk`` sends N MiB on one QUIC stream and
prints MB/s; ``handshakes`` opens N connections in turn. Same sizes as Seam.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import ssl
import tempfile
import time

from aioquic.asyncio import QuicConnectionProtocol, connect, serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamDataReceived
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ALPN = ["bench"]


class Sink(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._counts: dict[int, int] = {}

    def quic_event_received(self, event) -> None:  # type: ignore[no-untyped-def]
        if isinstance(event, StreamDataReceived):
            count = self._counts.get(event.stream_id, 0) + len(event.data)
            self._counts[event.stream_id] = count
            if event.end_stream:
                self._quic.send_stream_data(event.stream_id, count.to_bytes(8, "big"), end_stream=True)
                self.transmit()


def _certificate(directory: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert_path, key_path


async def server(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = QuicConfiguration(is_client=False, alpn_protocols=ALPN)
        config.load_cert_chain(*_certificate(tmp))
        srv = await serve("127.0.0.1", 0, configuration=config, create_protocol=Sink)
        port = srv._transport.get_extra_info("sockname")[1]
        print(json.dumps({"port": port}), flush=True)
        await asyncio.Event().wait()


def _client_config() -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=ALPN)
    config.verify_mode = ssl.CERT_NONE
    return config


async def bulk(args: argparse.Namespace) -> None:
    data = os.urandom(1 << 20)
    total = args.size_mb << 20
    async with connect("127.0.0.1", args.port, configuration=_client_config()) as client:
        reader, writer = await client.create_stream()
        start = time.perf_counter()
        for _ in range(args.size_mb):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        reply = await reader.readexactly(8)
        elapsed = time.perf_counter() - start
        assert int.from_bytes(reply, "big") == total
    print(json.dumps({"mb_per_s": total / elapsed / 1e6}), flush=True)


async def handshakes(args: argparse.Namespace) -> None:
    """Time from starting a connection to having it established (closing not counted)."""
    config = _client_config()
    elapsed = 0.0
    for _ in range(args.count):
        start = time.perf_counter()
        async with connect("127.0.0.1", args.port, configuration=config):
            elapsed += time.perf_counter() - start
    print(json.dumps({"per_s": args.count / elapsed}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["server", "bulk", "handshakes"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--size-mb", type=int, default=64)
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    asyncio.run({"server": server, "bulk": bulk, "handshakes": handshakes}[args.role](args))


if __name__ == "__main__":
    main()
