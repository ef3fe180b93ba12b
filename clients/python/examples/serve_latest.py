"""Serve the newest frame of a stream over HTTP, from asyncio (the Python twin of the Rust
`serve_latest` example).

    python serve_latest.py STREAM [HOST] [PORT]      # PORT 0: any free port

One task follows the stream (a lossy subscriber: it never slows the publisher), awaiting each
frame with `async for` (no thread waits for it: mmshare's core wakes the event loop); every
HTTP request gets the newest frame it has seen, as text. Ctrl-C stops it.
"""

import asyncio
import sys
from typing import Any

import numpy as np

import mmshare


async def main(stream: str, host: str = "127.0.0.1", port: int = 8080) -> None:
    client = mmshare.connect()
    subscriber = client.subscribe(stream)
    latest: dict[str, Any] = {"number": None, "frame": None}

    async def follow() -> None:
        async for sample in subscriber:
            latest["number"], latest["frame"] = sample.number, np.array(sample.array)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if latest["frame"] is None:
            body = b"no frame yet\n"
        else:
            body = f"frame {latest['number']}: {latest['frame'].tolist()}\n".encode()
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    follower = asyncio.create_task(follow())
    server = await asyncio.start_server(handle, host, port)
    bound = server.sockets[0].getsockname()
    print(f"serving on http://{bound[0]}:{bound[1]}/", flush=True)
    try:
        async with server:
            await server.serve_forever()
    finally:
        follower.cancel()


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    try:
        host = args[1] if len(args) > 1 else "127.0.0.1"
        port = int(args[2]) if len(args) > 2 else 8080
        asyncio.run(main(args[0], host, port))
    except KeyboardInterrupt:
        pass
