"""GET /metrics: Prometheus text format. One registry per app (nothing global, nothing at import time).

Request counts and latencies are recorded per route template; run and worker gauges, and the failures of background
tasks, are read from the local index, the scheduler and the task supervisor when scraped, so they cost nothing
between scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from quart import Blueprint, Quart, Response, current_app, g, request
from quart_schema import document_response

from gyoza.schema import PlainText

blueprint = Blueprint("metrics", __name__)


class ClusterCollector(Collector):
    """Runs by state, workers by status and the scheduler's view, read at scrape time."""

    def __init__(self, app: Quart) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        context = self.app.extensions.get("gyoza")
        if context is None:
            return
        runs = GaugeMetricFamily("gyoza_runs", "Runs in the local index by state", labels=["state"])
        for state, count in context.index.count_runs_by_state().items():
            runs.add_metric([state], count)
        yield runs
        workers = GaugeMetricFamily("gyoza_workers", "Known workers by status", labels=["status"])
        for status, count in context.index.count_workers_by_status().items():
            workers.add_metric([status], count)
        yield workers
        scheduler = context.scheduler
        yield GaugeMetricFamily("gyoza_scheduler_leader",
                                "1 while this server acts as the scheduler (its lease renewed within the TTL)",
                                value=1 if scheduler.is_leader else 0)  # fmt: skip
        yield GaugeMetricFamily("gyoza_scheduler_pending", "Runs in this scheduler's pending queue",
                                value=len(scheduler.state.queue))  # fmt: skip
        failures = CounterMetricFamily(
            "gyoza_background_task_failures", "Failures of background tasks (each restarted), by task", labels=["task"]
        )
        for task, count in sorted(context.failures.counts.items()):
            failures.add_metric([task], count)
        yield failures


def install_metrics(app: Quart) -> None:
    registry = CollectorRegistry()
    requests = Counter(
        "gyoza_http_requests", "HTTP requests by route and status", ["method", "route", "status"], registry=registry
    )
    latency = Histogram(
        "gyoza_http_request_seconds", "HTTP request latency by route", ["method", "route"], registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
    )  # fmt: skip
    registry.register(ClusterCollector(app))
    app.extensions["gyoza_metrics"] = registry

    @app.before_request
    async def start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    async def observe(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        started = getattr(g, "request_started", None)
        if started is not None:
            latency.labels(request.method, route).observe(time.perf_counter() - started)
        requests.labels(request.method, route, str(response.status_code)).inc()
        return response

    app.register_blueprint(blueprint)


@blueprint.get("/metrics")
@document_response(PlainText)
async def metrics() -> Response:
    """Prometheus metrics (text exposition format)."""
    registry: CollectorRegistry = current_app.extensions["gyoza_metrics"]
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
