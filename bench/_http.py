"""A minimal keep-alive HTTP/1.1 client for the load loops of the service benches.

httpx's ``AsyncClient`` costs more per request the more connections its pool holds (on
this 2-CPU machine it managed about 120 ``GET /health`` a second over 64 connections
against 670 over 8), so at 64 clients it measured itself rather than the server. One
``Conn`` per simulated client, plain ``asyncio`` streams: the client's cost stays small
and flat, and the servers' differences show.
"""

from __future__ import annotations

import asyncio
import json


class Conn:
    """One keep-alive connection to ``127.0.0.1:port`` (the benches only load localhost)."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body=None) -> tuple[int, bytes]:
        """``(status, body bytes)`` of one request; a JSON ``body`` is sent as such."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        data = b"" if body is None else json.dumps(body).encode()
        self.writer.write(b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (method.encode(), path.encode(), len(data), data))
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                raise RuntimeError("chunked responses are not supported by this bench client")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
