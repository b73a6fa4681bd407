"""Every API call as a pure description (method, path, query, body, how to read the answer), shared by both clients.

``GyozaClient`` and ``AsyncGyozaClient`` differ only in how they send a ``Call``: building requests and reading
responses lives here once, so the two can never drift apart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from gyoza.errors import BadResponse, InvalidRequest, Unavailable, error_from_body
from gyoza.schema import (
    MAX_BATCH_RUNS,
    TERMINAL_STATES,
    AssignmentList,
    AttemptView,
    BatchView,
    BulkResult,
    Concurrency,
    Constraints,
    Event,
    Health,
    HeartbeatIn,
    HeartbeatReply,
    LogChunkIn,
    LogLogged,
    OpDefinition,
    OpDefinitionIn,
    OpRun,
    Retention,
    RetryPolicy,
    RunBatch,
    RunList,
    RunListQuery,
    TopicEventList,
    WebhookDelivery,
    WorkerEventIn,
    WorkerList,
    WorkerView,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        extra: dict[str, Any] = {} if self.timeout is None else {"timeout": self.timeout}
        params = {k: v for k, v in self.params.items() if v is not None}
        return client.build_request(
            self.method, self.path, params=params or None, json=self.json, content=self.content,
            headers=self.headers or None, **extra,
        )  # fmt: skip

    def result(self, response: httpx.Response) -> T:
        """The parsed answer, or the server's error raised as the matching ``GyozaError`` subclass."""
        raise_refusal(response)
        try:
            return self.parse(response)
        except ValueError as exc:  # pydantic's ValidationError and JSON errors alike
            raise BadResponse(
                f"the server answered {self.method} {self.path} with HTTP {response.status_code} and a body this "
                f"client cannot read: {_first_line(exc)}"
            ) from exc


def raise_refusal(response: httpx.Response) -> None:
    """The server's error answer (a read response, status 400 or more) raised as its ``GyozaError`` subclass."""
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = {"error": {"message": response.text[:500]}}
        raise error_from_body(response.status_code, body)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@contextlib.contextmanager
def translated(base_url: httpx.URL) -> Iterator[None]:
    """The one translation of httpx's errors into Gyoza's, around sending a request (sync or async alike): the
    server could not be reached or did not answer -> ``Unavailable`` (503, worth retrying); an answer that could not
    be decoded or redirects without end -> ``BadResponse``; a URL httpx refuses -> ``InvalidRequest``."""
    try:
        yield
    except httpx.TransportError as exc:
        raise Unavailable(f"cannot reach the Gyoza server at {base_url}: {str(exc) or type(exc).__name__}") from exc
    except httpx.HTTPError as exc:
        raise BadResponse(f"unreadable answer from the Gyoza server at {base_url}: {exc}") from exc
    except httpx.InvalidURL as exc:
        raise InvalidRequest(f"invalid request URL: {exc}") from exc


