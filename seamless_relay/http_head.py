"""Strict, sans-IO HTTP/1.1 head parsing and body framing for the relay's HTTP ingress.

Theory of operation: the relay buffers bytes from a public connection and calls
:func:`find_head_end` until a head is complete, then :func:`parse_request_head`.
Parsing is strict on purpose. The relay sits in front of servers we do not
control, and anything two HTTP parsers could read differently (bare CR or LF,
obs-fold, a malformed or conflicting Content-Length, Transfer-Encoding beside
Content-Length) is a request-smuggling or routing-confusion risk, so it is
refused with an :class:`HttpError` carrying the status to answer with.

:func:`forward_request_head` rebuilds the head for the tunnel (hop-by-hop
fields out, X-Forwarded-* in, always ``Connection: close`` or an upgrade), and
:class:`BodyReader` finds where a body ends without re-encoding it: validated
bytes pass through verbatim and the bytes after the end come back as leftover
for the next keep-alive request. The upstream response takes the same path
through :func:`parse_response_head`, :func:`forward_response_head` and a
second :class:`BodyReader`.

Errors in peer bytes are :class:`HttpError`; misuse by the caller (a bad
``client_ip``, ``upgrade=True`` for a request that asked for none) is
``ValueError``. Nothing here does I/O or keeps time: 408 is the caller's.
"""

from __future__ import annotations

import html
import ipaddress
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal

__all__ = [
    "MAX_CHUNK_LINE",
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "BodyFraming",
    "BodyReader",
    "HttpError",
    "Request",
    "Response",
    "error_response",
    "find_head_end",
    "forward_request_head",
    "forward_response_head",
    "parse_request_head",
    "parse_response_head",
]

MAX_HEAD_BYTES = 32 * 1024  # bytes of head, leading empty lines included; also the trailer budget
MAX_HEADERS = 100  # field lines in one head or trailer section
MAX_CHUNK_LINE = 1024  # bytes of chunk-size line with its extensions, CRLF excluded
MAX_CONTENT_LENGTH_DIGITS = 18  # keeps every accepted length below 2**63
MAX_CHUNK_SIZE_DIGITS = 16  # hex digits, so a chunk size fits in 64 bits

BAD_UPSTREAM = 502  # status for anything wrong in the upstream's response head

FramingKind = Literal["none", "length", "chunked", "until-close"]
TargetForm = Literal["origin", "absolute", "asterisk"]

# RFC 9110 5.6.2: tchar. Every pattern below names its ranges explicitly so that
# str patterns never match non-ASCII digits or letters (int() and \d would).
_TCHAR = "!#$%&'*+\\-.^_`|~0-9A-Za-z"
_TOKEN_B = re.compile(b"[" + _TCHAR.encode() + b"]+")
_TOKEN = re.compile("[" + _TCHAR + "]+")
_BAD_VALUE_B = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # RFC 9110 5.5: CTLs except HTAB
_BAD_TARGET_B = re.compile(rb"[^\x21\x22\x24-\x7e]")  # controls, SP, '#', non-ASCII
_VERSION_B = re.compile(rb"HTTP/[0-9]\.[0-9]")  # RFC 9112 2.3, case-sensitive
_STATUS_LINE_B = re.compile(rb"(HTTP/[0-9]\.[0-9]) ([1-5][0-9][0-9])(?: (.*))?", re.DOTALL)
_ABSOLUTE = re.compile("[Hh][Tt][Tt][Pp][Ss]?://([^/?]*)(.*)", re.DOTALL)
_REG_NAME = re.compile("(?:[A-Za-z0-9\\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")  # RFC 3986 3.2.2
_IPV6_CHARS = re.compile("[0-9A-Fa-f:.]+")
_PORT = re.compile("[0-9]{1,5}")
_CONTENT_LENGTH = re.compile(f"[0-9]{{1,{MAX_CONTENT_LENGTH_DIGITS}}}")
_CLIENT_IP = re.compile("[0-9A-Fa-f:.]+")
_LEADING_EMPTY_LINES = re.compile(rb"(?:\r\n)*")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_BARE_CR = re.compile(rb"\r(?=[^\n])")  # a CR that is the last byte so far may still get its LF

