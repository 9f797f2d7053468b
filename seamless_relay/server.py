"""The relay: owns the root nursery, the Seam listener and every public listener.

Theory of operation: each client Seam connection is one tunnel. Its first
stream is the control stream: one Register, answered by Registered or Error,
then Ping/Pong until either side leaves. The tunnel runs in a nursery of its
own (its TCP listener or UDP socket, and every public connection it
forwards); when the client's connection ends that nursery is cancelled and
the tunnel's names and ports stay reserved for the same client key for the
grace period. Public HTTP(S) connections live in the relay's nursery and
reach a tunnel only through ``route_http``.
"""

from __future__ import annotations

import hmac
import logging
import random
import re
import signal
from collections import Counter
from typing import TYPE_CHECKING, Any

import trio

import seam
from seam import ConnectionClosed, ErrorCode, Identity, SeamConfig, SeamConnection
from seamless_relay.control import PROTOCOL_VERSION, ControlError, Error, Ping, Pong, Register, Registered
from seamless_relay.control_io import ControlChannel
from seamless_relay.ingress.http import HttpIngress, Route
from seamless_relay.ingress.tcp import accept_forever, open_tcp_listener, serve_passthrough, serve_tcp_tunnel
from seamless_relay.ingress.udp import open_udp_socket, serve_udp_tunnel
from seamless_relay.registry import Registry, RegistryError, random_subdomain, validate_subdomain
from seamless_relay.store import HTTP, PORTS, RelayStore
from seamless_relay.tunnel import Tunnel, address_host

if TYPE_CHECKING:
    from seamless_relay.config import RelayConfig

logger = logging.getLogger("seamless.relay")

REGISTER_TIMEOUT = 10.0  # seconds a new client has to send Register
EVICT_TIMEOUT = 5.0  # seconds to wait for a replaced tunnel to free its port
EXPIRE_INTERVAL = 30.0  # seconds between sweeps of expired reservations
TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds
MAX_TUNNELS_PER_CLIENT = 16
REPLACED_MESSAGE = "another connection with this client's key registered the same name"
MAX_TUNNELS = 10_000
MAX_CONNECTIONS_PER_IP = 512  # concurrent public HTTP(S) connections from one peer address
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"  # RFC 1123
)