def _model(model: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: model.model_validate_json(response.content)


class _Page(BaseModel, Generic[M]):
    data: list[M]


def _items(model: type[M]) -> Callable[[httpx.Response], list[M]]:
    # Parsed as JSON, not from Python objects: strict nested models (InputSpec) accept enum strings only in JSON mode.
    page = _Page[model]  # type: ignore[valid-type]
    return lambda response: page.model_validate_json(response.content).data


def _nothing(response: httpx.Response) -> None:
    return None


def _body(value: BaseModel | Mapping[str, Any]) -> Any:
    return value.model_dump(mode="json", exclude_unset=True) if isinstance(value, BaseModel) else dict(value)


def is_finished(run: OpRun) -> bool:
    return run.state in TERMINAL_STATES


# --- health and definitions ----------------------------------------------------------------------------------------


def health() -> Call[Health]:
    return Call("GET", "/health", _model(Health))


def deploy_definition(definition: OpDefinitionIn | Mapping[str, Any]) -> Call[OpDefinition]:
    return Call("POST", "/definitions", _model(OpDefinition), json=_body(definition))


def list_definitions(all_versions: bool = False) -> Call[list[OpDefinition]]:
    return Call("GET", "/definitions", _items(OpDefinition), params={"all_versions": str(all_versions).lower()})


def get_definition(name: str, version: str | None = None) -> Call[OpDefinition]:
    return Call("GET", f"/definitions/{name}", _model(OpDefinition), params={"version": version})


def definition_versions(name: str) -> Call[list[OpDefinition]]:
    return Call("GET", f"/definitions/{name}/versions", _items(OpDefinition))


def delete_definition(name: str) -> Call[None]:
    return Call("DELETE", f"/definitions/{name}", _nothing)


# --- runs ----------------------------------------------------------------------------------------------------------


def create_run(
    name: str,
    inputs: Mapping[str, Any] | None = None,
    priority: int | None = None,
    version: str | None = None,
    idempotency_key: str | None = None,
    *,
    constraints: Constraints | Mapping[str, Any] | None = None,
    retry_policy: RetryPolicy | Mapping[str, Any] | None = None,
    timeout_seconds: float | None = None,
    tags: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    retention: Retention | Mapping[str, Any] | None = None,
    concurrency: Concurrency | Mapping[str, Any] | None = None,
) -> Call[OpRun]:
    """A run of a definition. The overrides (None: the definition's) combine as the server says: ``constraints``
    ``retry_policy`` and ``retention`` change only the fields given, ``env`` adds to the definition's, ``tags`` and
    ``timeout_seconds`` replace them."""
    body: dict[str, Any] = {"inputs": dict(inputs or {})}
    given = {
        "priority": priority, "version": version, "timeout_seconds": timeout_seconds, "tags": tags,
        "env": None if env is None else dict(env), "labels": None if labels is None else dict(labels),
        "constraints": None if constraints is None else _body(constraints),
        "retry_policy": None if retry_policy is None else _body(retry_policy),
        "retention": None if retention is None else _body(retention),
        "concurrency": None if concurrency is None else _body(concurrency),
    }  # fmt: skip
    body.update({k: v for k, v in given.items() if v is not None})
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return Call("POST", f"/definitions/{name}/runs", _model(OpRun), json=body, headers=headers)


def create_runs(
    name: str,
    inputs: Sequence[Mapping[str, Any]],
    idempotency_keys: Sequence[str] | None = None,
    **shared: Any,
) -> Call[RunBatch]:
    """Runs of a definition in one request (1 to 1,000): one per inputs, all with the ``shared`` fields of
    ``create_run`` (priority, version, labels, the overrides). ``idempotency_keys``: one per run, in order."""
    if idempotency_keys is not None and len(idempotency_keys) != len(inputs):
        raise InvalidRequest(
            f"{len(idempotency_keys)} idempotency keys for {len(inputs)} runs: give one per run",
            details=[{"field": "idempotency_keys", "problem": "needs one key per run"}],
        )
    common = {k: _body(v) if isinstance(v, BaseModel | Mapping) else v for k, v in shared.items() if v is not None}
    items = [{"inputs": dict(one), **common} for one in inputs]
    for item, key in zip(items, idempotency_keys or [], strict=False):
        item["idempotency_key"] = key
    return Call("POST", f"/definitions/{name}/runs/batch", _model(RunBatch), json={"runs": items})


def get_batch(batch_id: str) -> Call[BatchView]:
    return Call("GET", f"/batches/{batch_id}", _model(BatchView))


def _run_filter(
    batch_id: str | None, labels: Mapping[str, str] | None, state: Sequence[str] | None, reason: str | None
) -> dict[str, Any]:
    given: dict[str, Any] = {"batch_id": batch_id, "labels": None if labels is None else dict(labels), "reason": reason}
    given["state"] = None if state is None else [str(s) for s in state]
    return {k: v for k, v in given.items() if v is not None}


def bulk_action(
    action: str, batch_id: str | None = None, labels: Mapping[str, str] | None = None,
    state: Sequence[str] | None = None, reason: str | None = None,
) -> Call[BulkResult]:  # fmt: skip
    """POST /runs/<action> (cancel, retry, purge) on every run matching the filter."""
    return Call("POST", f"/runs/{action}", _model(BulkResult), json=_run_filter(batch_id, labels, state, reason))


def chunks(items: Iterator[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    """``items`` in lists of ``size`` (the last one shorter), for ``map``."""
    if not 1 <= size <= MAX_BATCH_RUNS:
        raise InvalidRequest(
            f"batch_size must be from 1 to {MAX_BATCH_RUNS}",
            details=[{"field": "batch_size", "problem": f"expected 1 to {MAX_BATCH_RUNS}"}],
        )
    chunk: list[Mapping[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def create_adhoc_run(
    image: str, inputs: Mapping[str, Any] | None = None, idempotency_key: str | None = None, **fields: Any
) -> Call[OpRun]:
    body = {"image": image, "inputs": dict(inputs or {}), **{k: v for k, v in fields.items() if v is not None}}
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return Call("POST", "/runs", _model(OpRun), json=body, headers=headers)


def list_runs(query: RunListQuery) -> Call[RunList]:
    return Call("GET", "/runs", _model(RunList), params=query.to_params())


def next_page(query: RunListQuery, page: RunList) -> RunListQuery | None:
    """The query for the page after ``page``, onward in the direction ``query`` reads; None after the last page."""
    if not page.has_more or not page.data:
        return None
    if query.ending_before is not None:  # towards newer runs: the page's newest run is the next cursor
        return query.model_copy(update={"ending_before": page.data[0].id})
    return query.model_copy(update={"starting_after": page.data[-1].id})


def get_run(run_id: str) -> Call[OpRun]:
    return Call("GET", f"/runs/{run_id}", _model(OpRun))


def run_attempts(run_id: str) -> Call[list[AttemptView]]:
    return Call("GET", f"/runs/{run_id}/attempts", _items(AttemptView))


def run_events(run_id: str, after: int = 0) -> Call[list[Event]]:
    return Call("GET", f"/runs/{run_id}/events", _items(Event), params={"after": after})


def run_logs(run_id: str, attempt: int | None = None) -> Call[str]:
    return Call("GET", f"/runs/{run_id}/logs", lambda response: response.text, params={"attempt": attempt})


def cancel_run(run_id: str) -> Call[OpRun]:
    return Call("POST", f"/runs/{run_id}/cancel", _model(OpRun))


def delete_run(run_id: str) -> Call[None]:
    return Call("DELETE", f"/runs/{run_id}", _nothing)


def deliveries(run_id: str) -> Call[list[WebhookDelivery]]:
    return Call("GET", f"/runs/{run_id}/deliveries", _items(WebhookDelivery))


def redeliver(run_id: str, delivery_id: str) -> Call[WebhookDelivery]:
    return Call("POST", f"/runs/{run_id}/deliveries/{delivery_id}/redeliver", _model(WebhookDelivery))


def retry_run(run_id: str) -> Call[OpRun]:
    return Call("POST", f"/runs/{run_id}/retry", _model(OpRun))


def set_priority(run_id: str, priority: int) -> Call[OpRun]:
    return Call("PATCH", f"/runs/{run_id}", _model(OpRun), json={"priority": priority})


# --- workers and topics --------------------------------------------------------------------------------------------


def list_workers() -> Call[list[WorkerView]]:
    return Call("GET", "/workers", lambda response: WorkerList.model_validate_json(response.content).data)


def get_worker(worker_id: str) -> Call[WorkerView]:
    return Call("GET", f"/workers/{worker_id}", _model(WorkerView))


def drain_worker(worker_id: str) -> Call[WorkerView]:
    return Call("POST", f"/workers/{worker_id}/drain", _model(WorkerView))


def topic_events(topic: str, after: int = 0, limit: int = 100) -> Call[TopicEventList]:
    return Call("GET", f"/topics/{topic}/events", _model(TopicEventList), params={"after": after, "limit": limit})


# --- what workers send -----------------------------------------------------------------------------------------------


def heartbeat(worker_id: str, body: HeartbeatIn) -> Call[HeartbeatReply]:
    return Call("POST", f"/workers/{worker_id}/heartbeat", _model(HeartbeatReply), json=_body(body))


def claim(worker_id: str, wait: float) -> Call[AssignmentList]:
    return Call("POST", f"/workers/{worker_id}/claim", _model(AssignmentList), params={"wait": wait}, timeout=wait + 30)


def post_event(run_id: str, event: WorkerEventIn) -> Call[OpRun]:
    return Call("POST", f"/runs/{run_id}/events", _model(OpRun), json=event.model_dump(mode="json"))


def ship_logs(run_id: str, chunk: LogChunkIn) -> Call[LogLogged]:
    """A worker's live log lines (POST /runs/{id}/logs)."""
    return Call("POST", f"/runs/{run_id}/logs", _model(LogLogged), json=_body(chunk))


def upload_logs(run_id: str, attempt: int, text: bytes, worker_id: str) -> Call[None]:
    """Only the worker holding the attempt may upload its logs: the server checks ``worker_id`` like an event's."""
    return Call(
        "PUT", f"/runs/{run_id}/logs", _nothing, params={"attempt": attempt, "worker_id": worker_id}, content=text,
        headers={"Content-Type": "text/plain; charset=utf-8"},
    )  # fmt: skip