# RFC 9112 7.1.1: chunk-size [ chunk-ext ], chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ).
_QUOTED_STRING = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_EXT = (
    rb"(?:[ \t]*;[ \t]*"
    + _TOKEN_B.pattern
    + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN_B.pattern
    + b"|"
    + _QUOTED_STRING
    + rb"))?)*"
)
_CHUNK_LINE_B = re.compile(b"([0-9A-Fa-f]{1,%d})" % MAX_CHUNK_SIZE_DIGITS + _CHUNK_EXT)

# RFC 9110 7.6.1: fields that apply to one connection only, never forwarded.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"})
# Fields a Connection header may not strip: framing (the body is forwarded verbatim, so
# dropping these would desynchronise the upstream) and the routing and forwarding facts.
_FORWARDING = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})
_PROTECTED = frozenset({"host", "content-length", "transfer-encoding"}) | _FORWARDING
# RFC 9110 6.5.1: framing, routing and forwarding fields are not allowed as trailers; an
# upstream that merges trailers into headers must not learn them from a client.
_FORBIDDEN_TRAILERS = _HOP_BY_HOP | _PROTECTED | {"forwarded"}


class HttpError(Exception):
    """Peer bytes the relay refuses; ``status`` is the HTTP status to answer with.

    ``message`` never echoes peer bytes, so it is safe to put in an error page.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class BodyFraming:
    """How the end of a body is found (RFC 9112 6.3); ``length`` only matters for ``"length"``."""

    kind: FramingKind
    length: int = 0


NO_BODY = BodyFraming("none")
CHUNKED = BodyFraming("chunked")
UNTIL_CLOSE = BodyFraming("until-close")

Fields = tuple[tuple[str, str], ...]


def _values(headers: Fields, name: str) -> list[str]:
    """Every value of the field ``name`` (lowercase), in order."""
    return [value for key, value in headers if key.lower() == name]


@dataclass(frozen=True, slots=True)
class Request:
    """A validated request head. ``host`` is what the relay routes by."""

    method: str
    target: str
    version: str
    headers: Fields
    host: str | None
    framing: BodyFraming
    keep_alive: bool
    upgrade: str | None
    target_form: TargetForm = "origin"

    def header(self, name: str) -> str | None:
        """First value of a field, case-insensitively; None when absent."""
        found = _values(self.headers, name.lower())
        return found[0] if found else None


@dataclass(frozen=True, slots=True)
class Response:
    """A validated upstream response head."""

    status: int
    reason: str
    version: str
    headers: Fields
    framing: BodyFraming
    keep_alive: bool

    def header(self, name: str) -> str | None:
        """First value of a field, case-insensitively; None when absent."""
        found = _values(self.headers, name.lower())
        return found[0] if found else None


# --- finding and splitting a head ---------------------------------------------------------------


def find_head_end(buffer: bytes | bytearray, max_head_bytes: int = MAX_HEAD_BYTES) -> int | None:
    """Index just past the CRLFCRLF ending the head, or None if it is not complete yet.

    Leading empty lines are skipped (RFC 9112 2.2) but count towards ``max_head_bytes``.
    Raises HttpError(431) when no end fits in ``max_head_bytes``, and HttpError(400) early
    for a bare CR or LF, which would otherwise leave a lenient client waiting for a timeout.
    """
    leading = _LEADING_EMPTY_LINES.match(buffer, 0, max_head_bytes)
    start = leading.end() if leading else 0
    end = buffer.find(b"\r\n\r\n", start, max_head_bytes)
    if end != -1:
        return end + 4
    if _BARE_LF.search(buffer, start, max_head_bytes) or _BARE_CR.search(buffer, start, max_head_bytes):
        raise HttpError(400, "Line endings must be CRLF")
    if len(buffer) >= max_head_bytes:
        raise HttpError(431, "Header section too large")
    return None


def _split_head(data: bytes, status: int) -> list[bytes]:
    """The head's lines without their CRLFs; refuses bare CR/LF and empty lines inside."""
    if not data.endswith(b"\r\n\r\n"):
        raise HttpError(status, "Incomplete message head")
    lines = data[:-4].split(b"\r\n")
    for line in lines:
        if b"\r" in line or b"\n" in line:
            raise HttpError(status, "Line endings must be CRLF")
        if not line:
            raise HttpError(status, "Empty line inside the message head")
    return lines


