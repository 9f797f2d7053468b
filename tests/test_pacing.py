"""Pacing (RFC 9002 section 7.7): the token bucket alone, then inside the sans-IO connection."""

from __future__ import annotations

import pytest

from seam.config import SeamConfig
from seam.congestion import create
from seam.congestion.newreno import NewReno
from seam.connection import Connection
from seam.pacing import (
    K_BURST_INTERVAL,
    K_BURST_PACKETS,
    K_PACING_GAIN,
    K_PACING_GAIN_SLOW_START,
    Pacer,
    pacing_rate_for,
    window_pacing_rate,
)
from seam.recovery import RttEstimator
from seam.testing import Pair, transfer

MDS = 1200


def drain(pacer: Pacer, *, until: float, start: float = 0.0) -> list[float]:
    """Send full-sized packets as fast as the pacer allows; returns their send times."""
    now, times = start, []
    while now < until:
        wake = pacer.next_send_time(now)
        if wake is None:
            pacer.on_packet_sent(now, MDS)
            times.append(now)
        else:
            assert wake > now
            now = wake
    return times


def bursts(times: list[float]) -> list[int]:
    """How many packets left at each distinct instant."""
    counts: dict[float, int] = {}
    for t in times:
        counts[t] = counts.get(t, 0) + 1
    return list(counts.values())


# --- the bucket ------------------------------------------------------------------------------------


def test_a_pacer_without_a_rate_holds_nothing_back() -> None:
    pacer = Pacer(max_datagram_size=MDS)
    for _ in range(100):
        assert pacer.next_send_time(0.0) is None
        pacer.on_packet_sent(0.0, MDS)
    pacer.set_rate(1e6, 0.0)
    pacer.set_rate(None, 0.0)
    assert pacer.rate is None and pacer.next_send_time(0.0) is None


def test_a_window_is_spread_over_the_round_trip() -> None:
    """100 packets, 100 ms, congestion avoidance: N = 1.25, so the window leaves over 80 ms.

    The first K_BURST_PACKETS go at once (the initial window, RFC 9002 7.7);
    after that never more than the burst allowance leaves at one instant.
    """
    cwnd, srtt = 100 * MDS, 0.1
    rate = window_pacing_rate(cwnd, srtt, slow_start=False)
    assert rate == pytest.approx(K_PACING_GAIN * cwnd / srtt)  # 1.5 MB/s
    pacer = Pacer(max_datagram_size=MDS)
    pacer.set_rate(rate, 0.0)
    times = drain(pacer, until=srtt)
    first_window = times[:100]
    assert bursts(first_window)[0] == K_BURST_PACKETS
    assert max(bursts(first_window)) <= K_BURST_PACKETS
    assert first_window[-1] == pytest.approx((100 - K_BURST_PACKETS) * MDS / rate, abs=0.002)  # ~72 ms
    # In the long run the rate is exact, give or take one burst.
    long_run = drain(pacer, until=1.0 + srtt, start=srtt)
    assert len(long_run) * MDS == pytest.approx(rate * 1.0, abs=K_BURST_PACKETS * MDS)


def test_a_held_back_sender_is_woken_after_a_quantum_not_per_packet() -> None:
    pacer = Pacer(max_datagram_size=MDS)
    pacer.set_rate(6e6, 0.0)  # 6 MB/s: 1 ms is 5 packets, the bucket 12 kB
    times = drain(pacer, until=0.05)
    wakeups = bursts(times)[1:]
    assert set(wakeups) == {5}  # woken once per millisecond, 5 packets at a time
    assert len(times) * MDS == pytest.approx(6e6 * 0.05 + 12000, abs=6000)  # to within one quantum


def test_fast_rates_get_a_bucket_of_two_milliseconds() -> None:
    """A sans-IO call sees one ``now``: at high rates the bucket must cover timer granularity."""
    pacer = Pacer(max_datagram_size=MDS)
    pacer.set_rate(60e6, 0.0)
    assert pacer.burst == pytest.approx(60e6 * K_BURST_INTERVAL)  # 120 kB, 100 packets
    pacer.set_rate(1e6, 0.0)
    assert pacer.burst == K_BURST_PACKETS * MDS
    assert pacer.tokens <= pacer.burst  # shrinking the bucket spills the excess


def test_idle_time_earns_at_most_one_burst() -> None:
    pacer = Pacer(max_datagram_size=MDS)
    pacer.set_rate(1e6, 0.0)
    drain(pacer, until=0.1)
    times = drain(pacer, until=60.01, start=60.0)  # a minute of silence
    assert bursts(times)[0] == K_BURST_PACKETS


def test_rate_changes_apply_from_the_moment_they_are_made() -> None:
    pacer = Pacer(max_datagram_size=MDS)
    pacer.set_rate(1e5, 0.0)
    drain(pacer, until=0.001)  # empty the bucket
    pacer.set_rate(1e7, 0.012)  # 12 ms at 100 kB/s earned 1200 bytes: one packet
    assert pacer.next_send_time(0.012) is None
    pacer.on_packet_sent(0.012, MDS)
    wake = pacer.next_send_time(0.012)
    assert wake is not None and wake - 0.012 == pytest.approx(0.001)  # 10 kB/ms: a quantum in 1 ms


