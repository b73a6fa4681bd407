"""``AsyncGyozaClient``: the API over an ``httpx.AsyncClient``; requests are built in ``_calls``."""

from __future__ import annotations

from typing import Any, TypeVar

import httpx

from gyoza.client import _calls
from gyoza.errors import Unavailable
from gyoza.schema import AssignmentList, HeartbeatIn, HeartbeatReply, OpRun, WorkerEventIn

T = TypeVar("T")


class AsyncGyozaClient:
    def __init__(self, server_url: str, api_key: str, timeout: float = 30.0, **httpx_options: Any) -> None:
        self._http = httpx.AsyncClient(
            base_url=server_url, headers={"X-API-Key": api_key}, timeout=timeout, **httpx_options
        )

    async def __aenter__(self) -> AsyncGyozaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _calls.Call[T]) -> T:
        try:
            response = await self._http.send(call.request(self._http))
        except httpx.TransportError as exc:
            raise Unavailable(f"cannot reach the Gyoza server: {exc}") from exc
        return call.result(response)

    async def heartbeat(self, worker_id: str, body: HeartbeatIn) -> HeartbeatReply:
        return await self._send(_calls.heartbeat(worker_id, body))

    async def claim(self, worker_id: str, wait: float = 0.0) -> AssignmentList:
        return await self._send(_calls.claim(worker_id, wait))

    async def post_event(self, run_id: str, event: WorkerEventIn) -> OpRun:
        return await self._send(_calls.post_event(run_id, event))

    async def upload_logs(self, run_id: str, attempt: int, text: bytes) -> None:
        await self._send(_calls.upload_logs(run_id, attempt, text))

    async def get_run(self, run_id: str) -> OpRun:
        return await self._send(_calls.get_run(run_id))
