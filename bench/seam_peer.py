"""Seam side of the transport benchmarks: ``server`` and ``client`` subcommands.

The server prints one JSON line with its port and keys; clients print one
JSON line with their figure. Run by bench/run.py, one process per role.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import trio

import seam


async def _sink(conn: seam.SeamConnection) -> None:
    async with trio.open_nursery() as nursery:
        while True:
            try:
                stream = await conn.accept_stream()
            except seam.ConnectionClosed:
                return
            nursery.start_soon(_drain, stream)


async def _drain(stream: seam.SeamStream) -> None:
    count = 0
    while chunk := await stream.receive_some(1 << 16):
        count += len(chunk)
    await stream.send_all(count.to_bytes(8, "big"))
    await stream.aclose()


async def server(args: argparse.Namespace) -> None:
    identity = seam.Identity.generate()
    config = seam.SeamConfig(congestion=args.congestion, max_datagram_size=args.mds, pmtu_ceiling=args.mds)
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            lambda task_status: seam.serve(
                _sink, "127.0.0.1", 0, identity=identity, config=config, task_status=task_status
            )
        )
        print(
            json.dumps(
                {"port": listener.port, "x25519": identity.public.x25519_hex, "kem": identity.public.kem_hex}
            ),
            flush=True,
        )


def _keys(args: argparse.Namespace) -> seam.PublicKeys:
    return seam.PublicKeys.from_hex(args.x25519, args.kem)


async def bulk(args: argparse.Namespace) -> None:
    config = seam.SeamConfig(congestion=args.congestion, max_datagram_size=args.mds, pmtu_ceiling=args.mds)
    data = os.urandom(1 << 20)
    total = args.size_mb << 20
    async with seam.connect("127.0.0.1", args.port, server_keys=_keys(args), config=config) as conn:
        stream = await conn.open_stream()
        start = time.perf_counter()
        for _ in range(args.size_mb):
            await stream.send_all(data)
        await stream.send_eof()
        reply = await stream.receive_some(8)
        elapsed = time.perf_counter() - start
        assert int.from_bytes(reply, "big") == total
    print(json.dumps({"mb_per_s": total / elapsed / 1e6}), flush=True)


async def handshakes(args: argparse.Namespace) -> None:
    """Time from starting a connection to having it established (closing not counted)."""
    keys = _keys(args)
    elapsed = 0.0
    for _ in range(args.count):
        start = time.perf_counter()
        async with seam.connect("127.0.0.1", args.port, server_keys=keys):
            elapsed += time.perf_counter() - start
    print(json.dumps({"per_s": args.count / elapsed}), flush=True)


async def hold(args: argparse.Namespace) -> None:
    """Open ``count`` idle connections, report, then hold them until stdin closes."""
    keys = _keys(args)
    async with trio.open_nursery() as nursery:
        ready = trio.Semaphore(0)

        async def one() -> None:
            async with seam.connect("127.0.0.1", args.port, server_keys=keys) as conn:
                ready.release()
                await conn.wait_closed()

        for _ in range(args.count):
            nursery.start_soon(one)
        for _ in range(args.count):
            await ready.acquire()
        print(json.dumps({"open": args.count}), flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["server", "bulk", "handshakes", "hold"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--x25519")
    parser.add_argument("--kem")
    parser.add_argument("--size-mb", type=int, default=64)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--congestion", default="cubic")
    parser.add_argument("--mds", type=int, default=1200)
    args = parser.parse_args()
    trio.run({"server": server, "bulk": bulk, "handshakes": handshakes, "hold": hold}[args.role], args)


if __name__ == "__main__":
    main()
