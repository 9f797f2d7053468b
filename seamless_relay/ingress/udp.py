"""Raw UDP: a public UDP port per tunnel; each source address is a flow over Seam datagrams."""

from __future__ import annotations

import logging

import trio

from seam import ConnectionClosed
from seamless_relay.tunnel import Tunnel
from seamless_relay.udpflow import FLOW_HEADER, FlowTable, frame, unframe

logger = logging.getLogger("seamless.relay.udp")
EXPIRY_INTERVAL = 5.0  # seconds between idle-flow sweeps


async def open_udp_socket(host: str, port: int) -> trio.socket.SocketType:
    family = trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET
    sock = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
    try:
        await sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_udp_tunnel(
    tunnel: Tunnel,
    sock: trio.socket.SocketType,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Forward datagrams between public sources and the tunnel's client until cancelled."""
    flows: FlowTable[tuple[str, int]] = FlowTable()
    dropped = {"too-big": 0, "unknown-flow": 0, "table-full": 0}

    async def from_public() -> None:
        while True:
            try:
                payload, addr = await sock.recvfrom(65536)
            except OSError:  # ICMP port unreachable from an earlier reply, and the like
                continue
            # read per datagram: it grows once the tunnel's path MTU search finds room
            if len(payload) > tunnel.conn.max_datagram_size - FLOW_HEADER:
                dropped["too-big"] += 1
                continue
            flow_id = flows.id_for((addr[0], addr[1]), trio.current_time())
            if flow_id is None:
                dropped["table-full"] += 1
                continue
            tunnel.bytes_in += len(payload)
            try:
                await tunnel.conn.send_datagram(frame(flow_id, payload))
            except ValueError:
                dropped["too-big"] += 1

    async def from_client() -> None:
        while True:
            parsed = unframe(await tunnel.conn.receive_datagram())
            if parsed is None:
                continue
            flow_id, payload = parsed
            addr = flows.key_for(flow_id, trio.current_time())
            if addr is None:  # the relay only ever answers sources that wrote to it
                dropped["unknown-flow"] += 1
                continue
            tunnel.bytes_out += len(payload)
            try:
                await sock.sendto(payload, addr)
            except OSError as exc:
                logger.debug("udp %s: send to %s failed: %s", tunnel.name, addr, exc)

    async def expire() -> None:
        while True:
            await trio.sleep(EXPIRY_INTERVAL)
            for addr in flows.expire(trio.current_time()):
                logger.debug("udp %s: flow from %s expired", tunnel.name, addr)

    with sock:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(from_public)
                nursery.start_soon(from_client)
                nursery.start_soon(expire)
                task_status.started()
        except* ConnectionClosed:
            pass  # the client left: the tunnel's own code handles that
