"""``GyozaClient``: the API over ``httpx.Client``. Requests are built and answers read in ``_calls``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from gyoza.client import _admin_calls, _calls, _sse
from gyoza.client._config import client_defaults
from gyoza.errors import Unavailable
from gyoza.schema import (
    ApiKeyCreated,
    ApiKeyView,
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
    Quota,
    RegistryView,
    Retention,
    RetryPolicy,
    Role,
    RunBatch,
    RunList,
    RunListQuery,
    RunStreamItem,
    SecretView,
    TopicEventList,
    TopicStreamEvent,
    WebhookDelivery,
    WorkerEventIn,
    WorkerView,
)

T = TypeVar("T")
S = TypeVar("S")


class GyozaClient:
    """The Gyoza API for services and notebooks. URL and key default to GYOZA_* env, then ``gyoza up``'s config."""

    def __init__(
        self, server_url: str | None = None, api_key: str | None = None, timeout: float = 30.0, **options: Any
    ) -> None:
        url, key = client_defaults(server_url, api_key)
        self._http = httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=timeout, **options)

    def __enter__(self) -> GyozaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _calls.Call[T]) -> T:
        with _calls.translated(self._http.base_url):
            response = self._http.send(call.request(self._http))
        return call.result(response)

    def health(self) -> Health:
        return self._send(_calls.health())

    def deploy_definition(self, definition: OpDefinitionIn | Mapping[str, Any]) -> OpDefinition:
        return self._send(_calls.deploy_definition(definition))

    def list_definitions(self, all_versions: bool = False) -> list[OpDefinition]:
        return self._send(_calls.list_definitions(all_versions))

    def get_definition(self, name: str, version: str | None = None) -> OpDefinition:
        return self._send(_calls.get_definition(name, version))

    def definition_versions(self, name: str) -> list[OpDefinition]:
        return self._send(_calls.definition_versions(name))

    def delete_definition(self, name: str) -> None:
        self._send(_calls.delete_definition(name))

    def create_run(
        self, name: str, inputs: Mapping[str, Any] | None = None, priority: int | None = None,
        version: str | None = None, idempotency_key: str | None = None, *,
        constraints: Constraints | Mapping[str, Any] | None = None,
        retry_policy: RetryPolicy | Mapping[str, Any] | None = None, timeout_seconds: float | None = None,
        tags: list[str] | None = None, env: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None, retention: Retention | Mapping[str, Any] | None = None,
        concurrency: Concurrency | Mapping[str, Any] | None = None,
    ) -> OpRun:  # fmt: skip
        """A run of definition ``name``; the keyword-only overrides work as in ``POST /definitions/{name}/runs``
        (None keeps the definition's)."""
        return self._send(_calls.create_run(
            name, inputs, priority, version, idempotency_key, constraints=constraints, retry_policy=retry_policy,
            timeout_seconds=timeout_seconds, tags=tags, env=env, labels=labels, retention=retention,
            concurrency=concurrency,
        ))  # fmt: skip

    def create_runs(
        self, name: str, inputs: Sequence[Mapping[str, Any]], idempotency_keys: Sequence[str] | None = None, *,
        priority: int | None = None, version: str | None = None, labels: Mapping[str, str] | None = None,
        constraints: Constraints | Mapping[str, Any] | None = None,
        retry_policy: RetryPolicy | Mapping[str, Any] | None = None, timeout_seconds: float | None = None,
        tags: list[str] | None = None, env: Mapping[str, str] | None = None,
        retention: Retention | Mapping[str, Any] | None = None,
        concurrency: Concurrency | Mapping[str, Any] | None = None,
    ) -> RunBatch:  # fmt: skip
        """Runs of definition ``name`` in one request (1 to 1,000), one per inputs, in order, all with the same
        options; all or nothing (one bad item refuses them all). ``idempotency_keys``: one per run."""
        return self._send(_calls.create_runs(
            name, inputs, idempotency_keys, priority=priority, version=version, labels=labels,
            constraints=constraints, retry_policy=retry_policy, timeout_seconds=timeout_seconds, tags=tags, env=env,
            retention=retention, concurrency=concurrency,
        ))  # fmt: skip

    def map(
        self, name: str, inputs: Iterable[Mapping[str, Any]], batch_size: int = 500, *,
        priority: int | None = None, version: str | None = None, labels: Mapping[str, str] | None = None,
    ) -> Iterator[OpRun]:  # fmt: skip
        """A run of ``name`` per item of ``inputs`` (any iterable, read lazily), created ``batch_size`` at a time;
        yields the runs in order as each batch is stored. Follow them with ``wait`` or ``get_batch``."""
        for chunk in _calls.chunks(iter(inputs), batch_size):
            yield from self.create_runs(name, chunk, priority=priority, version=version, labels=labels).data

    def get_batch(self, batch_id: str) -> BatchView:
        """A batch's runs counted by state, and its aggregate progress."""
        return self._send(_calls.get_batch(batch_id))

    def cancel_runs(
        self, *, batch_id: str | None = None, labels: Mapping[str, str] | None = None,
        state: Sequence[str] | None = None, reason: str | None = None,
    ) -> BulkResult:  # fmt: skip
        """Cancel every run matching all the given conditions (at least one): how many matched and changed."""
        return self._send(_calls.bulk_action("cancel", batch_id, labels, state, reason))

    def retry_runs(
        self, *, batch_id: str | None = None, labels: Mapping[str, str] | None = None,
        state: Sequence[str] | None = None, reason: str | None = None,
    ) -> BulkResult:  # fmt: skip
        """Retry every FAILED or CANCELLED run matching all the given conditions: how many matched and changed."""
        return self._send(_calls.bulk_action("retry", batch_id, labels, state, reason))

    def purge_runs(
        self, *, batch_id: str | None = None, labels: Mapping[str, str] | None = None,
        state: Sequence[str] | None = None, reason: str | None = None,
    ) -> BulkResult:  # fmt: skip
        """Delete every finished run matching all the given conditions (an admin key): how many matched and were
        deleted."""
        return self._send(_calls.bulk_action("purge", batch_id, labels, state, reason))

    def create_adhoc_run(
        self, image: str, inputs: Mapping[str, Any] | None = None, idempotency_key: str | None = None, **fields: Any
    ) -> OpRun:
        return self._send(_calls.create_adhoc_run(image, inputs, idempotency_key, **fields))

    def list_runs(self, query: RunListQuery | None = None, **fields: Any) -> RunList:
        """Runs newest first; filter with a ``RunListQuery`` or its fields (``state=["FAILED"], limit=50``)."""
        return self._send(_calls.list_runs(query or RunListQuery(**fields)))

    def iter_runs(self, query: RunListQuery | None = None, **fields: Any) -> Iterator[OpRun]:
        """Every run ``list_runs`` would page through, following the cursors: newest first from the start or
        ``starting_after``; from ``ending_before`` onward, oldest first. ``limit`` is the page size."""
        current: RunListQuery | None = query or RunListQuery(**fields)
        while current is not None:
            page = self.list_runs(current)
            yield from reversed(page.data) if current.ending_before is not None else page.data
            current = _calls.next_page(current, page)

    def get_run(self, run_id: str) -> OpRun:
        return self._send(_calls.get_run(run_id))

    def run_attempts(self, run_id: str) -> list[AttemptView]:
        return self._send(_calls.run_attempts(run_id))

    def run_events(self, run_id: str, after: int = 0) -> list[Event]:
        return self._send(_calls.run_events(run_id, after))

    def run_logs(self, run_id: str, attempt: int | None = None) -> str:
        return self._send(_calls.run_logs(run_id, attempt))

    def deliveries(self, run_id: str) -> list[WebhookDelivery]:
        """The run's webhook deliveries, each with its state and attempts."""
        return self._send(_calls.deliveries(run_id))

    def redeliver(self, run_id: str, delivery_id: str) -> WebhookDelivery:
        """Deliver a webhook delivery again now (a new round of attempts)."""
        return self._send(_calls.redeliver(run_id, delivery_id))

    def cancel_run(self, run_id: str) -> OpRun:
        return self._send(_calls.cancel_run(run_id))

    def delete_run(self, run_id: str) -> None:
        """Delete a finished run with its logs (an admin key); ``Conflict`` while it is not finished."""
        self._send(_calls.delete_run(run_id))

    def retry_run(self, run_id: str) -> OpRun:
        return self._send(_calls.retry_run(run_id))

    def set_priority(self, run_id: str, priority: int) -> OpRun:
        return self._send(_calls.set_priority(run_id, priority))

    def wait(self, run_id: str, timeout: float | None = None, poll_s: float = 0.5) -> OpRun:
        """Poll until the run is COMPLETED, FAILED or CANCELLED; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not _calls.is_finished(run := self.get_run(run_id)):
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} is still {run.state.value} after {timeout} s")
            time.sleep(poll_s)
        return run

    def stream(
        self, run_id: str, last_event_id: str | None = None, timeout: float | None = None
    ) -> Iterator[RunStreamItem]:
        """The run's events and log lines as they happen (after ``last_event_id``, a stream item's ``id``), ending
        with its ``RunStreamEnd`` once it is terminal (or stopping after ``timeout`` seconds, without it); a broken
        connection is resumed without loss or repeat."""
        return self._follow(_sse.run_plan(run_id, last_event_id, timeout))

    def topic_stream(
        self, topic: str, last_event_id: str | None = None, timeout: float | None = None
    ) -> Iterator[TopicStreamEvent]:
        """Every event published to the topic after ``last_event_id`` (a cursor), live, until you stop iterating
        (or for ``timeout`` seconds)."""
        return self._follow(_sse.topic_plan(topic, last_event_id, timeout))

    def _follow(self, plan: _sse.StreamPlan[S]) -> Iterator[S]:
        while not plan.finished:
            try:
                with _calls.translated(self._http.base_url):
                    yield from self._read(plan)
            except Unavailable:
                if plan.over():
                    return
                if not plan.broke():
                    raise
                time.sleep(_sse.RECONNECT_PAUSE_S)

    def _read(self, plan: _sse.StreamPlan[S]) -> Iterator[S]:
        with contextlib.closing(self._http.send(plan.request(self._http), stream=True)) as response:
            if response.status_code >= 400:
                response.read()
                _calls.raise_refusal(response)
            parser = _sse.SseParser()
            for line in response.iter_lines():
                item = plan.take(parser, line)
                if item is not None:
                    yield item
                if plan.finished:
                    return
        raise Unavailable(f"the stream {plan.path} closed before its end")

    def list_workers(self) -> list[WorkerView]:
        return self._send(_calls.list_workers())

    def get_worker(self, worker_id: str) -> WorkerView:
        return self._send(_calls.get_worker(worker_id))

    def drain_worker(self, worker_id: str) -> WorkerView:
        return self._send(_calls.drain_worker(worker_id))

    def create_key(
        self, name: str, role: Role | str, definitions: Sequence[str] | None = None, worker_id: str | None = None,
        quota: Quota | Mapping[str, Any] | None = None,
    ) -> ApiKeyCreated:  # fmt: skip
        """A scoped API key (admin only); its ``token`` is in this answer only. ``quota``: a submit key's."""
        return self._send(_admin_calls.create_key(name, role, definitions, worker_id, quota))

    def set_quota(self, key_id: str, quota: Quota | Mapping[str, Any] | None) -> ApiKeyView:
        """Give a submit key a quota, change it, or lift it (None); admin only."""
        return self._send(_admin_calls.set_quota(key_id, quota))

    def list_keys(self) -> list[ApiKeyView]:
        return self._send(_admin_calls.list_keys())

    def get_key(self, key_id: str) -> ApiKeyView:
        return self._send(_admin_calls.get_key(key_id))

    def revoke_key(self, key_id: str) -> None:
        self._send(_admin_calls.revoke_key(key_id))

    def set_secret(self, name: str, value: str) -> SecretView:
        """Store a secret's value (admin only); definitions name it in ``secrets``. No call ever returns it."""
        return self._send(_admin_calls.set_secret(name, value))

    def list_secrets(self) -> list[SecretView]:
        return self._send(_admin_calls.list_secrets())

    def delete_secret(self, name: str) -> None:
        self._send(_admin_calls.delete_secret(name))

    def set_registry(self, registry: str, username: str, password: str) -> RegistryView:
        """Store the login workers pull ``registry``'s images with (admin only)."""
        return self._send(_admin_calls.set_registry(registry, username, password))

    def list_registries(self) -> list[RegistryView]:
        return self._send(_admin_calls.list_registries())

    def delete_registry(self, registry: str) -> None:
        self._send(_admin_calls.delete_registry(registry))

    def topic_events(self, topic: str, after: int = 0, limit: int = 100) -> TopicEventList:
        return self._send(_calls.topic_events(topic, after, limit))

    def heartbeat(self, worker_id: str, body: HeartbeatIn) -> HeartbeatReply:
        return self._send(_calls.heartbeat(worker_id, body))

    def claim(self, worker_id: str, wait: float = 0.0) -> AssignmentList:
        return self._send(_calls.claim(worker_id, wait))

    def post_event(self, run_id: str, event: WorkerEventIn) -> OpRun:
        return self._send(_calls.post_event(run_id, event))

    def ship_logs(self, run_id: str, chunk: LogChunkIn) -> LogLogged:
        return self._send(_calls.ship_logs(run_id, chunk))

    def upload_logs(self, run_id: str, attempt: int, text: bytes, worker_id: str) -> None:
        self._send(_calls.upload_logs(run_id, attempt, text, worker_id))
