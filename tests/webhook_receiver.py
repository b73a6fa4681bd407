"""A webhook receiver on loopback for tests: records every POST and answers with a scripted status (the first
``fail_first`` with ``fail_status``, then 200), each after ``answer_after_s`` (a slow receiver)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: str
    answered: int


@dataclass
class Receiver:
    fail_first: int = 0
    fail_status: int = 500
    answer_after_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _server: asyncio.Server | None = None

    async def start(self, path: str = "/hooks/gyoza") -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}{path}"
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def answered(self, status: int) -> list[Received]:
        return [r for r in self.received if r.answered == status]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = (await reader.readexactly(int(headers.get("content-length", "0")))).decode()
            status = self.fail_status if len(self.received) < self.fail_first else 200
            self.received.append(Received(request_line.split(" ")[1], headers, body, status))
            await asyncio.sleep(self.answer_after_s)
            writer.write(f"HTTP/1.1 {status} Scripted\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode())
            await writer.drain()
        finally:
            writer.close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was free a moment ago): every POST is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/down"
