"""Copy bytes both ways between two trio streams, honouring half-close.

Used by the relay (public socket <-> Seam stream) and the client (Seam
stream <-> local service) alike, so both ends treat EOF the same way: when
one side finishes sending, the other side's write half is closed and the
opposite direction keeps flowing until it finishes too.
"""

from __future__ import annotations

import logging

import trio

CHUNK = 64 * 1024  # bytes per receive

logger = logging.getLogger("seamless.splice")


async def send_eof_if_possible(stream: trio.abc.Stream) -> None:
    """Half-close when the stream supports it (TLS streams do not: they wait for the full close)."""
    if isinstance(stream, trio.abc.HalfCloseableStream):
        try:
            await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def pump(source: trio.abc.ReceiveStream, sink: trio.abc.Stream, *, initial: bytes = b"") -> int:
    """Copy ``source`` into ``sink`` until EOF, then half-close ``sink``; returns bytes copied."""
    copied = 0
    if initial:
        await sink.send_all(initial)
        copied += len(initial)
    while True:
        data = await source.receive_some(CHUNK)
        if not data:
            break
        await sink.send_all(data)
        copied += len(data)
    await send_eof_if_possible(sink)
    return copied


async def splice(
    a: trio.abc.Stream, b: trio.abc.Stream, *, a_initial: bytes = b"", b_initial: bytes = b""
) -> tuple[int, int]:
    """Pipe ``a`` <-> ``b`` until both directions reach EOF or either side breaks.

    ``a_initial`` is data already read from ``a`` (sent to ``b`` first), and
    ``b_initial`` the same for ``b``. Returns (bytes a->b, bytes b->a). A broken
    or closed side ends both directions; the caller closes the streams.
    """
    counts = [0, 0]
    async with trio.open_nursery() as nursery:

        async def one_way(index: int, source: trio.abc.Stream, sink: trio.abc.Stream, initial: bytes) -> None:
            try:
                counts[index] = await pump(source, sink, initial=initial)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                logger.debug("splice direction %d ended: %r", index, exc)
                nursery.cancel_scope.cancel()

        nursery.start_soon(one_way, 0, a, b, a_initial)
        nursery.start_soon(one_way, 1, b, a, b_initial)
    return counts[0], counts[1]
