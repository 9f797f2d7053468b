"""A WebSocket echo server (trio-websocket) for the upgrade test. Run: python tests/servers/ws_echo.py PORT"""

from __future__ import annotations

import sys

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket


async def echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            message = await ws.get_message()
            await ws.send_message(message)
    except ConnectionClosed:
        pass


async def main(port: int) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_websocket, echo, "127.0.0.1", port, None)
        print(f"listening on {port}", flush=True)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]))
