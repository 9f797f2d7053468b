"""UDP flow framing and the bounded flow table."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from seamless_relay.udpflow import FlowTable, frame, unframe


@given(st.integers(0, 2**32 - 1), st.binary(max_size=1500))
def test_frame_round_trip(flow_id: int, payload: bytes) -> None:
    assert unframe(frame(flow_id, payload)) == (flow_id, payload)


def test_short_datagrams_are_not_flows() -> None:
    assert unframe(b"\x00\x01") is None


def test_each_source_is_its_own_flow_and_replies_map_back() -> None:
    table: FlowTable[tuple[str, int]] = FlowTable()
    a = table.id_for(("192.0.2.1", 1000), now=0)
    b = table.id_for(("192.0.2.1", 1001), now=0)
    assert a is not None and b is not None and a != b
    assert table.id_for(("192.0.2.1", 1000), now=1) == a
    assert table.key_for(b, now=1) == ("192.0.2.1", 1001)
    assert table.key_for(999, now=1) is None  # nobody wrote from that flow: no reply goes out


def test_idle_flows_expire_and_activity_keeps_them() -> None:
    table: FlowTable[str] = FlowTable(idle_timeout=60)
    quiet = table.id_for("quiet", now=0)
    busy = table.id_for("busy", now=0)
    assert busy is not None
    table.key_for(busy, now=50)
    assert table.expire(now=61) == ["quiet"]
    assert quiet is not None and table.key_for(quiet, now=61) is None
    assert len(table) == 1


def test_table_is_bounded() -> None:
    table: FlowTable[int] = FlowTable(max_flows=3)
    assert [table.id_for(n, now=0) is not None for n in range(5)] == [True, True, True, False, False]
    assert table.refused == 2