class Refusal(Exception):
    """A Register the relay turns down; ``code`` and ``message`` go back to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_token(tokens: frozenset[str] | None, presented: str | None) -> bool:
    """Constant time per token, and every token is compared whatever matches."""
    if tokens is None:
        return True
    given = (presented or "").encode("utf-8")
    matches = 0
    for token in tokens:
        matches |= hmac.compare_digest(token.encode("utf-8"), given)
    return bool(matches) and bool(given)


class Relay:
    """A running relay; ``run`` binds everything and reports the bound ports via ``task_status``."""

    def __init__(
        self,
        config: RelayConfig,
        *,
        identity: Identity,
        tokens: frozenset[str] | None = None,
        tls: Any = None,
        store: RelayStore | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.tokens = tokens
        self.tls = tls  # a seamless_relay.tls.CertificateStore when HTTPS is on
        self.store = store  # persists reservations across restarts; None keeps them in memory only
        self.rng = rng or random.SystemRandom()
        self.http_names: Registry[Tunnel] = Registry(grace=config.subdomain_grace)
        self.ports: Registry[Tunnel] = Registry(grace=config.subdomain_grace)
        self.tunnels: set[Tunnel] = set()
        self.seam_port = 0
        self.http_port: int | None = None
        self.https_port: int | None = None
        self.passthrough_ports: list[int] = []
        self.refusals: Counter[str] = Counter()
        self.http = HttpIngress(self.route_http, scheme="http", max_body_size=config.max_body_size)
        self.https = HttpIngress(self.route_http, scheme="https", max_body_size=config.max_body_size)
        self._per_ip: Counter[str] = Counter()

    # ------------------------------------------------------------- routing

    def route_http(self, host: str) -> Route:
        tunnel = self.http_names.get(host)
        if tunnel is not None:
            return Route("paused", tunnel) if tunnel.paused else Route("ok", tunnel)
        if self.http_names.is_reserved(host):
            return Route("offline")
        return Route("unknown")

    @property
    def bind_host(self) -> str:
        """Where per-tunnel TCP and UDP ports listen: the Seam listener's address."""
        return self.config.seam_addr.host

    def public_host(self) -> str:
        if self.config.base_domain != "localhost":
            return self.config.base_domain
        host = self.config.seam_addr.host
        return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host

    def http_urls(self, hostname: str) -> list[str]:
        urls = []
        if self.http_port is not None:
            urls.append(f"http://{hostname}" + ("" if self.http_port == 80 else f":{self.http_port}"))
        if self.https_port is not None:
            urls.append(f"https://{hostname}" + ("" if self.https_port == 443 else f":{self.https_port}"))
        return urls

    # ---------------------------------------------------------------- run

    def seam_config(self) -> SeamConfig:
        keepalive = self.config.tunnel_keepalive
        return SeamConfig(
            cipher=self.config.cipher,
            congestion=self.config.congestion,
            fec=self.config.fec,
            idle_timeout=keepalive,
            keepalive_interval=max(0.5, keepalive / 3),
        )

    async def run(self, *, task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED) -> None:
        config = self.config
        async with (
            seam.listen(
                config.seam_addr.host,
                config.seam_addr.port,
                identity=self.identity,
                config=self.seam_config(),
            ) as listener,
            trio.open_nursery() as nursery,
        ):
            self.seam_port = listener.port
            if self.store is not None:
                restored = RelayStore.restore(
                    self.store.load_reservations(), self._registries(), now=trio.current_time()
                )
                if restored:
                    logger.info("restored %d name and port reservations from %s", restored, self.store.path)
            if config.http_addr is not None:
                http_listener = await open_tcp_listener(config.http_addr.host, config.http_addr.port)
                self.http_port = http_listener.socket.getsockname()[1]
                nursery.start_soon(self._serve_public, http_listener, self.http, False)
            if config.https_addr is not None and self.tls is not None:
                https_listener = await open_tcp_listener(config.https_addr.host, config.https_addr.port)
                self.https_port = https_listener.socket.getsockname()[1]
                nursery.start_soon(self._serve_public, https_listener, self.https, True)
                await nursery.start(self.tls.watch)
            for rule in config.tcp_passthrough:
                pt_listener = await open_tcp_listener(self.bind_host, rule.listen_port)
                self.passthrough_ports.append(pt_listener.socket.getsockname()[1])
                await nursery.start(serve_passthrough, pt_listener, rule.backend.host, rule.backend.port)
            nursery.start_soon(self._expire_loop)
            self._log_boot()
            task_status.started(self)
            while True:
                conn = await listener.accept()
                nursery.start_soon(self._client, conn)

    def _log_boot(self) -> None:
        keys = self.identity.public
        logger.info("seam-pubkey-x25519 %s", keys.x25519_hex)
        logger.info("seam-pubkey-kem %s", keys.kem_hex)
        logger.info("seam listening on udp %s:%d", self.config.seam_addr.host, self.seam_port)
        if self.http_port is not None:
            logger.info("http listening on %s:%d", self.config.http_addr.host, self.http_port)  # type: ignore[union-attr]
        if self.https_port is not None:
            logger.info("https listening on %s:%d", self.config.https_addr.host, self.https_port)  # type: ignore[union-attr]
        for rule, port in zip(self.config.tcp_passthrough, self.passthrough_ports, strict=True):
            logger.info(
                "passthrough tcp %s:%d -> %s:%d", self.bind_host, port, rule.backend.host, rule.backend.port
            )
        logger.info(
            "connect: seamless http <port> --relay %s:%d --x25519 %s --kem %s",
            self.public_host(),
            self.seam_port,
            keys.x25519_hex,
            keys.kem_hex,
        )

    async def _expire_loop(self) -> None:
        while True:
            await trio.sleep(EXPIRE_INTERVAL)
            now = trio.current_time()
            self.http_names.expire(now)
            self.ports.expire(now)

    async def _serve_public(self, listener: trio.SocketListener, ingress: HttpIngress, tls: bool) -> None:
        """Accept public HTTP(S) connections; each is served in its own contained task."""

        async def serve(public: trio.SocketStream) -> None:
            try:
                peer = public.socket.getpeername()
            except OSError:
                await public.aclose()
                return
            ip = address_host(peer)
            if self._per_ip[ip] >= MAX_CONNECTIONS_PER_IP:
                await public.aclose()
                return
            self._per_ip[ip] += 1
            try:
                stream: trio.abc.Stream = public
                if tls:
                    ssl_stream = trio.SSLStream(
                        public, self.tls.context(), server_side=True, https_compatible=True
                    )
                    with trio.move_on_after(TLS_HANDSHAKE_TIMEOUT) as timer:
                        try:
                            await ssl_stream.do_handshake()
                        except trio.BrokenResourceError:
                            return
                    if timer.cancelled_caught:
                        return
                    stream = ssl_stream
                await ingress.handle(stream, ip)
            finally:
                self._per_ip[ip] -= 1
                if not self._per_ip[ip]:
                    del self._per_ip[ip]
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(public)

        await accept_forever(listener, serve, "public https" if tls else "public http")

    # ------------------------------------------------------------ tunnels

    async def _client(self, conn: SeamConnection) -> None:
        try:
            await self._client_session(conn)
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.debug("client %s left: %r", conn.remote_address, exc)
        except Exception:
            logger.exception("client session %s failed", conn.remote_address)
        finally:
            with trio.CancelScope(shield=True):
                await conn.aclose()

    async def _client_session(self, conn: SeamConnection) -> None:
        owner = conn.peer_public_key or b""
        register: object = None
        control: ControlChannel | None = None
        with trio.move_on_after(REGISTER_TIMEOUT):
            control = ControlChannel(await conn.accept_stream())
            try:
                register = await control.receive()
            except ControlError as exc:
                await control.send(Error(code="invalid", message=str(exc)[:1000]))
                return
        if control is None or register is None:
            return
        if not isinstance(register, Register):
            await control.send(Error(code="invalid", message="the first control message must be register"))
            return
        try:
            tunnel = await self._admit(conn, owner, register)
        except Refusal as refusal:
            self.refusals[refusal.code] += 1
            logger.info("refused client %s: %s (%s)", conn.remote_address, refusal.message, refusal.code)
            await control.send(Error(code=refusal.code, message=refusal.message))  # type: ignore[arg-type]
            await control.stream.send_eof()
            with trio.move_on_after(2):  # let the client read it and close first
                await conn.wait_closed()
            return
        await self._run_tunnel(tunnel, control, register)

    async def _run_tunnel(self, tunnel: Tunnel, control: ControlChannel, register: Register) -> None:
        self.tunnels.add(tunnel)
        tunnel.control = control
        try:
            async with trio.open_nursery() as nursery:
                tunnel.nursery = nursery
                if tunnel.kind == "tcp":
                    await nursery.start(serve_tcp_tunnel, tunnel, tunnel.socket)
                elif tunnel.kind == "udp":
                    await nursery.start(serve_udp_tunnel, tunnel, tunnel.socket)
                tunnel.socket = None
                await control.send(
                    Registered(
                        kind=tunnel.kind,
                        url=tunnel.url,
                        urls=self.http_urls(tunnel.name) if tunnel.kind == "http" else [],
                        subdomain=tunnel.subdomain,
                        remote_port=tunnel.remote_port,
                    )
                )
                logger.info(
                    "tunnel up: %s %s for client %s at %s",
                    tunnel.kind,
                    tunnel.url,
                    tunnel.owner_hex,
                    tunnel.conn.remote_address[0],
                )
                nursery.start_soon(self._control_loop, control, nursery.cancel_scope)
                nursery.start_soon(_cancel_when_closed, tunnel.conn, nursery.cancel_scope)
        finally:
            self._release(tunnel)
            logger.info("tunnel down: %s %s", tunnel.kind, tunnel.url)

    async def _control_loop(self, control: ControlChannel, scope: trio.CancelScope) -> None:
        """Answer pings; the control stream ending ends the tunnel."""
        try:
            while True:
                message = await control.receive()
                if message is None:
                    break
                if isinstance(message, Ping):
                    await control.send(Pong(nonce=message.nonce))
        except (ControlError, trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed) as exc:
            logger.debug("control stream ended: %r", exc)
        scope.cancel()

    def _registries(self) -> dict[str, Registry[Any]]:
        return {HTTP: self.http_names, PORTS: self.ports}

    def _persist(self) -> None:
        if self.store is not None:
            grace = self.config.subdomain_grace
            self.store.save(self.identity, self._registries(), now=trio.current_time(), grace=grace)

    def _release(self, tunnel: Tunnel) -> None:
        now = trio.current_time()
        self.tunnels.discard(tunnel)
        if tunnel.socket is not None:
            _close_socket(tunnel.socket)
            tunnel.socket = None
        for key in tunnel.registry_keys:
            registry = self.http_names if tunnel.kind == "http" else self.ports
            registry.release(key, tunnel, now)
        tunnel.released.set()
        self._persist()

    async def _evict(self, old: Tunnel) -> None:
        """The same client key registers a name it still holds: its new connection wins."""
        logger.info("client %s reconnected: replacing its tunnel %s", old.owner_hex, old.url)
        if old.control is not None:
            with trio.move_on_after(1):
                try:
                    await old.control.send(Error(code="replaced", message=REPLACED_MESSAGE))
                except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed):
                    pass
        await old.conn.aclose(ErrorCode.NO_ERROR, "replaced by a newer connection of the same client")
        with trio.move_on_after(EVICT_TIMEOUT):
            await old.released.wait()

    async def _admit(self, conn: SeamConnection, owner: bytes, register: Register) -> Tunnel:
        """Validate a Register and claim its name or port; Refusal says why not."""
        if register.version != PROTOCOL_VERSION:
            raise Refusal(
                "unsupported-version",
                f"protocol version {register.version} is not supported; this relay speaks {PROTOCOL_VERSION}",
            )
        if not check_token(self.tokens, register.token):
            raise Refusal("bad-token", "the token is missing or not accepted by this relay")
        if not owner:
            raise Refusal("forbidden", "the client presented no identity key")
        if len(self.tunnels) >= MAX_TUNNELS:
            raise Refusal("limit-reached", "this relay has reached its tunnel limit")
        if sum(1 for t in self.tunnels if t.owner == owner) >= MAX_TUNNELS_PER_CLIENT:
            raise Refusal("limit-reached", f"a client may hold at most {MAX_TUNNELS_PER_CLIENT} tunnels")
        if register.kind == "http":
            return await self._admit_http(conn, owner, register)
        return await self._admit_port(conn, owner, register)

    def _requested_hostname(self, register: Register) -> str | None:
        base = self.config.base_domain
        if register.hostname:
            hostname = register.hostname.strip().lower().rstrip(".")
            if hostname == base or hostname.endswith("." + base):
                label = hostname[: -len(base) - 1] if hostname != base else ""
                return f"{self._valid_label(label)}.{base}"
            if not self.config.allow_custom_domains:
                raise Refusal("forbidden", f"custom domains are not allowed on this relay ({hostname})")
            if not HOSTNAME_RE.match(hostname):
                raise Refusal("invalid", f"{register.hostname!r} is not a valid hostname")
            return hostname
        if register.subdomain:
            return f"{self._valid_label(register.subdomain)}.{base}"
        return None

    def _valid_label(self, label: str) -> str:
        try:
            return validate_subdomain(label, reserved=frozenset(self.config.reserved_subdomains))
        except RegistryError as exc:
            raise Refusal(exc.code, exc.message) from None

    async def _admit_http(self, conn: SeamConnection, owner: bytes, register: Register) -> Tunnel:
        if self.http_port is None and self.https_port is None:
            raise Refusal("forbidden", "this relay serves no HTTP or HTTPS")
        hostname = self._requested_hostname(register)
        now = trio.current_time()
        if hostname is None:
            for _ in range(32):
                label = random_subdomain(
                    self.rng, length=self.config.subdomain_length, prefix=self.config.subdomain_prefix
                )
                candidate = f"{label}.{self.config.base_domain}"
                if label not in self.config.reserved_subdomains and self.http_names.owner(candidate) is None:
                    hostname = candidate
                    break
            else:
                raise Refusal("limit-reached", "no free random subdomain; try again")
        existing = self.http_names.get(hostname)
        if existing is not None and existing.owner == owner:
            await self._evict(existing)
            now = trio.current_time()
        urls = self.http_urls(hostname)
        tunnel = Tunnel(conn=conn, owner=owner, kind="http", name=hostname, url=urls[0])
        if hostname.endswith("." + self.config.base_domain):
            tunnel.subdomain = hostname[: -len(self.config.base_domain) - 1]
        try:
            self.http_names.claim(hostname, owner, tunnel, now)
            self._persist()
        except RegistryError as exc:
            raise Refusal("name-taken", f"{hostname} is already taken by another client") from exc
        tunnel.registry_keys.append(hostname)
        return tunnel

    async def _admit_port(self, conn: SeamConnection, owner: bytes, register: Register) -> Tunnel:
        kind = register.kind
        if register.remote_port is None:
            raise Refusal("invalid", f"a {kind} tunnel needs remote_port (0 lets the relay choose)")
        port = register.remote_port
        now = trio.current_time()
        if port:
            existing = self.ports.get((kind, port))
            if existing is not None and existing.owner == owner:
                await self._evict(existing)
                now = trio.current_time()
            if not self.ports.available((kind, port), owner, now):
                raise Refusal("name-taken", f"{kind} port {port} is already taken by another client")
        try:
            if kind == "tcp":
                listener = await open_tcp_listener(self.bind_host, port)
                bound = listener.socket.getsockname()[1]
                sock: Any = listener
            else:
                sock = await open_udp_socket(self.bind_host, port)
                bound = sock.getsockname()[1]
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise Refusal(
                "name-taken", f"{kind} port {port} is not available on the relay ({reason})"
            ) from None
        host = self.public_host()
        tunnel = Tunnel(
            conn=conn, owner=owner, kind=kind, name=f"{kind}:{bound}", url=f"{kind}://{host}:{bound}"
        )
        tunnel.remote_port = bound
        tunnel.socket = sock
        try:
            self.ports.claim((kind, bound), owner, tunnel, now)
            self._persist()
        except RegistryError as exc:
            _close_socket(sock)
            raise Refusal("name-taken", f"{kind} port {bound} is already taken") from exc
        tunnel.registry_keys.append((kind, bound))
        return tunnel


