"""Path MTU discovery (DPLPMTUD, RFC 8899): the search alone, then two cores over a path
whose MTU the test sets (seam.testing drops datagrams above it, as a DF path would)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import require_tool
from hypothesis import given
from hypothesis import strategies as st

from seam.config import SeamConfig
from seam.pmtud import MAX_PROBES, RAISE_INTERVAL, SEARCH_GRANULARITY, PathMtuSearch, SearchState
from seam.testing import LossyNetwork, Pair, transfer


def _search(path_mtu: int, base: int = 1200, ceiling: int = 1472) -> tuple[PathMtuSearch, int]:
    """Run a search against a path that carries ``path_mtu`` bytes; returns it and the probes sent."""
    search = PathMtuSearch(base, ceiling)
    probes = 0
    now = 0.0
    while (size := search.next_probe(now)) is not None:
        probes += 1
        assert probes < 100
        search.on_probe_sent(size)
        assert search.next_probe(now) is None  # one probe at a time
        if size <= path_mtu:
            search.on_probe_acked(size, now)
        else:
            search.on_probe_lost(size, now)
        now += 0.05
    return search, probes


def test_a_1500_byte_path_takes_one_probe() -> None:
    search, probes = _search(1472)
    assert (search.current, probes, search.state) == (1472, 1, SearchState.COMPLETE)


@given(path_mtu=st.integers(1200, 2000))
def test_the_search_finds_the_path_mtu_within_its_granularity_and_never_exceeds_it(path_mtu: int) -> None:
    search, probes = _search(path_mtu)
    expected = min(path_mtu, 1472)
    assert expected - SEARCH_GRANULARITY < search.current <= expected
    assert search.state is SearchState.COMPLETE
    assert probes <= 1 + MAX_PROBES * 10  # the ceiling, then a bisection of 272 bytes


def test_one_lost_probe_is_retried_not_taken_as_too_big() -> None:
    search = PathMtuSearch(1200, 1472)
    assert search.next_probe(0.0) == 1472
    search.on_probe_sent(1472)
    search.on_probe_lost(1472, 0.1)  # plain loss
    assert search.next_probe(0.1) == 1472
    search.on_probe_sent(1472)
    search.on_probe_acked(1472, 0.2)
    assert search.current == 1472


def test_a_search_that_ended_low_tries_again_after_the_raise_interval() -> None:
    search, _ = _search(1300)
    assert search.next_probe(RAISE_INTERVAL - 1) is None
    assert search.next_probe(RAISE_INTERVAL + 10) == 1472


def test_a_black_hole_falls_back_to_the_base_and_retries_the_old_size_first() -> None:
    search, _ = _search(1472)
    assert search.on_black_hole()
    assert search.current == 1200
    assert search.next_probe(1.0) == 1472
    assert not PathMtuSearch(1200, 1200).on_black_hole()  # disabled: nothing to fall back from


def test_off_when_the_ceiling_is_not_above_the_base() -> None:
    search = PathMtuSearch(1400, 1300)
    assert search.state is SearchState.DISABLED and search.next_probe(0.0) is None


@pytest.mark.parametrize(("path_mtu", "expected"), [(1500, 1472), (1400, 1400), (1250, 1250)])
def test_a_connection_grows_its_packets_to_what_the_path_carries(path_mtu: int, expected: int) -> None:
    pair = Pair(network=LossyNetwork(mtu=path_mtu))
    pair.handshake()
    data = bytes(range(256)) * 4000
    for index in range(20):  # the search takes a probe per round trip, more for sizes that fail
        assert transfer(pair, {index: data}) == {index: data}
        if pair.client.stats().pmtu_search == "complete":
            break
    stats = pair.client.stats()
    assert stats.pmtu_search == "complete"
    assert expected - SEARCH_GRANULARITY < stats.datagram_size <= min(expected, 1472)
    assert stats.packets_lost == 0  # too-big probes are not losses of the path
    assert stats.fec_loss_rate == 0.0  # nor of FEC's loss estimate
    before = (stats.bytes_sent, stats.packets_sent)
    transfer(pair, {99: data})
    after = pair.client.stats()
    sent = (after.bytes_sent - before[0]) / (after.packets_sent - before[1])
    assert sent > 0.9 * stats.datagram_size  # the bulk uses the size found


def test_a_path_whose_mtu_shrinks_is_followed_down() -> None:
    network = LossyNetwork(mtu=1500)
    pair = Pair(network=network)
    pair.handshake()
    transfer(pair, {0: bytes(200_000)})
    assert (pair.client.stats().datagram_size, pair.client.stats().pmtu_search) == (1472, "complete")
    network.mtu = 1300  # a route change: 1472-byte packets now vanish
    data = bytes(range(256)) * 2000
    for index in range(1, 20):
        assert transfer(pair, {index: data}, max_time=120) == {index: data}
        if pair.client.stats().pmtu_search == "complete":
            break
    stats = pair.client.stats()
    assert 1300 - SEARCH_GRANULARITY < stats.datagram_size <= 1300
    assert not pair.client.is_closed


def test_pmtud_can_be_turned_off() -> None:
    pair = Pair(network=LossyNetwork(), config=SeamConfig(pmtu_ceiling=1200))
    pair.handshake()
    transfer(pair, {0: bytes(100_000)})
    assert pair.client.stats().datagram_size == 1200


# ------------------------------------------------------------- real sockets


_TRANSFER_SCRIPT = """
import hashlib, json, sys
import trio
import seam
from seam.testing import shared_identities

