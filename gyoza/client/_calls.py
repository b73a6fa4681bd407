"""Every API call as a pure description (method, path, query, body, response model), shared by both clients.

The sync and async clients differ only in how they send a ``Call``; building requests and reading responses lives
here once, so the two never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from gyoza.errors import error_from_body
from gyoza.schema import (
    AssignmentList,
    HeartbeatIn,
    HeartbeatReply,
    OpRun,
    WorkerEventIn,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Any
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        extra: dict[str, Any] = {}
        if self.timeout is not None:
            extra["timeout"] = self.timeout
        return client.build_request(
            self.method, self.path, params=self.params or None, json=self.json, content=self.content,
            headers=self.headers or None, **extra,
        )  # fmt: skip

    def result(self, response: httpx.Response) -> T:
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"error": {"message": response.text[:500]}}
            raise error_from_body(response.status_code, body)
        return self.parse(response)  # type: ignore[no-any-return]


def _model(model: type[BaseModel]) -> Any:
    return lambda response: model.model_validate_json(response.content)


def _dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json", exclude_unset=False)


def heartbeat(worker_id: str, body: HeartbeatIn) -> Call[HeartbeatReply]:
    return Call("POST", f"/workers/{worker_id}/heartbeat", _model(HeartbeatReply), json=_dump(body))


def claim(worker_id: str, wait: float) -> Call[AssignmentList]:
    return Call("POST", f"/workers/{worker_id}/claim", _model(AssignmentList), params={"wait": wait}, timeout=wait + 30)


def post_event(run_id: str, event: WorkerEventIn) -> Call[OpRun]:
    return Call("POST", f"/runs/{run_id}/events", _model(OpRun), json=_dump(event))


def upload_logs(run_id: str, attempt: int, text: bytes) -> Call[None]:
    return Call(
        "PUT", f"/runs/{run_id}/logs", lambda response: None, params={"attempt": attempt}, content=text,
        headers={"Content-Type": "text/plain; charset=utf-8"},
    )  # fmt: skip


def get_run(run_id: str) -> Call[OpRun]:
    return Call("GET", f"/runs/{run_id}", _model(OpRun))
