"""HTTP/1.1 ingress: route each request by Host to a tunnel and forward it.

Theory of operation: one public connection runs requests one after another
(keep-alive). Each request gets a fresh Seam stream to the client (so an
upstream connection is never shared between two public clients), carrying a
rewritten head (forwarding headers set, hop-by-hop headers removed,
``Connection: close`` upstream) and then the body bytes, passed through as
they arrive. The response head is parsed to learn where its body ends, so
the public connection can carry the next request. A request asking for an
upgrade is forwarded with ``Connection: upgrade``; only a real ``101``
answer turns the connection into a raw two-way pipe.

Errors before the response starts become a small error page (400, 404, 408,
413, 431, 502, 503); after it started, the connection is simply closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import trio

from seam import SeamStream
from seamless_relay.http_head import (
    BodyReader,
    HttpError,
    Request,
    Response,
    error_response,
    find_head_end,
    forward_request_head,
    forward_response_head,
    parse_request_head,
    parse_response_head,
)
from seamless_relay.splice import CHUNK, send_eof_if_possible, splice
from seamless_relay.tunnel import Tunnel, TunnelGone

logger = logging.getLogger("seamless.relay.http")

HEAD_TIMEOUT = 10.0  # seconds to finish a request head once it started (slowloris gets 408)
KEEPALIVE_IDLE = 75.0  # seconds an idle keep-alive connection is kept between requests
RESPONSE_HEAD_TIMEOUT = 300.0  # seconds the local service may take to start answering (then 504)
MAX_INTERIM_RESPONSES = 8  # 1xx heads forwarded before the final one


@dataclass(frozen=True)
class Route:
    """Where a Host leads: a live tunnel, or why not."""

    state: Literal["ok", "unknown", "offline", "paused"]
    tunnel: Tunnel | None = None


Router = Callable[[str], Route]


class _Close(Exception):
    """End this public connection quietly (the response, if any, is already sent)."""


class HttpIngress:
    """Serves public HTTP (or, given TLS streams, HTTPS) connections for the relay."""

    def __init__(self, router: Router, *, scheme: Literal["http", "https"], max_body_size: int) -> None:
        self._router = router
        self._scheme = scheme
        self._max_body = max_body_size or None
        self.requests = 0
        self.errors: dict[int, int] = {}

    async def handle(self, public: trio.abc.Stream, client_ip: str) -> None:
        """Serve requests on one public connection until either side closes it."""
        buffer = bytearray()
        try:
            while True:
                request = await self._read_request_head(public, buffer)
                if request is None:
                    return
                self.requests += 1
                if not await self._exchange(public, client_ip, request, buffer):
                    return
        except HttpError as exc:
            await self._send_error(public, exc.status, exc.message)
        except (_Close, trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _send_error(self, public: trio.abc.Stream, status: int, message: str) -> None:
        self.errors[status] = self.errors.get(status, 0) + 1
        try:
            await public.send_all(error_response(status, message))
            await send_eof_if_possible(public)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _read_request_head(self, public: trio.abc.Stream, buffer: bytearray) -> Request | None:
        """The next request head, or None when the client closed an idle connection."""
        with trio.move_on_after(KEEPALIVE_IDLE):
            while not buffer:
                data = await public.receive_some(CHUNK)
                if not data:
                    return None
                buffer += data
        if not buffer:
            return None  # idle too long: close without a word, like any server
        end: int | None = None
        with trio.move_on_after(HEAD_TIMEOUT):
            while (end := find_head_end(buffer)) is None:
                data = await public.receive_some(CHUNK)
                if not data:
                    return None
                buffer += data
        if end is None:
            raise HttpError(408, "The request head did not arrive in time.")
        head = bytes(buffer[:end])
        del buffer[:end]
        return parse_request_head(head)

    def _route(self, request: Request) -> Tunnel:
        host = request.host
        if not host:
            raise HttpError(400, "The request has no Host header.")
        route = self._router(host)
        if route.state == "offline":
            raise HttpError(503, f"The tunnel for {host} is offline; its client is not connected.")
        if route.state == "paused":
            raise HttpError(503, f"The tunnel for {host} is paused.")
        if route.state != "ok" or route.tunnel is None:
            raise HttpError(404, f"No tunnel is registered for {host}.")
        return route.tunnel

    async def _exchange(
        self, public: trio.abc.Stream, client_ip: str, request: Request, buffer: bytearray
    ) -> bool:
        """Forward one request and its response; True if the connection may carry another."""
        tunnel = self._route(request)
        if request.framing.kind == "length" and self._max_body and request.framing.length > self._max_body:
            raise HttpError(413, f"The request body exceeds the limit of {self._max_body} bytes.")
        if (request.header("expect") or "").lower() not in ("", "100-continue"):
            raise HttpError(417, "Only 'Expect: 100-continue' is supported.")
        upgrade = request.upgrade is not None
        try:
            stream = await tunnel.open_stream(client_ip, request=f"{request.method} {request.target[:200]}")
        except TunnelGone:
            raise HttpError(503, f"The tunnel for {request.host} is offline.") from None
        tunnel.active += 1
        try:
            async with stream:
                return await self._forward(public, stream, tunnel, client_ip, request, buffer, upgrade)
        finally:
            tunnel.active -= 1

    async def _forward(
        self,
        public: trio.abc.Stream,
        stream: SeamStream,
        tunnel: Tunnel,
        client_ip: str,
        request: Request,
        buffer: bytearray,
        upgrade: bool,
    ) -> bool:
        """Send the request through ``stream`` while passing the response back."""
        upload = _Upload(public, stream, BodyReader(request.framing, max_body_size=self._max_body), buffer)
        try:
            await stream.send_all(
                forward_request_head(request, client_ip=client_ip, scheme=self._scheme, upgrade=upgrade)
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The client stopped reading this stream at once: it could not reach its local service.
            raise HttpError(
                502, f"The tunnel client for {request.host} could not reach its local service."
            ) from None
        outcome: bool | BaseException | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(upload.run, not upgrade, nursery.cancel_scope)
            try:
                outcome = await self._respond(public, stream, tunnel, request, buffer, upgrade, upload)
            except (HttpError, _Close, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                outcome = exc
            nursery.cancel_scope.cancel()  # the upload is done, or no longer wanted
        if outcome is None:  # the upload failed and cancelled the response side
            if upload.error is not None and not upload.response_started:
                raise upload.error
            raise _Close()
        if isinstance(outcome, BaseException):
            if isinstance(outcome, HttpError) and upload.response_started:
                raise _Close()
            raise outcome
        return outcome

    async def _respond(
        self,
        public: trio.abc.Stream,
        stream: SeamStream,
        tunnel: Tunnel,
        request: Request,
        buffer: bytearray,
        upgrade: bool,
        upload: _Upload,
    ) -> bool:
        """Pass the response on; True if the public connection may carry another request."""
        response_buffer = bytearray()
        response = await self._read_response_head(public, stream, request, response_buffer, upload)
        if response.status == 101:
            if not upgrade or not upload.finished:
                raise _Close()  # switched protocols unasked, or mid-body: refuse to pipe
            upload.response_started = True
            await public.send_all(forward_response_head(response, keep_alive=True))
            await splice(public, stream, a_initial=bytes(buffer), b_initial=bytes(response_buffer))
            raise _Close()
        keep_alive = request.keep_alive and response.framing.kind != "until-close" and not upgrade
        upload.response_started = True
        await public.send_all(
            forward_response_head(response, keep_alive=keep_alive, request_version=request.version)
        )
        reader = BodyReader(response.framing)
        data = bytes(response_buffer)
        while True:
            if data:
                try:
                    body, _extra = reader.feed(data)
                except HttpError:
                    raise _Close() from None  # a malformed upstream body: cut the response short
                if body:
                    await public.send_all(body)
                    tunnel.bytes_out += len(body)
            if reader.done:
                break
            data = await _receive_upstream(stream)
            if not data:
                try:
                    reader.eof()
                except HttpError:
                    raise _Close() from None
                break
        tunnel.bytes_in += upload.sent
        if not keep_alive or not upload.finished:
            await send_eof_if_possible(public)
            raise _Close()
        return True

    async def _read_response_head(
        self,
        public: trio.abc.Stream,
        stream: SeamStream,
        request: Request,
        response_buffer: bytearray,
        upload: _Upload,
    ) -> Response:
        """The final response head; 1xx interim heads are passed on as they come."""
        interim = 0
        with trio.move_on_after(RESPONSE_HEAD_TIMEOUT) as timer:
            while True:
                end: int | None
                while (end := _find_response_end(response_buffer)) is None:
                    data = await _receive_upstream(stream)
                    if not data:
                        if response_buffer:
                            raise HttpError(502, "The local service sent an incomplete response.")
                        raise HttpError(
                            502, f"The tunnel client for {request.host} could not reach its local service."
                        )
                    response_buffer += data
                head = bytes(response_buffer[:end])
                del response_buffer[:end]
                response = parse_response_head(head, request_method=request.method)
                if 100 <= response.status < 200 and response.status != 101:
                    interim += 1
                    if interim > MAX_INTERIM_RESPONSES:
                        raise HttpError(502, "The local service sent too many interim responses.")
                    await public.send_all(head)
                    continue
                return response
        assert timer.cancelled_caught
        raise HttpError(504, "The local service did not answer in time.")


def _find_response_end(buffer: bytearray) -> int | None:
    try:
        return find_head_end(buffer)
    except HttpError as exc:
        raise HttpError(502, f"The local service sent an invalid response: {exc.message}") from None


async def _receive_upstream(stream: SeamStream) -> bytes:
    """Bytes from the tunnel stream; a broken tunnel reads as EOF."""
    try:
        return await stream.receive_some(CHUNK)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return b""


class _Upload:
    """Moves one request body from the public connection into the tunnel stream."""

    def __init__(
        self, public: trio.abc.Stream, stream: SeamStream, reader: BodyReader, buffer: bytearray
    ) -> None:
        self.public = public
        self.stream = stream
        self.reader = reader
        self.buffer = buffer  # bytes read ahead from the public side; holds the leftover afterwards
        self.error: HttpError | None = None
        self.finished = False
        self.response_started = False  # once set, errors can no longer become an error page
        self.sent = 0

    async def run(self, send_eof: bool, response_scope: trio.CancelScope) -> None:
        try:
            await self._copy()
        except HttpError as exc:
            self.error = exc
            response_scope.cancel()
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.error = HttpError(502, "The tunnel stream broke while sending the request.")
            return
        if send_eof:
            await send_eof_if_possible(self.stream)
        self.finished = True

    async def _copy(self) -> None:
        data = bytes(self.buffer)
        self.buffer.clear()
        while True:
            if data or self.reader.done:
                body, rest = self.reader.feed(data) if data else (b"", b"")
                if body:
                    await self.stream.send_all(body)
                    self.sent += len(body)
                if self.reader.done:
                    self.buffer += rest
                    return
            data = await self.public.receive_some(CHUNK)
            if not data:
                self.reader.eof()
                return
