"""Delivering webhooks: every server process consumes the ``GYOZA_WEBHOOKS`` work queue (durable ``deliverer``),
so each attempt is made by one of them, and POSTs it with a bounded timeout.

A 2xx answer is DELIVERED. Anything else (another status, a refused connection, a timeout) is logged and, until the
round's last attempt, queued again with ``not_before`` after an exponential back-off (``GYOZA_WEBHOOK_BACKOFF``,
doubling, capped at ``MAX_BACKOFF_S``); the last failure is FAILED. A message is acknowledged only once its outcome
is in the log and its retry in the queue, so a crash repeats an attempt rather than losing one: at least once.

A retry that comes up before its time goes back to the queue (a nak; the bus redelivers it about a second later), or
waits here when it is due within that second. An attempt of a round a redelivery superseded is dropped. The run
record is only read (for the URL and the secret), never written: a failing webhook never changes a run.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta

import httpx

import gyoza
from gyoza.core.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    retry_delay,
    signature,
)
from gyoza.errors import RunNotFound, Unavailable
from gyoza.schema import DeliveryLogEntry, DeliveryState, Webhook, WebhookJob
from gyoza.services.clock import SYSTEM_CLOCK, Clock
from gyoza.services.runs import RunService
from gyoza.services.webhooks import DELIVERER, QUEUE_STREAM, WebhookQueue
from gyoza.settings import Settings
from gyoza.supervision import TaskFailures, stop_task, supervised

MAX_BACKOFF_S = 300.0
# The bus redelivers a nak'ed message about this much later; a retry due sooner than that waits here instead.
WAIT_HERE_S = 1.0
MAX_ERROR_CHARS = 300
TASK = "webhook-deliverer"


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookDeliverer:
    def __init__(
        self, queue: WebhookQueue, runs: RunService, settings: Settings, failures: TaskFailures,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:  # fmt: skip
        self.queue = queue
        self.runs = runs
        self.failures = failures
        self.clock = clock
        self.backoff_s = settings.webhook_backoff
        self.timeout_s = settings.webhook_timeout
        # No proxy from the environment, no redirects: a webhook goes to the URL it names, and only there.
        self._http = httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False, trust_env=False)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Consume the queue (``handle`` each message) until ``stop``."""
        self._task = asyncio.create_task(supervised(TASK, self._consume, self.failures), name=TASK)

    async def stop(self) -> None:
        await stop_task(self._task)
        await self._http.aclose()

    async def _consume(self) -> None:
        """Hold a consumer of the queue (restarted, supervised, when it cannot be bound: NATS away)."""
        subscription = await self.queue.bus.consume(QUEUE_STREAM, DELIVERER, self.handle)
        try:
            await asyncio.Future()  # until cancelled: the bus runs the consumer's loop
        finally:
            await subscription.stop()

    async def handle(self, data: bytes) -> None:
        """One attempt: POST, log the outcome, queue the retry. Raising hands the message back to the queue."""
        job = WebhookJob.model_validate_json(data)
        wait = job.not_before - self.clock.time()
        if wait > WAIT_HERE_S:
            # Back to the queue (a nak), fetched again shortly; the bus logs it as a one-line warning.
            raise Unavailable(f"webhook delivery {job.run_id}.{job.delivery_id} is not due for {wait:.0f} s")
        if wait > 0:
            await asyncio.sleep(wait)
        if await self.queue.superseded(job):
            return  # a redelivery started a newer round, which carries on from here
        hook = await self._webhook(job)
        outcome = await self._post(hook, job) if hook else Outcome(None, "the run no longer has this webhook", 0)
        await self._settle(job, hook, outcome)

    async def _webhook(self, job: WebhookJob) -> Webhook | None:
        try:
            record = await self.runs.get(job.run_id)
        except RunNotFound:
            return None
        return record.webhooks[job.hook] if job.hook < len(record.webhooks) else None

    async def _post(self, hook: Webhook, job: WebhookJob) -> Outcome:
        timestamp = str(int(self.clock.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"gyoza-webhooks/{gyoza.__version__}",
            EVENT_HEADER: job.event_type.value,
            DELIVERY_HEADER: f"{job.run_id}.{job.delivery_id}",
            TIMESTAMP_HEADER: timestamp,
        }
        if hook.secret:
            headers[SIGNATURE_HEADER] = signature(hook.secret, timestamp, job.body)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):  # the whole exchange: a receiver dripping bytes is cut off too
                return await self._send(hook.url, job.body, headers, started)
        except TimeoutError:
            return Outcome(None, f"no answer within {self.timeout_s:g} s", _ms_since(started))
        except httpx.HTTPError as exc:
            return Outcome(None, _short(f"{type(exc).__name__}: {exc}"), _ms_since(started))

    async def _send(self, url: str, body: str, headers: dict[str, str], started: float) -> Outcome:
        async with self._http.stream("POST", url, content=body.encode(), headers=headers) as response:
            if response.is_success:
                return Outcome(response.status_code, None, _ms_since(started))
            excerpt = b""
            async for chunk in response.aiter_bytes():  # the start of the answer is enough to say what went wrong
                excerpt += chunk
                if len(excerpt) >= MAX_ERROR_CHARS:
                    break
        text = excerpt.decode(errors="replace")
        return Outcome(response.status_code, _short(f"HTTP {response.status_code}: {text}"), _ms_since(started))

    async def _settle(self, job: WebhookJob, hook: Webhook | None, outcome: Outcome) -> None:
        delay: float | None = None
        if outcome.ok:
            state = DeliveryState.DELIVERED
        elif hook is None or job.attempt >= job.last_attempt:
            state = DeliveryState.FAILED
        else:
            state = DeliveryState.RETRYING
            delay = retry_delay(job.attempt - job.first_of_round + 1, self.backoff_s, MAX_BACKOFF_S)
        now = self.clock.utcnow()
        entry = DeliveryLogEntry(
            run_id=job.run_id, delivery_id=job.delivery_id, event_id=job.event_id, event_type=job.event_type,
            url=hook.url if hook else "", state=state, t=now, attempt=job.attempt, status_code=outcome.status_code,
            error=outcome.error, duration_ms=outcome.duration_ms,
            next_attempt_at=None if delay is None else now + timedelta(seconds=delay),
        )  # fmt: skip
        await self.queue.note(entry, f"a{job.attempt}")
        if delay is not None:
            retry = {"attempt": job.attempt + 1, "not_before": self.clock.time() + delay}
            await self.queue.enqueue(job.model_copy(update=retry))


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