def _parse_field_line(line: bytes, status: int) -> tuple[str, str]:
    """One ``name: value`` line (RFC 9112 5), value with its OWS stripped."""
    if line[:1] in (b" ", b"\t"):
        raise HttpError(status, "Obsolete line folding is not allowed")
    name, colon, value = line.partition(b":")
    if not colon:
        raise HttpError(status, "Header line without a colon")
    if not _TOKEN_B.fullmatch(name):
        if name[-1:] in (b" ", b"\t"):
            raise HttpError(status, "Whitespace between a header name and its colon")
        raise HttpError(status, "Invalid header name")
    value = value.strip(b" \t")
    if _BAD_VALUE_B.search(value):
        raise HttpError(status, "Invalid character in a header value")
    return name.decode("ascii"), value.decode("latin-1")


def _parse_fields(lines: list[bytes], *, max_fields: int, status: int, too_many_status: int) -> Fields:
    if len(lines) > max_fields:
        raise HttpError(too_many_status, "Too many header fields")
    return tuple(_parse_field_line(line, status) for line in lines)


# --- field semantics ----------------------------------------------------------------------------


def _list_items(values: list[str]) -> list[str]:
    """RFC 9110 5.6.1 list elements across all field lines, OWS stripped, empties kept."""
    return [item.strip(" \t") for value in values for item in value.split(",")]


def _connection_tokens(headers: Fields, status: int) -> frozenset[str]:
    tokens = set()
    for item in _list_items(_values(headers, "connection")):
        if not item:
            continue  # RFC 9110 5.6.1: empty list elements are ignored
        if not _TOKEN.fullmatch(item):
            raise HttpError(status, "Invalid Connection header")
        tokens.add(item.lower())
    return frozenset(tokens)


def _content_length(values: list[str], status: int) -> int:
    """RFC 9110 8.6: digits only; repeats are allowed only when every value is the same."""
    items = _list_items(values)
    for item in items:
        if not _CONTENT_LENGTH.fullmatch(item):
            raise HttpError(status, "Invalid Content-Length")
    if len(set(items)) != 1:
        raise HttpError(status, "Conflicting Content-Length values")
    return int(items[0])


def _transfer_codings(values: list[str], status: int) -> list[str]:
    codings = [item.lower() for item in _list_items(values)]
    if not all(_TOKEN.fullmatch(coding) for coding in codings):
        raise HttpError(status, "Invalid Transfer-Encoding")
    return codings


def _canonical_host(authority: str, status: int, *, require_port: bool = False) -> str:
    """``uri-host [":" port]`` to a lowercase host without port or trailing dot (RFC 9110 4.2.3)."""
    if authority.startswith("["):
        close = authority.find("]")
        literal, rest = authority[1:close], authority[close + 1 :]
        if close == -1 or not _IPV6_CHARS.fullmatch(literal):
            raise HttpError(status, "Invalid host")
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            raise HttpError(status, "Invalid host") from None
        host = f"[{address.compressed}]"
    else:
        name, colon, port = authority.partition(":")
        rest = colon + port
        if not _REG_NAME.fullmatch(name):
            raise HttpError(status, "Invalid host")
        host = name.lower().removesuffix(".")
        if not host:
            raise HttpError(status, "Invalid host")
    if rest:
        port = rest[1:]
        if rest[0] != ":" or not _PORT.fullmatch(port) or int(port) > 65535:
            raise HttpError(status, "Invalid port")
    elif require_port:
        raise HttpError(status, "Missing port")
    return host


def _split_absolute(target: str) -> tuple[str, str]:
    """An absolute-form target (RFC 9112 3.2.2) as (authority, origin-form target)."""
    match = _ABSOLUTE.fullmatch(target)
    if match is None:
        raise HttpError(400, "Invalid request target")
    authority, rest = match.group(1), match.group(2)
    if "@" in authority:
        raise HttpError(400, "User information is not allowed in the request target")
    if not authority:
        raise HttpError(400, "Empty host in the request target")
    return authority, rest if rest.startswith("/") else "/" + rest


# --- requests -----------------------------------------------------------------------------------


