"""The relay's strict HTTP/1.1 head parser and body framer: every strictness rule, round trips,
and the contract that peer bytes only ever raise HttpError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seamless_relay.http_head import (
    MAX_CHUNK_LINE,
    MAX_HEAD_BYTES,
    BodyFraming,
    BodyReader,
    HttpError,
    Request,
    error_response,
    find_head_end,
    forward_request_head,
    forward_response_head,
    parse_request_head,
    parse_response_head,
)

FAST = settings(max_examples=200, deadline=None)  # raw bytes: cheap to draw
COMPOSITE = settings(max_examples=100, deadline=None)  # structured inputs: costlier to draw
CHUNKED = BodyFraming("chunked")


def head(*fields: str, line: str = "GET / HTTP/1.1", host: str | None = "example.com") -> bytes:
    """A request head from text parts; latin-1 so tests can carry any byte."""
    lines = [line, *([f"Host: {host}"] if host is not None else []), *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def status_of(data: bytes) -> int:
    with pytest.raises(HttpError) as info:
        parse_request_head(data)
    return info.value.status


def response_status_of(data: bytes, method: str = "GET") -> int:
    with pytest.raises(HttpError) as info:
        parse_response_head(data, request_method=method)
    return info.value.status


def forwarded_lines(request: Request, **kwargs: object) -> list[str]:
    options: dict[str, object] = {"client_ip": "203.0.113.7", "scheme": "https", "upgrade": False}
    options.update(kwargs)
    raw = forward_request_head(request, **options)  # type: ignore[arg-type]
    assert raw.endswith(b"\r\n\r\n")
    return raw[:-4].decode("latin-1").split("\r\n")


# --- HttpError ----------------------------------------------------------------------------------


def test_http_error_carries_status_and_message() -> None:
    exc = HttpError(431, "Too big")
    assert (exc.status, exc.message, str(exc)) == (431, "Too big", "Too big")


# --- find_head_end ------------------------------------------------------------------------------


def test_find_head_end_waits_for_the_blank_line() -> None:
    assert find_head_end(b"") is None
    assert find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n") is None
    assert find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r") is None  # a lone CR at the end may get its LF


def test_find_head_end_points_just_past_the_head() -> None:
    data = head() + b"body"
    assert find_head_end(data) == len(data) - 4
    assert find_head_end(bytearray(data)) == len(data) - 4


def test_find_head_end_tolerates_and_counts_leading_empty_lines() -> None:
    data = b"\r\n\r\n" + head()
    assert find_head_end(data) == len(data)
    assert find_head_end(data, max_head_bytes=len(data)) == len(data)
    with pytest.raises(HttpError) as info:
        find_head_end(data, max_head_bytes=len(data) - 1)
    assert info.value.status == 431
    assert parse_request_head(data).host == "example.com"


def test_find_head_end_limit() -> None:
    data = head("X: " + "a" * 100)
    assert find_head_end(data, max_head_bytes=len(data)) == len(data)
    with pytest.raises(HttpError) as info:
        find_head_end(data, max_head_bytes=len(data) - 1)
    assert info.value.status == 431
    with pytest.raises(HttpError) as info:
        find_head_end(b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES)
    assert info.value.status == 431
    with pytest.raises(HttpError) as info:
        find_head_end(b"\r\n" * (MAX_HEAD_BYTES // 2))
    assert info.value.status == 431


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\n\n", b"GET / HTTP/1.1\r\nA: b\n", b"GET / HTTP/1.1\rA"])
def test_find_head_end_fails_fast_on_bare_cr_or_lf(data: bytes) -> None:
    with pytest.raises(HttpError) as info:
        find_head_end(data)
    assert info.value.status == 400


# --- request line -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "GET  / HTTP/1.1",
        "GET / HTTP/1.1 ",
        " GET / HTTP/1.1",
        "GET\t/ HTTP/1.1",
        "GET /\tHTTP/1.1",
        "GET /",
        "GET",
        "GET / http/1.1",
        "GET / HTTP/1.1x",
        "GET / HTTP/1",
        "GET / HTTP/11.1",
        "GE(T / HTTP/1.1",
        "GÉT / HTTP/1.1",
        "GET /a\x01b HTTP/1.1",
        "GET /a\x7fb HTTP/1.1",
        "GET /caf\xe9 HTTP/1.1",
        "GET /a#frag HTTP/1.1",
        "GET * HTTP/1.1",
        "GET example.com:80 HTTP/1.1",
        "GET example.com/ HTTP/1.1",
        "GET ftp://example.com/ HTTP/1.1",
        "GET http:/example.com/ HTTP/1.1",
        "GET http:///path HTTP/1.1",
        "GET http://user@example.com/ HTTP/1.1",
        "GET http://exa mple.com/ HTTP/1.1",
        "GET http://example.com:99999/ HTTP/1.1",
        "CONNECT example.com HTTP/1.1",
        "CONNECT /path HTTP/1.1",
        "CONNECT example.com:x HTTP/1.1",
    ],
)
def test_bad_request_line_is_400(line: str) -> None:
    assert status_of(head(line=line)) == 400


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0"])
def test_other_http_versions_are_505(version: str) -> None:
    assert status_of(head(line=f"GET / {version}")) == 505


def test_http2_preface_is_505() -> None:
    assert status_of(b"PRI * HTTP/2.0\r\n\r\n") == 505


def test_connect_is_501() -> None:
    with pytest.raises(HttpError) as info:
        parse_request_head(head(line="CONNECT example.com:443 HTTP/1.1"))
    assert (info.value.status, info.value.message) == (501, "CONNECT is not supported")


def test_origin_and_asterisk_forms() -> None:
    request = parse_request_head(head(line="POST /a/b?c=d&e=%20 HTTP/1.1"))
    assert (request.method, request.target, request.version) == ("POST", "/a/b?c=d&e=%20", "HTTP/1.1")
    assert request.target_form == "origin"
    request = parse_request_head(head(line="OPTIONS * HTTP/1.1"))
    assert (request.target, request.target_form) == ("*", "asterisk")


def test_methods_are_case_sensitive_tokens() -> None:
    assert parse_request_head(head(line="get / HTTP/1.1")).method == "get"
    assert parse_request_head(head(line="M-SEARCH / HTTP/1.1")).method == "M-SEARCH"


def test_absolute_form_authority_wins_over_host() -> None:
    request = parse_request_head(head(line="GET HTTP://Tunnel.Relay.Example:8080?x HTTP/1.1", host="other"))
    assert request.host == "tunnel.relay.example"
    assert request.target_form == "absolute"
    assert request.header("host") == "other"


def test_absolute_form_still_needs_a_valid_host_header() -> None:
    assert status_of(head(line="GET http://a.example/ HTTP/1.1", host=None)) == 400
    assert status_of(head(line="GET http://a.example/ HTTP/1.1", host="bad host")) == 400


# --- header lines -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        "X-A : b",
        "X-A\t: b",
        "X-A",
        ": b",
        "X A: b",
        "X-Ä: b",
        "X-\x00: b",
        "X-A: b\x00c",
        "X-A: b\x01",
        "X-A: b\x1b[31m",
        "X-A: b\x7f",
        "X-A: b\x0bc",
        "X-A: b\x0cc",
    ],
)
def test_bad_header_line_is_400(field: str) -> None:
    assert status_of(head(field)) == 400


def test_obs_fold_is_400() -> None:
    assert status_of(head("X-A: b", " continued")) == 400
    assert status_of(head("X-A: b", "\tcontinued")) == 400


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: b\nc\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: b\rc\r\n\r\n",
        b"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n",
    ],
)
def test_bare_cr_or_lf_is_400(data: bytes) -> None:
    assert status_of(data) == 400


def test_head_must_be_exactly_one_complete_head() -> None:
    assert status_of(b"GET / HTTP/1.1\r\nHost: a\r\n") == 400
    assert status_of(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nX: b\r\n\r\n") == 400
    assert status_of(b"") == 400
    assert status_of(b"\r\n\r\n") == 400


def test_values_keep_htab_and_obs_text_and_lose_ows() -> None:
    request = parse_request_head(head("X-A: \t a\tb \xe9\xff \t", "X-Empty:", "x-a: second"))
    assert request.header("X-A") == "a\tb \xe9\xff"
    assert request.header("x-empty") == ""
    assert request.header("X-Missing") is None
    assert ("X-A", "a\tb \xe9\xff") in request.headers  # names keep their case


def test_too_many_headers_is_431() -> None:
    fields = [f"X-{i}: v" for i in range(99)]
    assert len(parse_request_head(head(*fields)).headers) == 100
    assert status_of(head(*fields, "X-Last: v")) == 431
    assert parse_request_head(head(*fields[:9]), max_headers=10).headers
    with pytest.raises(HttpError) as info:
        parse_request_head(head(*fields[:10]), max_headers=10)
    assert info.value.status == 431


# --- Host ---------------------------------------------------------------------------------------


def test_http11_needs_exactly_one_host() -> None:
    assert status_of(head(host=None)) == 400
    assert status_of(head("Host: example.com")) == 400
    assert status_of(head("host: other.example")) == 400


def test_http10_host_is_optional() -> None:
    assert parse_request_head(head(line="GET / HTTP/1.0", host=None)).host is None
    assert parse_request_head(head(line="GET / HTTP/1.0", host="A.example")).host == "a.example"
    assert status_of(head("Host: b", line="GET / HTTP/1.0", host="a")) == 400


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("example.com.:8080", "example.com"),
        ("sub.tunnel.example:443", "sub.tunnel.example"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("[::1]", "[::1]"),
        ("[::1]:8080", "[::1]"),
        ("[0:0:0:0:0:0:0:1]", "[::1]"),
        ("[2001:DB8::A]:1", "[2001:db8::a]"),
        ("[::ffff:1.2.3.4]", "[::ffff:102:304]"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("a_b~c.example:0", "a_b~c.example"),
        ("a%2Eb", "a%2eb"),
    ],
)
def test_host_is_canonical(value: str, canonical: str) -> None:
    assert parse_request_head(head(host=value)).host == canonical


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".",
        "a b",
        "a/b",
        "a?b",
        "a#b",
        "user@a",
        "a:b:c",
        "a:",
        "a:-1",
        "a:+80",
        "a: 80",
        "a:8_0",
        "a:65536",
        "a:123456",
        "a:\u0665".encode().decode("latin-1"),  # ARABIC-INDIC DIGIT FIVE in UTF-8
        "bücher.example",
        "a%2",
        "a%zz",
        "::1",
        "[::1",
        "::1]",
        "[::1]x",
        "[::1]:",
        "[zz::1]",
        "[::1%eth0]",
        "[1.2.3.4]",
        "[v1.x]",
        "[]",
        "a\\b",
        '"a"',
    ],
)
def test_invalid_host_is_400(value: str) -> None:
    assert status_of(head(host=value)) == 400


# --- Content-Length and Transfer-Encoding ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "length"),
    [
        (["Content-Length: 5"], 5),
        (["Content-Length: 0"], 0),
        (["Content-Length: 007"], 7),
        (["Content-Length: 5", "content-length: 5"], 5),
        (["Content-Length: 5, 5"], 5),
        (["Content-Length: 5 ,5", "Content-Length: 5"], 5),
        (["Content-Length: " + "9" * 18], 10**18 - 1),
    ],
)
def test_content_length(fields: list[str], length: int) -> None:
    assert parse_request_head(head(*fields)).framing == BodyFraming("length", length)


@pytest.mark.parametrize(
    "value",
    [
        "+5",
        "-5",
        "1_0",
        "5 0",
        "0x5",
        "5.0",
        "1e3",
        "",
        "5,",
        ",5",
        "5, 6",
        "\u0665",  # ARABIC-INDIC DIGIT FIVE: int() would take it
        "\xb2",  # SUPERSCRIPT TWO in latin-1
        "1" * 19,
    ],
)
def test_bad_content_length_is_400(value: str) -> None:
    assert status_of(head(f"Content-Length: {value}".encode().decode("latin-1"))) == 400


def test_conflicting_content_length_headers_are_400() -> None:
    assert status_of(head("Content-Length: 5", "Content-Length: 6")) == 400
    assert status_of(head("Content-Length: 5", "Content-Length: 05")) == 400


def test_content_length_with_transfer_encoding_is_400() -> None:
    assert status_of(head("Content-Length: 5", "Transfer-Encoding: chunked")) == 400
    assert status_of(head("Transfer-Encoding: chunked", "Content-Length: 0")) == 400


@pytest.mark.parametrize("value", ["chunked", "Chunked", "CHUNKED", " chunked "])
def test_chunked_request(value: str) -> None:
    assert parse_request_head(head(f"Transfer-Encoding: {value}")).framing == CHUNKED


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        (["Transfer-Encoding: gzip, chunked"], 501),
        (["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"], 501),
        (["Transfer-Encoding: gzip"], 400),
        (["Transfer-Encoding: identity"], 400),
        (["Transfer-Encoding: chunked, chunked"], 400),
        (["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"], 400),
        (["Transfer-Encoding: chunked, identity"], 400),
        (["Transfer-Encoding: chunked,"], 400),
        (["Transfer-Encoding:"], 400),
        (["Transfer-Encoding: chunked;q=1"], 400),
        (["Transfer-Encoding: \xe7hunked"], 400),
        (["Transfer-Encoding: chunked\x0b"], 400),
    ],
)
def test_other_transfer_encodings_are_refused(fields: list[str], status: int) -> None:
    assert status_of(head(*fields)) == status


def test_transfer_encoding_in_http10_is_400() -> None:
    assert status_of(head("Transfer-Encoding: chunked", line="POST / HTTP/1.0")) == 400


def test_request_without_framing_has_no_body() -> None:
    assert parse_request_head(head(line="POST / HTTP/1.1")).framing == BodyFraming("none")


# --- keep-alive and upgrade ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("HTTP/1.1", None, True),
        ("HTTP/1.1", "close", False),
        ("HTTP/1.1", "Keep-Alive, CLOSE", False),
        ("HTTP/1.1", "keep-alive", True),
        ("HTTP/1.0", None, False),
        ("HTTP/1.0", "Keep-Alive", True),
        ("HTTP/1.0", "keep-alive, close", False),
    ],
)
def test_keep_alive(version: str, connection: str | None, keep_alive: bool) -> None:
    fields = [f"Connection: {connection}"] if connection else []
    assert parse_request_head(head(*fields, line=f"GET / {version}")).keep_alive is keep_alive


def test_connection_tokens_are_validated() -> None:
    assert status_of(head("Connection: close;x")) == 400
    assert parse_request_head(head("Connection: , close,,")).keep_alive is False


def test_upgrade_needs_the_connection_token() -> None:
    request = parse_request_head(head("Connection: keep-alive, Upgrade", "Upgrade: WebSocket"))
    assert request.upgrade == "websocket"
    assert parse_request_head(head("Upgrade: websocket")).upgrade is None
    assert parse_request_head(head("Connection: upgrade")).upgrade is None
    assert parse_request_head(head("Connection: upgrade", "Upgrade:")).upgrade is None
    old = head("Connection: upgrade", "Upgrade: websocket", line="GET / HTTP/1.0")
    assert parse_request_head(old).upgrade is None  # RFC 9110 7.8


# --- round trips (hypothesis) -------------------------------------------------------------------

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(TCHARS, min_size=1, max_size=12)
labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
hostnames = st.lists(labels, min_size=1, max_size=4).map(".".join)
paths = st.text("abcXYZ019-._~!$&'()*+,;=:@/?%", max_size=30).map(lambda p: "/" + p)
VALUE_CHARS = "\t" + "".join(chr(c) for c in range(0x20, 0x100) if c != 0x7F)
field_values = st.text(VALUE_CHARS, max_size=30).map(lambda v: v.strip(" \t"))
field_names = tokens.filter(
    lambda n: (
        n.lower()
        not in {"host", "content-length", "transfer-encoding", "connection", "upgrade", "x-forwarded-for"}
    )
)


@COMPOSITE
@given(
    method=tokens.filter(lambda m: m != "CONNECT"),
    path=paths,
    host=hostnames,
    port=st.none() | st.integers(0, 65535),
    fields=st.lists(st.tuples(field_names, field_values), max_size=10),
    length=st.none() | st.integers(0, 10**18 - 1),
)
def test_request_round_trip(
    method: str, path: str, host: str, port: int | None, fields: list[tuple[str, str]], length: int | None
) -> None:
    authority = host if port is None else f"{host.upper()}:{port}"
    lines = [f"{name}: {value}" for name, value in fields]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    request = parse_request_head(head(*lines, line=f"{method} {path} HTTP/1.1", host=authority))
    assert (request.method, request.target, request.version) == (method, path, "HTTP/1.1")
    assert request.host == host
    assert request.headers[0] == ("Host", authority)
    assert list(request.headers[1 : 1 + len(fields)]) == fields
    expected = BodyFraming("none") if length is None else BodyFraming("length", length)
    assert request.framing == expected
    assert request.keep_alive and request.upgrade is None
    again = parse_request_head(forward_request_head(request, client_ip="::1", scheme="http", upgrade=False))
    assert (again.method, again.target, again.host, again.framing) == (method, path, host, expected)
    assert again.header("X-Forwarded-For") == "::1"
    assert again.keep_alive is False


@FAST
@given(st.binary(max_size=300))
def test_parse_request_head_raises_only_http_error(data: bytes) -> None:
    for candidate in (data, data + b"\r\n\r\n", b"GET / HTTP/1.1\r\n" + data + b"\r\n\r\n"):
        try:
            request = parse_request_head(candidate)
        except HttpError:
            continue
        forward_request_head(request, client_ip="192.0.2.1", scheme="http", upgrade=False)


@FAST
@given(st.binary(max_size=300), st.sampled_from(["GET", "HEAD", "POST", "CONNECT"]))
def test_parse_response_head_raises_only_http_error(data: bytes, method: str) -> None:
    for candidate in (data, data + b"\r\n\r\n", b"HTTP/1.1 200 OK\r\n" + data + b"\r\n\r\n"):
        try:
            response = parse_response_head(candidate, request_method=method)
        except HttpError as exc:
            assert exc.status == 502
            continue
        forward_response_head(response, keep_alive=response.keep_alive)


@FAST
@given(st.binary(max_size=MAX_HEAD_BYTES // 64), st.integers(16, 512))
def test_find_head_end_raises_only_http_error(data: bytes, limit: int) -> None:
    try:
        end = find_head_end(data, limit)
    except HttpError as exc:
        assert exc.status in (400, 431)
        return
    assert end is None or (data[end - 4 : end] == b"\r\n\r\n" and end <= limit)


VALID_HEAD = head("Content-Length: 3", "Connection: keep-alive, x-a", "X-A: b", line="POST /p?q HTTP/1.1")


@FAST
@given(st.integers(0, len(VALID_HEAD) - 1), st.integers(0, 255))
def test_one_byte_mutations_raise_only_http_error(index: int, byte: int) -> None:
    mutated = VALID_HEAD[:index] + bytes([byte]) + VALID_HEAD[index + 1 :]
    try:
        parse_request_head(mutated)
    except HttpError:
        pass


# --- responses ----------------------------------------------------------------------------------


def test_status_line_forms() -> None:
    ok = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", request_method="GET")
    assert (ok.status, ok.reason, ok.version) == (200, "OK", "HTTP/1.1")
    empty = parse_response_head(b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", request_method="GET")
    assert empty.reason == ""
    bare = parse_response_head(b"HTTP/1.0 404\r\nContent-Length: 0\r\n\r\n", request_method="GET")
    assert (bare.status, bare.reason, bare.version) == (404, "", "HTTP/1.0")
    odd = parse_response_head(b"HTTP/1.1 599 Not\tquite \xe9\r\n\r\n", request_method="GET")
    assert odd.reason == "Not\tquite \xe9"


@pytest.mark.parametrize(
    "line",
    [
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1 2000 OK",
        b"HTTP/1.1 099 OK",
        b"HTTP/1.1 600 OK",
        b"HTTP/1.1  200 OK",
        b"HTTP/1.1 200\tOK",
        b"HTTP/1.1 +20 OK",
        b"http/1.1 200 OK",
        b"HTTP/2.0 200 OK",
        b"HTTP/1.2 200 OK",
        b"HTTP/1.1 200 O\x00K",
        b"HTTP/1.1 200 O\x7fK",
        b"ICY 200 OK",
        b" HTTP/1.1 200 OK",
    ],
)
def test_bad_status_line_is_502(line: bytes) -> None:
    assert response_status_of(line + b"\r\nContent-Length: 0\r\n\r\n") == 502


@pytest.mark.parametrize(
    "fields",
    [
        [b"X-A : b"],
        [b"X-A: b", b" folded"],
        [b"X-A: b\x00"],
        [b"X\xe9: b"],
        [b"Content-Length: 5", b"Transfer-Encoding: chunked"],
        [b"Content-Length: 5", b"Content-Length: 6"],
        [b"Content-Length: +5"],
        [b"Transfer-Encoding: chunked, chunked"],
        [b"Transfer-Encoding: gzip,"],
        [b"Connection: a b"],
    ],
)
def test_bad_response_fields_are_502(fields: list[bytes]) -> None:
    data = b"\r\n".join([b"HTTP/1.1 200 OK", *fields]) + b"\r\n\r\n"
    assert response_status_of(data) == 502
    assert response_status_of(data, method="HEAD") == 502


def test_response_bare_lf_and_too_many_headers_are_502() -> None:
    assert response_status_of(b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n") == 502
    many = b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n"
    assert response_status_of(many) == 502


def test_http10_response_with_transfer_encoding_is_502() -> None:
    assert response_status_of(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") == 502


def test_101_needs_upgrade() -> None:
    assert response_status_of(b"HTTP/1.1 101 Switching\r\nConnection: upgrade\r\n\r\n") == 502


@pytest.mark.parametrize(
    ("status", "method", "fields", "framing"),
    [
        (200, "HEAD", [b"Content-Length: 10"], BodyFraming("none")),
        (200, "HEAD", [b"Transfer-Encoding: chunked"], BodyFraming("none")),
        (204, "GET", [], BodyFraming("none")),
        (304, "GET", [b"Content-Length: 10"], BodyFraming("none")),
        (100, "POST", [], BodyFraming("none")),
        (103, "GET", [b"Link: </a>; rel=preload"], BodyFraming("none")),
        (200, "GET", [b"Content-Length: 10"], BodyFraming("length", 10)),
        (200, "GET", [b"Content-Length: 10, 10"], BodyFraming("length", 10)),
        (200, "GET", [b"Transfer-Encoding: chunked"], BodyFraming("chunked")),
        (200, "GET", [b"Transfer-Encoding: gzip, Chunked"], BodyFraming("chunked")),
        (200, "GET", [b"Transfer-Encoding: gzip"], BodyFraming("until-close")),
        (200, "GET", [b"Transfer-Encoding: chunked, gzip"], BodyFraming("until-close")),
        (200, "GET", [], BodyFraming("until-close")),
        (404, "POST", [], BodyFraming("until-close")),
        (200, "CONNECT", [b"Content-Length: 10"], BodyFraming("until-close")),
        (407, "CONNECT", [b"Content-Length: 10"], BodyFraming("length", 10)),
    ],
)
def test_response_framing(status: int, method: str, fields: list[bytes], framing: BodyFraming) -> None:
    data = b"\r\n".join([b"HTTP/1.1 %d X" % status, *fields]) + b"\r\n\r\n"
    response = parse_response_head(data, request_method=method)
    assert response.framing == framing
    if framing.kind == "until-close":
        assert response.keep_alive is False


@pytest.mark.parametrize(
    ("data", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 101 Switching\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", False),
    ],
)
def test_response_keep_alive(data: bytes, keep_alive: bool) -> None:
    assert parse_response_head(data, request_method="GET").keep_alive is keep_alive


def test_response_header_lookup() -> None:
    response = parse_response_head(b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\n\r\n", request_method="GET")
    assert response.header("X-a") == "1"
    assert response.header("nope") is None


# --- BodyReader ---------------------------------------------------------------------------------


def test_no_body_is_done_at_once() -> None:
    reader = BodyReader(BodyFraming("none"))
    assert reader.done
    assert reader.feed(b"GET /next") == (b"", b"GET /next")
    reader.eof()


def test_length_body_across_feeds() -> None:
    reader = BodyReader(BodyFraming("length", 5))
    assert reader.feed(b"he") == (b"he", b"")
    assert not reader.done
    assert reader.feed(b"lloGET") == (b"llo", b"GET")
    assert reader.done
    assert reader.feed(b" /") == (b"", b" /")
    assert BodyReader(BodyFraming("length", 0)).done


def test_incomplete_length_body_at_eof_is_400() -> None:
    reader = BodyReader(BodyFraming("length", 5))
    reader.feed(b"abc")
    with pytest.raises(HttpError) as info:
        reader.eof()
    assert info.value.status == 400


def test_declared_length_over_the_limit_is_413_at_once() -> None:
    BodyReader(BodyFraming("length", 10), max_body_size=10)
    with pytest.raises(HttpError) as info:
        BodyReader(BodyFraming("length", 11), max_body_size=10)
    assert info.value.status == 413


def test_until_close_body() -> None:
    reader = BodyReader(BodyFraming("until-close"), max_body_size=6)
    assert reader.feed(b"abc") == (b"abc", b"")
    assert reader.feed(b"def") == (b"def", b"")
    assert not reader.done
    reader.eof()
    assert reader.done
    over = BodyReader(BodyFraming("until-close"), max_body_size=6)
    over.feed(b"abcdef")
    with pytest.raises(HttpError) as info:
        over.feed(b"g")
    assert info.value.status == 413


def test_chunked_body_is_forwarded_verbatim() -> None:
    body = b'5;name=value;q="a \\"b\\""\r\nhello\r\nA\r\n0123456789\r\n0 ;last\r\nX-Sum: 1\r\nY: \xe9\r\n\r\n'
    reader = BodyReader(CHUNKED)
    assert reader.feed(body + b"GET / HTTP/1.1") == (body, b"GET / HTTP/1.1")
    assert reader.done
    reader.eof()


def test_chunk_size_of_sixteen_hex_digits_is_fine() -> None:
    reader = BodyReader(CHUNKED)
    assert reader.feed(b"000000000000000a\r\n0123456789\r\n0\r\n\r\n")[1] == b""
    assert reader.done


@pytest.mark.parametrize(
    "body",
    [
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"\t5\r\nhello\r\n0\r\n\r\n",
        b"5 5\r\nhello\r\n0\r\n\r\n",
        b"5_0\r\nhello\r\n0\r\n\r\n",
        b"g\r\n",
        b"\r\n",
        b"\xd9\xa5\r\nhello\r\n0\r\n\r\n",
        b"00000000000000005\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloX\r\n0\r\n\r\n",
        b"5\r\nhello\rX0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\r\nhello\r\n0\r\n\r\n",
        b"5;\r\nhello\r\n0\r\n\r\n",
        b"5;a=\r\nhello\r\n0\r\n\r\n",
        b'5;a="x\r\nhello\r\n0\r\n\r\n',
        b"5;a\x00\r\nhello\r\n0\r\n\r\n",
        b"5;a b\r\nhello\r\n0\r\n\r\n",
        b"0\r\nX : y\r\n\r\n",
        b"0\r\nX: y\r\n folded\r\n\r\n",
        b"0\r\nX: \x01\r\n\r\n",
        b"0\r\nX: y\n\r\n",
        b"0\r\nno colon\r\n\r\n",
        b"0\r\nContent-Length: 5\r\n\r\n",
        b"0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"0\r\nHost: evil.example\r\n\r\n",
        b"0\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"0\r\n\r\r\n",
    ],
)
def test_bad_chunked_body_is_400(body: bytes) -> None:
    with pytest.raises(HttpError) as info:
        BodyReader(CHUNKED).feed(body)
    assert info.value.status == 400


def test_chunk_extension_is_bounded() -> None:
    line = b"5;" + b"a" * (MAX_CHUNK_LINE - 2)
    reader = BodyReader(CHUNKED)
    assert reader.feed(line + b"\r\nhello\r\n")[0] == line + b"\r\nhello\r\n"
    with pytest.raises(HttpError) as info:
        BodyReader(CHUNKED).feed(line + b"a\r\nhello\r\n")
    assert info.value.status == 400
    with pytest.raises(HttpError):  # a line that never ends is refused before its end arrives
        BodyReader(CHUNKED).feed(line + b"a" * 10)


def test_trailers_are_bounded() -> None:
    many = b"0\r\n" + b"X: y\r\n" * 11 + b"\r\n"
    assert BodyReader(CHUNKED, max_trailers=11).feed(many)[0] == many
    with pytest.raises(HttpError) as info:
        BodyReader(CHUNKED, max_trailers=10).feed(many)
    assert info.value.status == 431
    big = b"0\r\nX: " + b"y" * 100 + b"\r\n\r\n"
    assert BodyReader(CHUNKED, max_trailer_bytes=107).feed(big)[0] == big
    with pytest.raises(HttpError) as info:
        BodyReader(CHUNKED, max_trailer_bytes=106).feed(big)
    assert info.value.status == 431
    with pytest.raises(HttpError) as info:
        BodyReader(CHUNKED).feed(b"0\r\nX: " + b"y" * MAX_HEAD_BYTES)
    assert info.value.status == 431


def test_chunked_body_over_the_limit_is_413_before_its_data() -> None:
    reader = BodyReader(CHUNKED, max_body_size=8)
    assert reader.feed(b"5\r\nhello\r\n")[0] == b"5\r\nhello\r\n"
    with pytest.raises(HttpError) as info:
        reader.feed(b"4\r\n")
    assert info.value.status == 413
    with pytest.raises(HttpError) as info:
        BodyReader(CHUNKED, max_body_size=2**63).feed(b"ffffffffffffffff\r\n")
    assert info.value.status == 413


def test_incomplete_chunked_body_at_eof_is_400() -> None:
    for fed in (b"", b"5\r\nhel", b"5\r\nhello\r", b"0\r\n", b"0\r\nX: y\r\n"):
        reader = BodyReader(CHUNKED)
        reader.feed(fed)
        with pytest.raises(HttpError) as info:
            reader.eof()
        assert info.value.status == 400


def test_reader_stays_failed_after_an_error() -> None:
    reader = BodyReader(CHUNKED)
    with pytest.raises(HttpError):
        reader.feed(b"zz\r\n")
    with pytest.raises(HttpError) as info:
        reader.feed(b"0\r\n\r\n")
    assert info.value.status == 400
    with pytest.raises(HttpError):
        reader.eof()


@st.composite
def chunked_bodies(draw: st.DrawFn) -> bytes:
    parts = []
    for data in draw(st.lists(st.binary(min_size=1, max_size=40), max_size=6)):
        digits = f"{len(data):x}".zfill(draw(st.integers(1, 4)))
        digits = digits.upper() if draw(st.booleans()) else digits
        extension = draw(st.sampled_from([b"", b";a", b";a=b", b' ; a = "q\\"x"']))
        parts.append(digits.encode() + extension + b"\r\n" + data + b"\r\n")
    parts.append(b"0\r\n")
    trailers = st.lists(st.tuples(st.sampled_from([b"X-Sum", b"Grpc-Status"]), st.binary(max_size=5)))
    for name, value in draw(trailers):
        parts.append(name + b": " + bytes(b for b in value if b >= 0x20 and b != 0x7F) + b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


@COMPOSITE
@given(chunked_bodies(), st.binary(max_size=20), st.data())
def test_chunked_split_anywhere_forwards_the_same(body: bytes, rest: bytes, data: st.DataObject) -> None:
    whole = BodyReader(CHUNKED)
    assert whole.feed(body + rest) == (body, rest)
    assert whole.done
    stream = body + rest
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader = BodyReader(CHUNKED)
    forwarded, leftover = b"", b""
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out, extra = reader.feed(stream[start:end])
        forwarded += out
        leftover += extra
    assert (forwarded, leftover) == (body, rest)
    assert reader.done


@COMPOSITE
@given(
    st.sampled_from(
        [BodyFraming("none"), BodyFraming("length", 7), CHUNKED, BodyFraming("until-close")],
    ),
    st.lists(st.binary(max_size=50), max_size=5),
    st.sampled_from([None, 0, 10, 1000]),
)
def test_body_reader_raises_only_http_error(
    framing: BodyFraming, pieces: list[bytes], limit: int | None
) -> None:
    try:
        reader = BodyReader(framing, max_body_size=limit)
        for piece in pieces:
            out, extra = reader.feed(piece)
            assert framing == CHUNKED or out + extra == piece
        reader.eof()
    except HttpError as exc:
        assert exc.status in (400, 413, 431)


@COMPOSITE
@given(st.lists(st.binary(max_size=30), max_size=6))
def test_chunked_reader_forwards_a_prefix_of_its_input(pieces: list[bytes]) -> None:
    reader = BodyReader(CHUNKED)
    fed = forwarded = b""
    try:
        for piece in pieces:
            fed += piece
            out, extra = reader.feed(piece)
            forwarded += out
            assert fed.startswith(forwarded)
            assert not extra or reader.done
    except HttpError:
        pass


# --- forward_request_head -----------------------------------------------------------------------


def test_forward_drops_hop_by_hop_and_keeps_end_to_end_fields() -> None:
    request = parse_request_head(
        head(
            "Connection: keep-alive, X-Secret, x-other",
            "Keep-Alive: timeout=5",
            "Proxy-Connection: keep-alive",
            "TE: trailers",
            "Trailer: X-Sum",
            "Upgrade: websocket",
            "X-Secret: 1",
            "X-Other: 2",
            "Proxy-Authorization: Basic abc",
            "Cookie: a=b",
            line="GET /x HTTP/1.1",
        )
    )
    assert forwarded_lines(request) == [
        "GET /x HTTP/1.1",
        "Host: example.com",
        "Proxy-Authorization: Basic abc",
        "Cookie: a=b",
        "X-Forwarded-For: 203.0.113.7",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: example.com",
        "Connection: close",
    ]


def test_forward_keeps_protected_fields_that_connection_names() -> None:
    request = parse_request_head(
        head(
            "Connection: X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, Host, Content-Length",
            "X-Forwarded-For: 10.0.0.1, 10.0.0.2",
            "X-Forwarded-Proto: http",
            "X-Forwarded-Host: spoofed.example",
            "x-forwarded-for: 10.0.0.3",
            "Content-Length: 4",
            line="POST / HTTP/1.1",
            host="Sub.Example.com:8443",
        )
    )
    assert forwarded_lines(request, scheme="https") == [
        "POST / HTTP/1.1",
        "Host: Sub.Example.com:8443",
        "Content-Length: 4",
        "X-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 203.0.113.7",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: sub.example.com",
        "Connection: close",
    ]


def test_forward_keeps_transfer_encoding_even_when_connection_names_it() -> None:
    request = parse_request_head(head("Connection: transfer-encoding", "Transfer-Encoding: Chunked "))
    assert "Transfer-Encoding: chunked" in forwarded_lines(request)  # canonical spelling too
    assert parse_request_head(forward_request_head(request, client_ip="::1", scheme="http", upgrade=False))


def test_forward_writes_one_content_length() -> None:
    request = parse_request_head(head("Content-Length: 05, 05", "Content-Length: 05", line="PUT / HTTP/1.1"))
    assert [line for line in forwarded_lines(request) if "Length" in line] == ["Content-Length: 5"]


def test_forward_upgrade() -> None:
    request = parse_request_head(
        head(
            "Connection: Upgrade", "Upgrade: WebSocket", "Sec-WebSocket-Key: abc", "Sec-WebSocket-Version: 13"
        )
    )
    lines = forwarded_lines(request, upgrade=True, client_ip="2001:db8::1")
    assert lines[-2:] == ["Connection: upgrade", "Upgrade: WebSocket"]
    assert "Sec-WebSocket-Key: abc" in lines
    assert "X-Forwarded-For: 2001:db8::1" in lines
    assert forwarded_lines(request, upgrade=False)[-1] == "Connection: close"
    assert not any(line.startswith("Upgrade") for line in forwarded_lines(request, upgrade=False))


def test_forward_absolute_form_becomes_origin_form_with_its_host() -> None:
    request = parse_request_head(head(line="GET http://Tunnel.Example:80?q=1 HTTP/1.1", host="localhost"))
    lines = forwarded_lines(request)
    assert lines[:2] == ["GET /?q=1 HTTP/1.1", "Host: Tunnel.Example:80"]
    assert "Host: localhost" not in lines
    assert "X-Forwarded-Host: tunnel.example" in lines
    again = parse_request_head("\r\n".join([*lines, "", ""]).encode())
    assert again.host == "tunnel.example"


def test_forward_http10_without_host() -> None:
    request = parse_request_head(head("X-Forwarded-Host: x", line="GET / HTTP/1.0", host=None))
    assert forwarded_lines(request, scheme="http") == [
        "GET / HTTP/1.0",
        "X-Forwarded-For: 203.0.113.7",
        "X-Forwarded-Proto: http",
        "Connection: close",
    ]


def test_forward_refuses_misuse() -> None:
    request = parse_request_head(head())
    with pytest.raises(ValueError):
        forward_request_head(request, client_ip="203.0.113.7", scheme="https", upgrade=True)
    with pytest.raises(ValueError):
        forward_request_head(request, client_ip="203.0.113.7", scheme="ftp", upgrade=False)
    for bad_ip in ["", "localhost", "1.2.3.4\r\nX-Admin: 1", "1.2.3", "fe80::1%eth0", "1.2.3.4 "]:
        with pytest.raises(ValueError):
            forward_request_head(request, client_ip=bad_ip, scheme="https", upgrade=False)


# --- forward_response_head ----------------------------------------------------------------------


def response(data: bytes, method: str = "GET") -> bytes:
    return forward_response_head(parse_response_head(data, request_method=method), keep_alive=True)


def test_forward_response_drops_hop_by_hop() -> None:
    upstream = (
        b"HTTP/1.0 200 Fine\r\nConnection: keep-alive, X-Internal\r\nKeep-Alive: timeout=5\r\n"
        b"X-Internal: 1\r\nTrailer: X\r\nUpgrade: h2c\r\nSet-Cookie: a=b\r\nContent-Length: 2, 2\r\n\r\n"
    )
    assert response(upstream) == b"HTTP/1.1 200 Fine\r\nSet-Cookie: a=b\r\nContent-Length: 2\r\n\r\n"


def test_forward_response_connection_close_and_http10_clients() -> None:
    parsed = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", request_method="GET")
    assert forward_response_head(parsed, keep_alive=False).endswith(b"\r\nConnection: close\r\n\r\n")
    assert forward_response_head(parsed, keep_alive=True) == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    old = forward_response_head(parsed, keep_alive=True, request_version="HTTP/1.0")
    assert old.endswith(b"\r\nConnection: keep-alive\r\n\r\n")
    with pytest.raises(ValueError):
        forward_response_head(parsed, keep_alive=True, request_version="HTTP/2")


def test_forward_response_keeps_framing_named_by_connection() -> None:
    upstream = b"HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert b"Transfer-Encoding: chunked\r\n" in response(upstream)


def test_forward_101_keeps_upgrade() -> None:
    upstream = (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-X: y\r\n\r\n"
    )
    parsed = parse_response_head(upstream, request_method="GET")
    assert forward_response_head(parsed, keep_alive=False) == (
        b"HTTP/1.1 101 Switching Protocols\r\nSec-X: y\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    )


def test_forward_interim_response_has_no_connection_field() -> None:
    parsed = parse_response_head(b"HTTP/1.1 100 Continue\r\n\r\n", request_method="POST")
    assert forward_response_head(parsed, keep_alive=False) == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_forward_response_refuses_keep_alive_after_until_close_body() -> None:
    parsed = parse_response_head(b"HTTP/1.1 200 OK\r\n\r\n", request_method="GET")
    with pytest.raises(ValueError):
        forward_response_head(parsed, keep_alive=True)
    assert forward_response_head(parsed, keep_alive=False).endswith(b"Connection: close\r\n\r\n")


# --- error_response -----------------------------------------------------------------------------


def test_error_response_is_complete_and_escaped() -> None:
    raw = error_response(400, "<script>alert('x')</script> & more")
    end = find_head_end(raw)
    assert end is not None
    parsed = parse_response_head(raw[:end], request_method="GET")
    assert (parsed.status, parsed.reason, parsed.keep_alive) == (400, "Bad Request", False)
    assert parsed.header("Content-Type") == "text/html; charset=utf-8"
    assert parsed.framing == BodyFraming("length", len(raw) - end)
    body = raw[end:]
    assert b"<script>" not in body
    assert b"&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in body


def test_error_response_statuses() -> None:
    for status in (400, 408, 413, 431, 501, 502, 505, 599):
        assert error_response(status, "x").startswith(b"HTTP/1.1 %d " % status)
    for bad in (200, 99, 600):
        with pytest.raises(ValueError):
            error_response(bad, "x")
