"""The tunnel client: keep one tunnel registered at the relay and forward what arrives.

Theory of operation: ``TunnelClient.run`` loops over connections. Each
connection opens the control stream, registers, then accepts the streams
the relay opens (one per public connection, starting with NewConn) and
splices each to a fresh connection to the local service. UDP tunnels carry
flows in Seam datagrams instead. When the connection drops (the transport's
keepalive and idle timeout notice a dead relay), the client reconnects with
exponential backoff and asks for the same subdomain or port again; the relay
gives it back because names are bound to the client's persistent key.
Refusals that cannot get better by retrying (bad token, wrong relay keys,
invalid or taken names) end ``run`` with :class:`FatalError`.
"""

from __future__ import annotations

import logging
import random
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

import seam
from seam import (
    ConnectionClosed,
    HandshakeError,
    Identity,
    PublicKeys,
    SeamConfig,
    SeamConnection,
    SeamStream,
)
from seamless_relay.control import ControlError, Error, NewConn, Ping, Pong, Register, Registered
from seamless_relay.control_io import ControlChannel, read_preamble
from seamless_relay.splice import splice
from seamless_relay.udpflow import FLOW_HEADER, IDLE_TIMEOUT, MAX_FLOWS, frame, unframe

if TYPE_CHECKING:
    from seamless_client.config import ClientSettings

logger = logging.getLogger("seamless.client")

BACKOFF_MIN = 1.0  # seconds
BACKOFF_MAX = 30.0  # seconds
REGISTER_TIMEOUT = 15.0  # seconds for the relay to answer Register
PREAMBLE_TIMEOUT = 10.0  # seconds for a relay-opened stream to announce itself
LOCAL_CONNECT_TIMEOUT = 10.0  # seconds to reach the local service
FATAL_CODES = frozenset(
    {"unsupported-version", "bad-token", "forbidden", "name-taken", "invalid", "replaced"}
)


class FatalError(Exception):
    """The relay refused in a way that retrying cannot fix; the message says why."""


def backoff_delays(rng: random.Random) -> Callable[[], float]:
    """Exponential backoff from 1 s to 30 s, each delay with up to 25% jitter added (capped at 30 s)."""
    attempt = 0

    def next_delay() -> float:
        nonlocal attempt
        base = min(BACKOFF_MAX, BACKOFF_MIN * 2**attempt)
        attempt += 1
        return min(BACKOFF_MAX, base * (1 + 0.25 * rng.random()))

    return next_delay