def _parse_request_line(line: bytes) -> tuple[str, str, str, TargetForm]:
    """``method SP request-target SP HTTP-version`` (RFC 9112 3), nothing looser."""
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "Malformed request line")
    raw_method, raw_target, raw_version = parts
    if not _VERSION_B.fullmatch(raw_version):
        raise HttpError(400, "Malformed HTTP version")
    if raw_version not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise HttpError(505, "HTTP version not supported")
    if not _TOKEN_B.fullmatch(raw_method):
        raise HttpError(400, "Invalid method")
    if not raw_target or _BAD_TARGET_B.search(raw_target):
        raise HttpError(400, "Invalid request target")
    method, target = raw_method.decode("ascii"), raw_target.decode("ascii")
    if method == "CONNECT":
        _canonical_host(target, 400, require_port=True)  # authority-form, RFC 9112 3.2.3
        raise HttpError(501, "CONNECT is not supported")
    form: TargetForm
    if target == "*":
        if method != "OPTIONS":
            raise HttpError(400, "Asterisk-form is only allowed for OPTIONS")
        form = "asterisk"
    elif target.startswith("/"):
        form = "origin"
    else:
        _split_absolute(target)
        form = "absolute"
    return method, target, raw_version.decode("ascii"), form


def _request_framing(headers: Fields, version: str) -> BodyFraming:
    """RFC 9112 6.3 for requests, refusing every ambiguity instead of resolving it."""
    te = _values(headers, "transfer-encoding")
    cl = _values(headers, "content-length")
    if te:
        if version == "HTTP/1.0":
            raise HttpError(400, "Transfer-Encoding is not allowed in HTTP/1.0")
        if cl:
            raise HttpError(400, "Both Content-Length and Transfer-Encoding")
        codings = _transfer_codings(te, 400)
        if codings == ["chunked"]:
            return CHUNKED
        if codings[-1] == "chunked" and codings.count("chunked") == 1:
            raise HttpError(501, "Transfer coding not supported")
        raise HttpError(400, "Chunked must be the final transfer coding, applied once")
    if cl:
        return BodyFraming("length", _content_length(cl, 400))
    return NO_BODY


def parse_request_head(head: bytes, *, max_headers: int = MAX_HEADERS) -> Request:
    """Validate a request head as returned by :func:`find_head_end` (CRLFCRLF included).

    Raises HttpError 400, 431, 501 (CONNECT, unsupported transfer coding) or 505.
    """
    data = bytes(head)
    leading = _LEADING_EMPTY_LINES.match(data)
    lines = _split_head(data[leading.end() if leading else 0 :], 400)
    method, target, version, form = _parse_request_line(lines[0])
    headers = _parse_fields(lines[1:], max_fields=max_headers, status=400, too_many_status=431)

    hosts = _values(headers, "host")
    if len(hosts) > 1:
        raise HttpError(400, "More than one Host header")
    if version == "HTTP/1.1" and not hosts:
        raise HttpError(400, "Missing Host header")
    host = _canonical_host(hosts[0], 400) if hosts else None  # validated even when overridden
    if form == "absolute":
        host = _canonical_host(_split_absolute(target)[0], 400)  # RFC 9112 3.2.2: the target wins

    framing = _request_framing(headers, version)
    tokens = _connection_tokens(headers, 400)
    if version == "HTTP/1.1":
        keep_alive = "close" not in tokens
    else:
        keep_alive = "keep-alive" in tokens and "close" not in tokens
    upgrade = None
    offered = _values(headers, "upgrade")
    if version == "HTTP/1.1" and "upgrade" in tokens and any(offered):  # RFC 9110 7.8: not in 1.0
        upgrade = ", ".join(value for value in offered if value).lower()
    return Request(method, target, version, headers, host, framing, keep_alive, upgrade, form)


def _checked_client_ip(client_ip: str) -> str:
    if not _CLIENT_IP.fullmatch(client_ip):
        raise ValueError(f"not an IP address: {client_ip!r}")
    return str(ipaddress.ip_address(client_ip))


