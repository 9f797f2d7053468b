"""A link that goes dark: Seam's probes and BBR's restart, in the sans-IO pair.

A bulk stream crosses a rate-limited link (one FIFO bottleneck per direction)
that drops everything for 2 s. Time is simulated, so the figures are exact
and the same every run. This is the sans-IO twin of profile (e) of
``bench.lossy`` (docs/protocol.md section 7.2, 7.3).
"""

from __future__ import annotations

import pytest

from seam.config import SeamConfig
from seam.events import StreamDataReceived
from seam.testing import LossyNetwork, Pair

RATE = 2.5e6  # bytes/s
BLACKOUT = (2.0, 4.0)
BUCKET = 0.1  # seconds per throughput sample, as bench.lossy


def _bulk_through_blackout(congestion: str, until: float = 5.5) -> tuple[dict[int, int], bytes, Pair]:
    """Send one endless stream; return app-level bytes read per 100 ms bucket, and the bytes."""
    network = LossyNetwork(delay=0.01, rate=RATE, queue=int(RATE * 0.02), blackouts=[BLACKOUT])
    pair = Pair(network=network, config=SeamConfig(congestion=congestion, max_datagram_size=1472))
    pair.handshake()
    client, server = pair.client, pair.server
    assert server is not None
    sid = client.open_stream()
    pattern = bytes(range(256)) * 256
    sent = 0
    buckets: dict[int, int] = {}
    received = bytearray()
    cursor = len(pair.server_events)

    def step() -> bool:
        nonlocal sent, cursor
        room = client.stream_send_capacity(sid)
        while room > 0:
            chunk = pattern[sent % 256 : sent % 256 + min(room, 60_000)]
            client.send_stream_data(sid, chunk)
            sent += len(chunk)
            room = client.stream_send_capacity(sid)
        pair.server_events.extend(server.events())
        for event in pair.server_events[cursor:]:
            if isinstance(event, StreamDataReceived):
                bucket = int(pair.now / BUCKET)
                buckets[bucket] = buckets.get(bucket, 0) + len(event.data)
                received.extend(event.data)
                server.stream_data_consumed(event.stream_id, len(event.data))
        cursor = len(pair.server_events)
        return pair.now >= until or client.is_closed

    pair.run(step, max_time=until + 1)
    return buckets, bytes(received), pair


def _recovery_time(buckets: dict[int, int]) -> float | None:
    """Seconds from the blackout's end to the end of the first bucket at 90 % of the link."""
    end = BLACKOUT[1]
    for bucket in range(round(end / BUCKET), 1000):
        if buckets.get(bucket, 0) >= 0.9 * RATE * BUCKET:
            return (bucket + 1) * BUCKET - end
    return None


def test_the_link_model_limits_the_rate_and_blacks_out() -> None:
    buckets, _, pair = _bulk_through_blackout("bbr", until=4.5)
    before = sum(buckets.get(b, 0) for b in range(10, 20)) / 1.0  # bytes/s over 1-2 s
    assert 0.85 * RATE <= before <= RATE
    assert all(buckets.get(b, 0) == 0 for b in range(21, 40))  # dark (the first bucket drains)
    assert pair.network.dropped > 0


@pytest.mark.parametrize("congestion", ["bbr", "cubic"])
def test_throughput_is_back_within_a_second_of_a_two_second_outage(congestion: str) -> None:
    buckets, data, pair = _bulk_through_blackout(congestion)
    recovery = _recovery_time(buckets)
    assert recovery is not None and recovery <= 1.0, (recovery, sorted(buckets.items()))
    pattern = bytes(range(256)) * 256
    assert data == (pattern * (len(data) // len(pattern) + 1))[: len(data)]  # exact, in order
    assert not pair.client.is_closed  # the stream and the connection survived