SERVER, _ = shared_identities()

async def handler(conn):
    stream = await conn.accept_stream()
    count = 0
    while chunk := await stream.receive_some(1 << 16):
        count += len(chunk)
    await stream.send_all(count.to_bytes(8, "big"))
    await stream.aclose()
    await conn.wait_closed()  # returning would close at once, perhaps before the count arrives

async def main():
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            lambda task_status: seam.serve(handler, "127.0.0.1", 0, identity=SERVER, task_status=task_status)
        )
        async with seam.connect("127.0.0.1", listener.port, server_keys=SERVER.public) as conn:
            stream = await conn.open_stream()
            size = int(sys.argv[1])
            for _ in range(size // 65536):
                await stream.send_all(bytes(65536))
            await stream.send_eof()
            reply = await stream.receive_some()
            stats = conn.stats()
            print(json.dumps({"received": int.from_bytes(reply, "big"), "datagram_size": stats.datagram_size,
                              "pmtu_search": stats.pmtu_search, "lost": stats.packets_lost}))
        nursery.cancel_scope.cancel()

trio.run(main)
"""


def _run_transfer(prefix: list[str], size: int = 8 << 20) -> dict[str, object]:
    done = subprocess.run(
        [*prefix, sys.executable, "-c", _TRANSFER_SCRIPT, str(size)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["received"] == size
    return result


def test_on_loopback_the_search_reaches_the_ceiling() -> None:
    result = _run_transfer([])
    assert result["datagram_size"] == 1472 and result["pmtu_search"] == "complete"


def test_with_a_1400_byte_mtu_the_kernel_refuses_bigger_probes_and_the_search_settles_below() -> None:
    """Don't Fragment is set, so a probe above the interface MTU fails with EMSGSIZE (counted,
    treated as lost) instead of going out in fragments; the search ends just under 1372 bytes
    (1400 minus the IPv4 and UDP headers) and the transfer never notices."""
    ip = require_tool("ip")
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    namespace = f"seamtest-pmtu-{os.getpid()}"
    subprocess.run([ip, "netns", "add", namespace], check=True, timeout=10)
    try:
        lo_up = [ip, "-n", namespace, "link", "set", "lo", "mtu", "1400", "up"]
        subprocess.run(lo_up, check=True, timeout=10)
        result = _run_transfer([ip, "netns", "exec", namespace])
    finally:
        subprocess.run([ip, "netns", "delete", namespace], check=False, timeout=10)
    assert result["pmtu_search"] == "complete"
    assert 1372 - SEARCH_GRANULARITY < int(str(result["datagram_size"])) <= 1372
    assert result["lost"] == 0


def test_datagrams_grow_with_the_path_mtu_and_a_shrunk_path_drops_the_ones_too_big() -> None:
    """A UDP tunnel carries datagrams as big as the path found allows (docs/protocol.md 7.5)."""
    network = LossyNetwork(mtu=1500)
    pair = Pair(network=network)
    pair.handshake()
    base = pair.client.max_datagram_payload
    transfer(pair, {0: bytes(200_000)})
    assert pair.client.stats().datagram_size == 1472
    grown = pair.client.max_datagram_payload
    assert grown == base + 272  # the 272 bytes PMTU discovery added
    assert pair.server is not None
    big = os.urandom(grown)
    assert pair.client.send_datagram(big)
    pair.run(lambda: any(getattr(e, "data", None) == big for e in pair.server_events), max_time=5)
    assert any(getattr(e, "data", None) == big for e in pair.server_events)

    network.mtu = 1300  # the route changes: 1472-byte packets vanish, smaller ones still arrive
    assert transfer(pair, {1: bytes(50_000)}, max_time=10) == {1: bytes(50_000)}
    assert pair.client.stats().datagram_size < 1300  # the black hole was noticed within seconds
    assert pair.client.max_datagram_payload < grown
    # one queued at the old size goes nowhere, and does not hold up the ones behind it
    small = b"still fits"
    pair.client._datagrams_out.append(big)  # queued just before the shrink was noticed
    assert pair.client.send_datagram(small)
    pair.run(lambda: any(getattr(e, "data", None) == small for e in pair.server_events), max_time=5)
    assert any(getattr(e, "data", None) == small for e in pair.server_events)
    assert pair.client.stats().dropped.get("datagram-too-big-for-path") == 1