class TunnelClient:
    """One tunnel, kept alive across relay restarts and network changes."""

    def __init__(
        self,
        settings: ClientSettings,
        *,
        identity: Identity,
        on_registered: Callable[[Registered, bool], None] | None = None,
        out: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.server_keys = PublicKeys.from_hex(settings.x25519_hex, settings.kem_hex)
        self.on_registered = on_registered
        self.out = out or (lambda line: print(line, flush=True))
        self.rng = rng or random.Random()
        self.subdomain = settings.subdomain
        self.remote_port = settings.remote_port
        self.registered: Registered | None = None
        self.connections = 0
        self.fatal: FatalError | None = None

    def seam_config(self) -> SeamConfig:
        return SeamConfig(
            cipher=self.settings.cipher, congestion=self.settings.congestion, fec=self.settings.fec
        )

    async def run(self, *, task_status: trio.TaskStatus[Registered] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, register and forward, reconnecting forever; FatalError ends it."""
        delays = backoff_delays(self.rng)
        started = False

        def registered(reply: Registered) -> None:
            nonlocal delays, started
            delays = backoff_delays(self.rng)  # a good registration resets the backoff
            if not started:
                started = True
                task_status.started(reply)

        while True:
            try:
                await self._session(registered)
                reason = "the relay closed the tunnel"
            except HandshakeError as exc:
                if exc.reason == "authentication":
                    raise FatalError(str(exc)) from None
                reason = f"cannot reach the relay ({exc})"
            except ConnectionClosed as exc:
                reason = f"connection lost ({exc.reason})"
            except (trio.BrokenResourceError, trio.ClosedResourceError, ControlError, OSError) as exc:
                reason = f"connection lost ({exc})"
            except trio.TooSlowError:
                reason = "the relay did not answer the registration in time"
            delay = delays()
            logger.warning("%s; reconnecting in %.1f s", reason, delay)
            await trio.sleep(delay)

    async def _session(self, registered: Callable[[Registered], None]) -> None:
        """One connection: register, report the reply, forward until the connection ends."""
        settings = self.settings
        async with seam.connect(
            settings.relay_host,
            settings.relay_port,
            server_keys=self.server_keys,
            identity=self.identity,
            config=self.seam_config(),
        ) as conn:
            control = ControlChannel(await conn.open_stream())
            await control.send(
                Register(
                    token=settings.token,
                    kind=settings.kind,
                    subdomain=self.subdomain,
                    hostname=settings.hostname,
                    remote_port=self.remote_port,
                )
            )
            with trio.fail_after(REGISTER_TIMEOUT):
                reply = await control.receive()
            if isinstance(reply, Error):
                if reply.code == "name-taken" and self._chosen_by_relay():
                    # The relay picked this name or port last time and gave it away after the grace
                    # period: ask for a fresh one instead of giving up.
                    self.subdomain, self.remote_port = self.settings.subdomain, self.settings.remote_port
                    raise ConnectionClosed(f"{reply.message}; asking the relay for a new one")
                if reply.code in FATAL_CODES:
                    raise FatalError(f"the relay refused the tunnel: {reply.message} ({reply.code})")
                raise ConnectionClosed(f"the relay refused the tunnel for now: {reply.message}")
            if not isinstance(reply, Registered):
                raise ConnectionClosed("the relay answered Register with something else")
            reconnect = self.registered is not None
            self.registered = reply
            if reply.subdomain:
                self.subdomain = reply.subdomain
            if reply.remote_port:
                self.remote_port = reply.remote_port
            self._announce(reply, reconnect)
            registered(reply)
            await self._forward_until_closed(conn, control)

    def _chosen_by_relay(self) -> bool:
        if self.settings.kind == "http":
            return (
                self.settings.subdomain is None
                and self.settings.hostname is None
                and self.subdomain is not None
            )
        return not self.settings.remote_port and bool(self.remote_port)

    def _announce(self, reply: Registered, reconnect: bool) -> None:
        if self.on_registered is not None:
            self.on_registered(reply, reconnect)
            return
        local = f"{self.settings.local_host}:{self.settings.local_port}"
        if reconnect:
            logger.info("reconnected: %s", reply.url)
            return
        for url in reply.urls or [reply.url]:
            self.out(f"Forwarding {url} -> {self.settings.kind}://{local}")

    async def _forward_until_closed(self, conn: SeamConnection, control: ControlChannel) -> None:
        """Forward until the connection or the control stream ends; raises why."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._accept_streams, conn, nursery)
                nursery.start_soon(self._watch_control, control, nursery.cancel_scope)
                if self.settings.kind == "udp":
                    nursery.start_soon(self._udp, conn)
                await conn.wait_closed()
                nursery.cancel_scope.cancel()
        except* ConnectionClosed:
            pass
        if self.fatal is not None:
            raise self.fatal
        if conn.terminated.is_set():
            raise await conn.wait_closed()
        raise ConnectionClosed("the relay closed the control stream")

    async def _watch_control(self, control: ControlChannel, scope: trio.CancelScope) -> None:
        try:
            while (message := await control.receive()) is not None:
                if isinstance(message, Error):
                    self.fatal = FatalError(f"the relay ended the tunnel: {message.message} ({message.code})")
                    break
                if isinstance(message, Ping):
                    await control.send(Pong(nonce=message.nonce))
        except (ControlError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    async def _accept_streams(self, conn: SeamConnection, nursery: trio.Nursery) -> None:
        while True:
            stream = await conn.accept_stream()
            nursery.start_soon(self._forward_stream, stream)

    async def _forward_stream(self, stream: SeamStream) -> None:
        """One public connection: dial the local service and splice; errors stay here."""
        try:
            async with stream:
                with trio.move_on_after(PREAMBLE_TIMEOUT):
                    preamble = await read_preamble(stream)
                if preamble is None or not isinstance(preamble[0], NewConn):
                    return
                new_conn, rest = preamble
                self.connections += 1
                local = await self._dial_local(new_conn)
                if local is None:
                    return  # closing the stream unanswered makes the relay send 502
                async with local:
                    if not self.settings.quiet:
                        what = new_conn.request or "connection"
                        self.out(f"{new_conn.proto.upper()} {what} from {new_conn.client_addr}")
                    await splice(stream, local, a_initial=rest)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed, ControlError) as exc:
            logger.debug("forwarded stream ended: %r", exc)

    async def _dial_local(self, new_conn: NewConn) -> trio.SocketStream | None:
        host, port = self.settings.local_host, self.settings.local_port
        try:
            with trio.fail_after(LOCAL_CONNECT_TIMEOUT):
                return await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError) as exc:
            self.out(f"cannot reach the local service {host}:{port} for {new_conn.client_addr}: {exc}")
            return None

    async def _udp(self, conn: SeamConnection) -> None:
        """UDP tunnel: one connected local socket per flow, expired after IDLE_TIMEOUT."""
        flows: dict[int, tuple[trio.socket.SocketType, trio.CancelScope]] = {}
        host, port = self.settings.local_host, self.settings.local_port

        async with trio.open_nursery() as nursery:

            async def flow_task(flow_id: int, sock: trio.socket.SocketType, scope: trio.CancelScope) -> None:
                with sock, scope:
                    while True:
                        scope.deadline = trio.current_time() + IDLE_TIMEOUT
                        try:
                            data = await sock.recv(65536)
                        except OSError:
                            continue  # ICMP unreachable: the local service is not up (yet)
                        if len(data) + FLOW_HEADER <= conn.max_datagram_size:
                            await conn.send_datagram(frame(flow_id, data))
                flows.pop(flow_id, None)

            while True:
                parsed = unframe(await conn.receive_datagram())
                if parsed is None:
                    continue
                flow_id, payload = parsed
                entry = flows.get(flow_id)
                if entry is None:
                    if len(flows) >= MAX_FLOWS:
                        continue
                    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_DGRAM)
                    family, _, _, _, sockaddr = infos[0]
                    sock = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
                    await sock.connect(sockaddr)
                    entry = (sock, trio.CancelScope())
                    flows[flow_id] = entry
                    nursery.start_soon(flow_task, flow_id, *entry)
                    if not self.settings.quiet:
                        self.out(f"UDP flow {flow_id} opened")
                sock, scope = entry
                scope.deadline = trio.current_time() + IDLE_TIMEOUT
                try:
                    await sock.send(payload)
                except OSError as exc:
                    logger.debug("udp flow %d: send failed: %s", flow_id, exc)


def run(settings: ClientSettings) -> int:
    """The CLI entry: run the tunnel until Ctrl-C (exit 0) or a fatal refusal (exit 1)."""
    identity = Identity.load_or_create(settings.identity_path)
    client = TunnelClient(settings, identity=identity)
    fatal: list[str] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
            await client.run()

    try:
        trio.run(main)
    except* FatalError as group:
        fatal.extend(str(exc) for exc in group.exceptions)
    except* KeyboardInterrupt:
        pass
    if fatal:
        print(f"Error: {fatal[0]}", file=sys.stderr, flush=True)
        return 1
    return 0


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return
