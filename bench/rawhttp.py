"""A minimal HTTP/1.1 keep-alive client on asyncio streams, for load generation.

httpx spends ~0.5 ms of CPU per request; on a 2-core machine that is CPU taken from the server being measured. This
client sends pre-built request bytes and reads a response by its Content-Length, about 10x cheaper. It supports
exactly what the benchmarks need (one request at a time per connection, Content-Length bodies) and nothing else.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


def build_request(method: str, url: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    host = urlsplit(url).netloc
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    """One keep-alive connection; ``send`` returns (status, body)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        closing = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"connection" and value.strip().lower() == b"close":
                closing = True
            elif lowered == b"transfer-encoding":
                raise RuntimeError("chunked responses are not supported by bench.rawhttp")
        body = await self.reader.readexactly(length) if length else b""
        if closing:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Pool:
    """Up to ``size`` connections handed out one request at a time (for in-process use by a simulator)."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self._idle: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(size):
            self._idle.put_nowait(Connection(url))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        connection = await self._idle.get()
        try:
            return await connection.send(request)
        except BaseException:
            connection.close()  # a half-read response must not be read by the next request
            raise
        finally:
            self._idle.put_nowait(connection)

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().close()