def test_window_pacing_gain_is_higher_in_slow_start() -> None:
    assert window_pacing_rate(12000, 0.1, slow_start=True) == pytest.approx(K_PACING_GAIN_SLOW_START * 120000)
    assert window_pacing_rate(12000, 0.1, slow_start=False) == pytest.approx(K_PACING_GAIN * 120000)
    assert window_pacing_rate(12000, 0.0, slow_start=False) is None
    rtt = RttEstimator(0.1)
    reno = create("newreno")
    window = reno.congestion_window
    assert reno.in_slow_start
    assert pacing_rate_for(reno, rtt) == pytest.approx(2 * window / 0.1)
    reno.ssthresh = reno.congestion_window
    assert not reno.in_slow_start
    assert pacing_rate_for(reno, rtt) == pytest.approx(1.25 * window / 0.1)
    bbr = create("bbr")
    assert pacing_rate_for(bbr, rtt) == bbr.pacing_rate(rtt)  # a rate-based controller's own rate


# --- inside the connection -------------------------------------------------------------------------


def established(config: SeamConfig | None = None) -> tuple[Pair, Connection]:
    pair = Pair(config=config)
    pair.handshake()
    pair.run(lambda: not pair._queue, max_time=1.0)  # let the handshake's last packets settle
    return pair, pair.client


def open_window(conn: Connection, *, packets: int, srtt: float) -> None:
    """A large window in congestion avoidance and a known RTT: the pacer, not the window, limits."""
    recovery = conn._recovery
    cc = recovery.congestion
    assert isinstance(cc, NewReno)
    cc.congestion_window = packets * MDS
    cc.ssthresh = cc.congestion_window
    recovery.rtt.smoothed_rtt = srtt


def test_datagrams_to_send_is_paced_and_get_timer_reports_the_pacer() -> None:
    pair, client = established(SeamConfig(congestion="newreno"))
    open_window(client, packets=500, srtt=0.1)  # 1.25 x 600 kB / 100 ms = 7.5 MB/s
    rate = 1.25 * 500 * MDS / 0.1
    sid = client.open_stream()
    client.send_stream_data(sid, bytes(500_000))
    now = pair.now
    sent: list[tuple[float, int]] = []
    total = 0
    while now < pair.now + 0.05:
        out = client.datagrams_to_send(now)
        sent.append((now, len(out)))
        total += sum(len(datagram) for datagram, _ in out)
        timer = client.get_timer()
        assert timer is not None
        assert client._pace_at == timer  # the pacer's wake-up is the earliest timer
        assert timer > now
        now = timer
    counts = [n for _, n in sent]
    burst = max(K_BURST_PACKETS * MDS, rate * K_BURST_INTERVAL) / MDS
    assert counts[0] <= burst + 1  # one bucketful, and perhaps an ACK
    assert max(counts[1:]) <= rate * 0.0011 / MDS + 1  # then about a millisecond's worth per wake-up
    assert total == pytest.approx(rate * 0.05 + burst * MDS, rel=0.1)
    # Without the pacer the first call would have sent the whole window at once.
    assert client._recovery.bytes_in_flight == total < 0.7 * 500 * MDS


def test_ack_only_and_close_packets_are_not_paced() -> None:
    pair, client = established(SeamConfig(congestion="newreno"))
    assert pair.server is not None
    open_window(client, packets=500, srtt=0.1)
    sid = client.open_stream()
    client.send_stream_data(sid, bytes(200_000))
    now = pair.now
    client.datagrams_to_send(now)
    assert client.get_timer() == client._pace_at  # held back by the pacer now
    # The server sends two packets: the client owes an ACK at once (every second packet).
    sid_s = pair.server.open_stream()
    pair.server.send_stream_data(sid_s, b"x" * 3000)
    for datagram, _ in pair.server.datagrams_to_send(now):
        client.receive_datagram(datagram, pair.server.peer_address, now)
    out = client.datagrams_to_send(now)
    assert len(out) == 1 and len(out[0][0]) < 100  # an ACK-only packet, despite the pacer
    client.close()
    assert len(client.datagrams_to_send(now)) == 2  # CLOSE, twice, despite the pacer
    assert client.is_closed


def test_an_idle_connection_arms_no_pacing_timer() -> None:
    pair, client = established(SeamConfig(congestion="newreno"))
    open_window(client, packets=500, srtt=0.1)
    client.datagrams_to_send(pair.now)
    assert client._pace_at is None
    sid = client.open_stream()
    client.send_stream_data(sid, bytes(100_000))
    client.datagrams_to_send(pair.now)
    assert client._pace_at is not None  # data left over: the pacer's wake-up is armed


def test_paced_transfer_through_the_pair_is_exact() -> None:
    pair = Pair(config=SeamConfig(congestion="newreno"))
    pair.handshake()
    data = bytes(range(256)) * 4000
    assert transfer(pair, {0: data}) == {0: data}