def forward_request_head(request: Request, *, client_ip: str, scheme: str, upgrade: bool) -> bytes:
    """The head to send upstream.

    Hop-by-hop fields and those the Connection header names are dropped, except framing,
    Host and X-Forwarded-* (so a client cannot strip them). Framing is written in one
    canonical line (``Content-Length: N`` or ``Transfer-Encoding: chunked``), leaving the
    upstream no room to read it differently from us.
    An absolute-form target becomes origin-form with a Host taken from it (RFC 9110 7.2),
    so the upstream sees the host the relay routed by. Ends with ``Connection: close``, or
    ``Connection: upgrade`` and the request's Upgrade when ``upgrade`` is true.
    """
    if scheme not in ("http", "https"):
        raise ValueError(f"scheme must be http or https, not {scheme!r}")
    ip = _checked_client_ip(client_ip)
    if upgrade and request.upgrade is None:
        raise ValueError("upgrade=True for a request that does not ask to upgrade")

    drop = _HOP_BY_HOP | (_connection_tokens(request.headers, 400) - _PROTECTED)
    drop |= {"x-forwarded-proto", "x-forwarded-host"}
    if request.target_form == "absolute":
        authority, target = _split_absolute(request.target)
        lines = [f"{request.method} {target} {request.version}", f"Host: {authority}"]
        drop |= {"host"}
    else:
        lines = [f"{request.method} {request.target} {request.version}"]

    forwarded_for: list[str] = []
    wrote_framing = False
    for name, value in request.headers:
        key = name.lower()
        if key == "x-forwarded-for":
            forwarded_for.extend(item for item in _list_items([value]) if item)
        elif key in ("content-length", "transfer-encoding"):
            if not wrote_framing:
                if request.framing.kind == "chunked":
                    lines.append("Transfer-Encoding: chunked")
                else:
                    lines.append(f"Content-Length: {request.framing.length}")
                wrote_framing = True
        elif key not in drop:
            lines.append(f"{name}: {value}")
    forwarded_for.append(ip)
    lines.append(f"X-Forwarded-For: {', '.join(forwarded_for)}")
    lines.append(f"X-Forwarded-Proto: {scheme}")
    if request.host is not None:
        lines.append(f"X-Forwarded-Host: {request.host}")
    if upgrade:
        lines.append("Connection: upgrade")
        lines.append("Upgrade: " + ", ".join(v for v in _values(request.headers, "upgrade") if v))
    else:
        lines.append("Connection: close")
    return "\r\n".join([*lines, "", ""]).encode("latin-1")


# --- responses ----------------------------------------------------------------------------------


def _response_framing(status: int, request_method: str, version: str, headers: Fields) -> BodyFraming:
    """RFC 9112 6.3 for responses; malformed framing fields are refused even without a body."""
    te = _values(headers, "transfer-encoding")
    cl = _values(headers, "content-length")
    if te and cl:
        raise HttpError(BAD_UPSTREAM, "Upstream sent both Content-Length and Transfer-Encoding")
    if te and version == "HTTP/1.0":
        raise HttpError(BAD_UPSTREAM, "Upstream sent Transfer-Encoding in HTTP/1.0")
    codings = _transfer_codings(te, BAD_UPSTREAM) if te else None
    length = _content_length(cl, BAD_UPSTREAM) if cl else None
    if codings is not None and codings.count("chunked") > 1:
        raise HttpError(BAD_UPSTREAM, "Upstream applied chunked more than once")
    if request_method == "HEAD" or status < 200 or status in (204, 304):
        return NO_BODY
    if request_method == "CONNECT" and status < 300:
        return UNTIL_CLOSE  # the connection has become a tunnel
    if codings is not None:
        return CHUNKED if codings[-1] == "chunked" else UNTIL_CLOSE
    if length is not None:
        return BodyFraming("length", length)
    return UNTIL_CLOSE


