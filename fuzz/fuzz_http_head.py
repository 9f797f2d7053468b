"""Fuzz the relay's HTTP head parser and body framer: arbitrary bytes parse or raise HttpError.

The first byte picks a target so one corpus covers requests, responses and chunked
bodies; whatever parses must also forward without error, and what a request
forwards must parse again.
"""

from __future__ import annotations

from fuzz._harness import fuzz
from seamless_relay.http_head import (
    BodyFraming,
    BodyReader,
    HttpError,
    find_head_end,
    forward_request_head,
    forward_response_head,
    parse_request_head,
    parse_response_head,
)

_METHODS = ("GET", "HEAD", "POST", "CONNECT")


def _request(data: bytes) -> None:
    end = find_head_end(data)
    request = parse_request_head(data[:end] if end is not None else data + b"\r\n\r\n")
    forwarded = forward_request_head(
        request, client_ip="192.0.2.1", scheme="https", upgrade=request.upgrade is not None
    )
    again = parse_request_head(forwarded)
    assert (again.method, again.host, again.framing) == (request.method, request.host, request.framing)


def _response(data: bytes, method: str) -> None:
    response = parse_response_head(data + b"\r\n\r\n", request_method=method)
    forward_response_head(response, keep_alive=response.keep_alive)


def _chunked(data: bytes) -> None:
    whole = BodyReader(BodyFraming("chunked"), max_body_size=1 << 20)
    body, leftover = whole.feed(data)
    assert data.startswith(body + leftover) and (whole.done or not leftover)
    pieces = BodyReader(BodyFraming("chunked"), max_body_size=1 << 20)
    try:
        split = [pieces.feed(data[i : i + 7]) for i in range(0, len(data), 7)]
    except HttpError as exc:
        raise AssertionError("feeding in pieces failed where feeding whole did not") from exc
    assert b"".join(out for out, _ in split) == body
    assert b"".join(extra for _, extra in split) == leftover
    assert pieces.done == whole.done


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    selector, payload = data[0] % 4, data[1:]
    try:
        if selector == 0:
            _request(payload)
        elif selector == 1:
            _response(payload, _METHODS[data[0] // 4 % len(_METHODS)])
        elif selector == 2:
            _chunked(payload)
        else:
            find_head_end(payload, max_head_bytes=256)
    except HttpError:
        pass


def main() -> None:
    fuzz(TestOneInput)


if __name__ == "__main__":
    main()
