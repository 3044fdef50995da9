"""A Python `websockets` peer for tests/websocket.rs (permessage-deflate on,
as the library negotiates it by default).

    python3 ws_peer.py serve            # echo server on 127.0.0.1:0; prints the port
    python3 ws_peer.py client URL       # sends text, binary and fragmented
                                        # messages, checks the echoes, prints JSON

The server answers with `x-upstream: python` and records nothing; the client
exits non-zero if any echo differs.
"""

import asyncio
import json
import os
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve


async def echo(ws):
    async for msg in ws:
        await ws.send(msg)


def tag(conn, request, response):
    response.headers["x-upstream"] = "python"
    return response


async def run_server():
    async with serve(echo, "127.0.0.1", 0, process_response=tag) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        # Run until the test closes our stdin.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


async def run_client(url):
    results = {}
    async with connect(url, additional_headers={"x-player-id": "py-1"}, open_timeout=5) as ws:
        results["extensions"] = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        results["upstream"] = ws.response.headers.get("x-upstream", "")
        text = "héllo, wörld " * 2000  # compressible, multi-byte UTF-8
        binary = os.urandom(70_000)  # incompressible, > 64 KiB (64-bit length)
        fragments = ["part-one|", "part-two|", "part-three"]
        await ws.send(text)
        got = await asyncio.wait_for(ws.recv(), 5)
        results["text"] = got == text
        await ws.send(binary)
        got = await asyncio.wait_for(ws.recv(), 5)
        results["binary"] = got == binary
        await ws.send(fragments)  # one message in three frames
        got = await asyncio.wait_for(ws.recv(), 5)
        results["fragmented"] = got == "".join(fragments)
        await ws.send(b"")
        got = await asyncio.wait_for(ws.recv(), 5)
        results["empty"] = got == b""
    results["close_code"] = ws.close_code
    print(json.dumps(results), flush=True)
    ok = all(results[k] for k in ("text", "binary", "fragmented", "empty"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(run_server())
    else:
        asyncio.run(run_client(sys.argv[2]))