def _close_socket(sock: Any) -> None:
    """Close a bound UDP socket or TCP listener synchronously."""
    getattr(sock, "socket", sock).close()


async def _cancel_when_closed(conn: SeamConnection, scope: trio.CancelScope) -> None:
    await conn.wait_closed()
    scope.cancel()


# ------------------------------------------------------------------ entry


async def serve_relay(
    config: RelayConfig, *, task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED
) -> None:
    from seamless_relay.config import load_tokens

    tokens = load_tokens(config.auth_file) if config.auth_file is not None else None
    tls = None
    if config.https_addr is not None:
        from seamless_relay.tls import CertificateStore

        if config.tls_self_signed and config.tls_cert is None:
            tls = CertificateStore.self_signed(config.base_domain)
        else:
            assert config.tls_cert is not None and config.tls_key is not None  # the config checked this
            tls = CertificateStore.from_files(config.tls_cert, config.tls_key)
    store = RelayStore(config.store)
    relay = Relay(config, identity=store.load_identity(), tokens=tokens, tls=tls, store=store)
    async with trio.open_nursery() as nursery:
        if tls is None:
            await nursery.start(_ignore_sighup)
        await nursery.start(relay.run)
        task_status.started(relay)


async def _ignore_sighup(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """SIGHUP reloads certificates; without HTTPS there is nothing to reload, and it must not kill us."""
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        task_status.started()
        async for _ in signals:
            logger.info("SIGHUP: no certificates to reload (HTTPS is off)")


def run(config: RelayConfig) -> int:
    """Run until Ctrl-C or SIGTERM; the exit code for the CLI."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
            await nursery.start(serve_relay, config)

    from seamless_relay.tls import TlsConfigError

    failed: list[str] = []
    bad_config: list[str] = []
    try:
        trio.run(main)
    except* KeyboardInterrupt:
        pass
    except* (TlsConfigError, ValueError) as group:
        bad_config.extend(str(exc) for exc in _leaves(group))
    except* OSError as group:
        failed.extend(str(exc) for exc in _leaves(group))
    if bad_config:
        logger.error("cannot start the relay: %s", "; ".join(bad_config))
        return 2
    if failed:
        logger.error("cannot start the relay: %s", "; ".join(failed))
        return 1
    logger.info("relay stopped")
    return 0


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The real errors inside (possibly nested) exception groups."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            logger.info("stopping")
            scope.cancel()
            return