def parse_response_head(head: bytes, *, request_method: str, max_headers: int = MAX_HEADERS) -> Response:
    """Validate an upstream response head; every problem is HttpError(502).

    A 1xx other than 101 is interim: its framing is "none" and another head follows.
    """
    lines = _split_head(bytes(head), BAD_UPSTREAM)
    match = _STATUS_LINE_B.fullmatch(lines[0])
    if match is None or match.group(1) not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise HttpError(BAD_UPSTREAM, "Upstream sent a malformed status line")
    reason = match.group(3) or b""
    if _BAD_VALUE_B.search(reason):
        raise HttpError(BAD_UPSTREAM, "Upstream sent a malformed status line")
    version, status = match.group(1).decode("ascii"), int(match.group(2))
    headers = _parse_fields(
        lines[1:], max_fields=max_headers, status=BAD_UPSTREAM, too_many_status=BAD_UPSTREAM
    )
    if status == 101 and not any(_values(headers, "upgrade")):
        raise HttpError(BAD_UPSTREAM, "Upstream sent 101 without Upgrade")
    framing = _response_framing(status, request_method, version, headers)
    tokens = _connection_tokens(headers, BAD_UPSTREAM)
    if version == "HTTP/1.1":
        keep_alive = "close" not in tokens
    else:
        keep_alive = "keep-alive" in tokens and "close" not in tokens
    keep_alive = keep_alive and status != 101 and framing.kind != "until-close"
    return Response(status, reason.decode("latin-1"), version, headers, framing, keep_alive)


def forward_response_head(
    response: Response, *, keep_alive: bool, request_version: str = "HTTP/1.1"
) -> bytes:
    """The head to send to the public client, with our own HTTP/1.1 version (RFC 9110 6.2).

    Hop-by-hop fields go; ``Connection: close`` is added when ``keep_alive`` is false. A
    101 keeps ``Connection: upgrade`` and Upgrade; other 1xx get no Connection field.
    ``request_version="HTTP/1.0"`` adds ``Connection: keep-alive``, which a 1.0 client needs.
    """
    if request_version not in ("HTTP/1.0", "HTTP/1.1"):
        raise ValueError(f"unknown request version {request_version!r}")
    interim = response.status < 200
    if keep_alive and not interim and response.framing.kind == "until-close":
        raise ValueError("a body delimited by close cannot be followed by another response")
    drop = _HOP_BY_HOP | (_connection_tokens(response.headers, BAD_UPSTREAM) - _PROTECTED)
    lines = [f"HTTP/1.1 {response.status} {response.reason}"]
    wrote_length = False
    for name, value in response.headers:
        key = name.lower()
        if key == "content-length":
            if not wrote_length:
                length = _content_length(_values(response.headers, key), BAD_UPSTREAM)
                lines.append(f"Content-Length: {length}")
                wrote_length = True
        elif key not in drop:
            lines.append(f"{name}: {value}")
    if response.status == 101:
        lines.append("Connection: upgrade")
        lines.append("Upgrade: " + ", ".join(v for v in _values(response.headers, "upgrade") if v))
    elif not interim:
        if not keep_alive:
            lines.append("Connection: close")
        elif request_version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
    return "\r\n".join([*lines, "", ""]).encode("latin-1")


