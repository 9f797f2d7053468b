"""The link emulator's CE-marking AQM (bench/netem/emulator.py), without namespaces or TUN devices."""

from __future__ import annotations

import random
import struct

from bench.netem.emulator import Direction, Impairment, mark_ce


def ipv4(tos: int, payload: bytes = b"x" * 100) -> bytes:
    header = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            tos,
            20 + len(payload),
            1,
            0,
            64,
            17,
            0,
            b"\x0a\x4d\x00\x01",
            b"\x0a\x4d\x00\x02",
        )
    )
    header[10:12] = struct.pack("!H", ~ones_complement_sum(bytes(header)) & 0xFFFF)
    return bytes(header) + payload


def ones_complement_sum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_mark_ce_sets_the_bits_and_keeps_the_ipv4_checksum_valid() -> None:
    for tos in (0b10, 0b01, 0xB8 | 0b10):  # ECT(0), ECT(1), with a DSCP
        marked = mark_ce(ipv4(tos))
        assert marked is not None
        assert marked[1] == tos | 0b11 and marked[20:] == ipv4(tos)[20:]
        assert ones_complement_sum(marked[:20]) == 0xFFFF


def test_mark_ce_leaves_not_ect_ce_and_garbage_alone() -> None:
    assert mark_ce(ipv4(0)) is None  # RFC 3168: never mark a Not-ECT packet
    assert mark_ce(ipv4(0b11)) is None
    assert mark_ce(b"") is None and mark_ce(b"\x45\x02") is None and mark_ce(b"\x4f\x02" + bytes(30)) is None
    v6 = bytes((0x60, 0x20)) + bytes(38)  # traffic class 0x02: ECT(0)
    marked = mark_ce(v6)
    assert marked is not None and (marked[1] >> 4) & 0b11 == 0b11 and marked[2:] == v6[2:]


def test_direction_marks_ect_packets_above_the_threshold_instead_of_dropping() -> None:
    imp = Impairment(rate_mbit=8.0, queue_bytes=200_000, burst_bytes=0, ecn_mark_bytes=5_000)
    direction = Direction(imp, random.Random(1), [])
    for _ in range(60):  # 60 x 1.2 kB offered at once into 1 MB/s: the queue builds
        direction.admit(ipv4(0b10, bytes(1180)), 0.0)
        direction.admit(ipv4(0b00, bytes(1180)), 0.0)
    out: list[bytes] = []
    direction.release(10.0, out.append)
    assert direction.counters["drop_queue"] == 0 and len(out) == 120
    ect = out[::2]
    assert sum(p[1] & 0b11 == 0b11 for p in ect) == direction.counters["ce_marked"] > 50
    assert all(p[1] & 0b11 == 0 for p in out[1::2])  # Not-ECT traffic is only ever queued
