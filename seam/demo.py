"""``python -m seam.demo``: a Seam server and client on loopback, one bulk transfer.

Prints the relay's public keys, the handshake time and the throughput, so a
new user sees the transport work end to end in a few seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

import trio

import seam


async def _sink(conn: seam.SeamConnection) -> None:
    stream = await conn.accept_stream()
    digest = hashlib.sha256()
    while chunk := await stream.receive_some(1 << 16):
        digest.update(chunk)
    await stream.send_all(digest.digest())
    await stream.aclose()


async def run_demo(size_mb: int, cipher: str, congestion: str, fec: str = "off") -> None:
    identity = seam.Identity.generate()
    print(f"server x25519 key: {identity.public.x25519_hex}")
    print(f"server ML-KEM-768 key: {identity.public.kem_hex[:32]}... ({len(identity.public.kem)} bytes)")
    config = seam.SeamConfig(cipher=cipher, congestion=congestion, fec=fec)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            lambda task_status: seam.serve(
                _sink, "127.0.0.1", 0, identity=identity, config=config, task_status=task_status
            )
        )
        started = time.perf_counter()
        async with seam.connect(
            "127.0.0.1", listener.port, server_keys=identity.public, config=config
        ) as conn:
            handshake = time.perf_counter() - started
            print(f"handshake (hybrid X25519 + ML-KEM-768, {cipher}): {handshake * 1000:.1f} ms")
            data = os.urandom(1 << 20) * size_mb
            stream = await conn.open_stream()
            t0 = time.perf_counter()
            await stream.send_all(data)
            await stream.send_eof()
            reply = await stream.receive_some()
            elapsed = time.perf_counter() - t0
            ok = reply == hashlib.sha256(data).digest()
            stats = conn.stats()
            print(
                f"sent {size_mb} MiB in {elapsed:.2f} s: {size_mb * 1.048576 / elapsed:.1f} MB/s, "
                f"SHA-256 {'verified' if ok else 'MISMATCH'}; "
                f"rtt {stats.smoothed_rtt * 1000:.2f} ms, {stats.packets_sent} packets, "
                f"{stats.packets_lost} lost, {stats.packets_retransmitted} retransmitted; "
                f"fec {config.fec}: {stats.fec_repairs_sent} repairs sent"
            )
        nursery.cancel_scope.cancel()
    if not ok:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=32)
    parser.add_argument("--cipher", default="chacha20poly1305", choices=["chacha20poly1305", "aes256gcm"])
    parser.add_argument("--congestion", default="bbr")
    parser.add_argument("--fec", default="off", help="off, auto or K,M (docs/fec.md)")
    args = parser.parse_args()
    trio.run(run_demo, args.size_mb, args.cipher, args.congestion, args.fec)


if __name__ == "__main__":
    main()