def error_response(status: int, message: str) -> bytes:
    """A complete small HTML error response that closes the connection."""
    if not 400 <= status <= 599:
        raise ValueError(f"not an error status: {status}")
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    title = html.escape(f"{status} {reason}")
    body = (
        f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>\n"
        f"<body><h1>{title}</h1><p>{html.escape(message)}</p></body></html>\n"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


# --- bodies -------------------------------------------------------------------------------------

_SIZE, _DATA, _DATA_CRLF, _TRAILER, _UNTIL_CLOSE, _DONE = range(6)


class BodyReader:
    """Sans-IO: finds where a body ends, passing its bytes through unchanged.

    Chunked bodies are forwarded verbatim (chunk-size lines and trailers too), each
    line only once it has been validated. After an error the reader is dead: every
    later ``feed`` or ``eof`` raises the same HttpError again.
    """

    def __init__(
        self,
        framing: BodyFraming,
        *,
        max_body_size: int | None = None,
        max_trailer_bytes: int = MAX_HEAD_BYTES,
        max_trailers: int = MAX_HEADERS,
    ) -> None:
        """Raises HttpError(413) at once when a Content-Length exceeds ``max_body_size``."""
        self._max_body_size = max_body_size
        self._max_trailer_bytes = max_trailer_bytes
        self._max_trailers = max_trailers
        self._decoded = 0  # body bytes so far, without chunk framing
        self._remaining = 0  # bytes left of the length body or the current chunk
        self._crlf_seen = 0  # bytes of the CRLF after chunk data seen so far
        self._line = bytearray()  # an incomplete chunk-size or trailer line
        self._trailer_bytes = 0
        self._trailer_count = 0
        self._error: HttpError | None = None
        if framing.kind == "length":
            self._count(framing.length)
            self._remaining = framing.length
            self._state = _DATA if framing.length else _DONE
        elif framing.kind == "chunked":
            self._state = _SIZE
        elif framing.kind == "until-close":
            self._state = _UNTIL_CLOSE
        else:
            self._state = _DONE
        self._chunked = framing.kind == "chunked"

    @property
    def done(self) -> bool:
        """The whole body has been seen; anything fed now is leftover."""
        return self._state == _DONE

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """(body bytes to forward, leftover bytes after the body's end)."""
        if self._error is not None:
            raise HttpError(self._error.status, self._error.message)
        try:
            return self._feed(bytes(data))
        except HttpError as exc:
            self._error = exc
            raise

    def eof(self) -> None:
        """The peer closed: ends an until-close body, and is an error inside any other body."""
        if self._error is not None:
            raise HttpError(self._error.status, self._error.message)
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
        elif self._state != _DONE:
            self._error = HttpError(400, "Connection closed before the end of the body")
            raise self._error

    def _count(self, size: int) -> None:
        self._decoded += size
        if self._max_body_size is not None and self._decoded > self._max_body_size:
            raise HttpError(413, "Body too large")

    def _feed(self, data: bytes) -> tuple[bytes, bytes]:
        if self._state == _DONE:
            return b"", data
        if self._state == _UNTIL_CLOSE:
            self._count(len(data))
            return data, b""
        if not self._chunked:
            taken = min(self._remaining, len(data))
            self._remaining -= taken
            if not self._remaining:
                self._state = _DONE
            return data[:taken], data[taken:]
        out: list[bytes] = []
        pos = 0
        while pos < len(data) and self._state != _DONE:
            if self._state == _DATA:
                taken = min(self._remaining, len(data) - pos)
                out.append(data[pos : pos + taken])
                pos += taken
                self._remaining -= taken
                if not self._remaining:
                    self._state, self._crlf_seen = _DATA_CRLF, 0
            elif self._state == _DATA_CRLF:
                if data[pos] != b"\r\n"[self._crlf_seen]:
                    raise HttpError(400, "Chunk data not followed by CRLF")
                out.append(data[pos : pos + 1])
                pos += 1
                self._crlf_seen += 1
                if self._crlf_seen == 2:
                    self._state = _SIZE
            else:
                pos = self._take_line(data, pos, out)
        return b"".join(out), data[pos:]

    def _take_line(self, data: bytes, pos: int, out: list[bytes]) -> int:
        """Accumulate a chunk-size or trailer line; once complete, validate and forward it."""
        limit = MAX_CHUNK_LINE + 2 if self._state == _SIZE else self._max_trailer_bytes - self._trailer_bytes
        newline = data.find(b"\n", pos)
        end = len(data) if newline == -1 else newline + 1
        self._line += data[pos:end]
        if len(self._line) > limit:
            if self._state == _SIZE:
                raise HttpError(400, "Chunk size line too long")
            raise HttpError(431, "Trailer section too large")
        if newline == -1:
            return end
        line = bytes(self._line)
        self._line.clear()
        if line[-2:-1] != b"\r" or b"\r" in line[:-2]:
            raise HttpError(400, "Line endings must be CRLF")
        out.append(line)
        if self._state == _SIZE:
            match = _CHUNK_LINE_B.fullmatch(line, 0, len(line) - 2)
            if match is None:
                raise HttpError(400, "Invalid chunk size line")
            size = int(match.group(1), 16)
            self._count(size)
            if size:
                self._state, self._remaining = _DATA, size
            else:
                self._state = _TRAILER
        elif line == b"\r\n":
            self._state = _DONE
        else:
            self._trailer_bytes += len(line)
            self._trailer_count += 1
            if self._trailer_count > self._max_trailers:
                raise HttpError(431, "Too many trailer fields")
            name, _ = _parse_field_line(line[:-2], 400)
            if name.lower() in _FORBIDDEN_TRAILERS:
                raise HttpError(400, "Field not allowed in trailers")
        return end
