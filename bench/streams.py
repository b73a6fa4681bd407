"""The live streams benchmark (issue 11): API latency while many run streams are open.

One server process, one run. ``GET /runs/{id}`` latency (p50/p99, closed loop, 8 keep-alive connections from
``bench.rawhttp``) is measured three times on the same stack: with no stream open (the ceiling: the same server,
the same run, nothing else to do), with 500 ``GET /runs/{id}/stream`` connections open on that run (idle but for
their heartbeats), and with the 500 open while the run changes: a simulated worker reports an INFO event
``EVENT_RATES`` times a second, and every stream sends each one. The streams are raw asyncio connections in a
process of their own (``python -m bench.streams URL PATH COUNT``) that read and count what they get (much cheaper
than httpx: the bench shares the cores with the server); afterwards every stream must have received every event
(``delivered``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import API_KEY, CpuMeter, Outcome, Stack, latency_summary, stack, until
from bench.profiling import Profiler
from bench.rawhttp import Connection, build_request

REPO = Path(__file__).resolve().parent.parent
# The run changes this often while the streams are open: a steady op's pace (goal), and a busy one's (reported).
EVENT_RATES = (2.0, 20.0)
GOAL_RATE = 2.0
# p99 with the streams open may be at most this multiple of p99 without (or the ceiling plus SLACK_MS, if larger).
GOAL_P99_FACTOR = 2.0
SLACK_MS = 5.0


@dataclass
class Config:
    streams: int = 500
    # Each latency window: closed loop over ``connections`` for this long.
    window_s: float = 8.0
    connections: int = 8
    profile: bool = False
    results_dir: Path = Path("bench/results")

    @classmethod
    def quick(cls) -> Config:
        return cls(window_s=3.0)


class Readers:
    """``count`` open run streams, each reading and counting the events it gets, in a process of their own (so
    their reading does not delay the bench's latency probes in this process's event loop)."""

    def __init__(self, url: str, path: str, count: int) -> None:
        self.url, self.path, self.count = url, path, count
        self.process: asyncio.subprocess.Process | None = None

    async def open(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.streams", self.url, self.path, str(self.count),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=REPO,
        )  # fmt: skip
        assert self.process.stdout is not None
        try:
            ready = await asyncio.wait_for(self.process.stdout.readline(), 120)
            assert ready == b"ready\n", ready
        except BaseException:
            self.process.kill()  # never left behind
            await self.process.wait()
            raise

    async def events(self) -> list[int]:
        """Events received so far, per stream."""
        assert self.process is not None and self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(b"count\n")
        await self.process.stdin.drain()
        counts: list[int] = json.loads(await self.process.stdout.readline())
        return counts

    async def close(self) -> None:
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.close()
            await self.process.wait()


async def _read_stream(reader: asyncio.StreamReader, counts: list[int], index: int, opened: asyncio.Event) -> None:
    tail = b""
    while data := await reader.read(65536):
        text = tail + data
        counts[index] += text.count(b"\nevent: event\n") - tail.count(b"\nevent: event\n")
        if b"event: run" in text:
            opened.set()  # the replay is in: this stream is live
        tail = text[-16:]


async def serve_readers(url: str, path: str, count: int) -> None:
    """The readers' process: open the streams, say ``ready``, answer each ``count`` line with the counts."""
    parts = urlsplit(url)
    counts = [0] * count
    opened = [asyncio.Event() for _ in range(count)]
    tasks, writers = [], []  # the writers too: a writer collected by the GC closes its connection
    for index in range(count):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writers.append(writer)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nX-API-Key: {API_KEY}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        tasks.append(asyncio.create_task(_read_stream(reader, counts, index, opened[index])))
    await asyncio.gather(*(event.wait() for event in opened))
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while await stdin.readline():
        sys.stdout.write(json.dumps(counts) + "\n")
        sys.stdout.flush()
    for task in tasks:
        task.cancel()


async def latencies(url: str, path: str, cfg: Config) -> list[float]:
    request = build_request("GET", url, path, {"X-API-Key": API_KEY})
    samples: list[float] = []
    deadline = time.perf_counter() + cfg.window_s

    async def lane() -> None:
        connection = Connection(url)
        try:
            await connection.send(request)  # warm-up: the connection is open
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                status, _ = await connection.send(request)
                samples.append(time.perf_counter() - began)
                assert status == 200, status
        finally:
            connection.close()

    await asyncio.gather(*(lane() for _ in range(cfg.connections)))
    return samples


async def running_run(s: Stack) -> tuple[str, str, asyncio.Task[None]]:
    """A run RUNNING on a simulated worker (kept alive by heartbeats); returns (run id, worker id, heartbeats)."""
    worker, tag = "bench-" + uuid.uuid4().hex[:6], "bench-streams"
    beat = {"resources": {"cpu": 4, "ram_mb": 4096, "gpus": []}, "tags": [tag], "version": "bench"}
    (await s.http.post(f"/workers/{worker}/heartbeat", json={**beat, "running": []})).raise_for_status()
    created = await s.http.post("/runs", json={"image": "bench/noop:1", "tags": [tag]})
    run_id = created.raise_for_status().json()["id"]
    claimed: list[Any] = []
    while not claimed:
        claimed = (await s.http.post(f"/workers/{worker}/claim", params={"wait": 5})).json()["data"]
    started = {"attempt": 1, "worker_id": worker, "type": "STARTED"}
    (await s.http.post(f"/runs/{run_id}/events", json=started)).raise_for_status()
    holding = {**beat, "running": [{"run_id": run_id, "attempt": 1}]}

    async def heartbeats() -> None:
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await s.http.post(f"/workers/{worker}/heartbeat", json=holding)

    return run_id, worker, asyncio.create_task(heartbeats())


async def changing(s: Stack, run_id: str, worker: str, rate: float, stop: asyncio.Event) -> int:
    """Report INFO events ``rate`` times a second until ``stop``; returns how many were taken."""
    sent = 0
    while not stop.is_set():
        body = {"attempt": 1, "worker_id": worker, "type": "INFO", "msg": f"step {sent}"}
        (await s.http.post(f"/runs/{run_id}/events", json=body)).raise_for_status()
        sent += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1 / rate)
    return sent


async def live(
    s: Stack, streams: Readers, run_id: str, worker: str, rate: float, cfg: Config, meter: CpuMeter
) -> dict[str, Any]:
    """Latency while the run changes ``rate`` times a second; then every stream must have got every event."""
    before = await streams.events()
    stop = asyncio.Event()
    writer = asyncio.create_task(changing(s, run_id, worker, rate, stop))
    profiler = Profiler(s.server.pid, cfg.results_dir / f"profile-streams-{rate:g}.txt", cfg.window_s / 2)
    if cfg.profile:
        await profiler.start()
    meter.start()
    result = latency_summary(await latencies(s.server.url, f"/runs/{run_id}", cfg))
    result["cpu_server"] = meter.stop()["server"]
    if cfg.profile:
        result["profile"] = await profiler.finish()
    stop.set()
    sent = await writer
    expected = [b + sent for b in before]

    async def all_in() -> bool:
        return await streams.events() == expected

    result["delivered"] = await until(all_in, 30)
    result["events_sent"] = sent
    result["events_per_stream_min"] = min(g - b for g, b in zip(await streams.events(), before, strict=True))
    return result


async def measure(cfg: Config) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with stack(workers=1) as s:
        run_id, worker, beats = await running_run(s)
        path = f"/runs/{run_id}"
        meter = CpuMeter({"server": s.server.pid})
        try:
            results["load_before"] = round(os.getloadavg()[0], 2)
            meter.start()
            results["no_streams"] = latency_summary(await latencies(s.server.url, path, cfg))
            results["no_streams"]["cpu_server"] = meter.stop()["server"]
            streams = Readers(s.server.url, f"{path}/stream", cfg.streams)
            await streams.open()
            try:
                meter.start()
                results["idle_streams"] = latency_summary(await latencies(s.server.url, path, cfg))
                results["idle_streams"]["cpu_server"] = meter.stop()["server"]
                delivered = True
                for rate in EVENT_RATES:
                    results[f"live_{rate:g}"] = await live(s, streams, run_id, worker, rate, cfg, meter)
                    delivered = delivered and results[f"live_{rate:g}"]["delivered"]
                results["delivered"] = "ok" if delivered else "MISSING EVENTS"
            finally:
                await streams.close()
        finally:
            beats.cancel()
    return results


async def run(quick: bool = False, profile: bool = False, results_dir: Path = Path("bench/results")) -> Outcome:
    cfg = replace(Config.quick() if quick else Config(), profile=profile, results_dir=results_dir)
    out = Outcome("streams", asdict(cfg))
    results = await measure(cfg)
    out.results = results
    base = results["no_streams"]
    out.row(
        "ceiling: GET /runs/{id}, no stream open",
        f"p50 {base['p50_ms']} ms, p99 {base['p99_ms']} ms, max {base['max_ms']} ms ({base['count']} requests, "
        f"{cfg.connections} connections, {cfg.window_s:g} s); server CPU {base['cpu_server']} % of a core",
    )
    target = round(max(base["p99_ms"] * GOAL_P99_FACTOR, base["p99_ms"] + SLACK_MS), 2)
    rows = [("idle_streams", "open, idle", True)]
    rows += [(f"live_{rate:g}", f"open, {rate:g} events/s to each", rate == GOAL_RATE) for rate in EVENT_RATES]
    for key, label, judged in rows:
        r = results[key]
        metric = f"GET /runs/{{id}} p99 ms, {cfg.streams} streams {label}"
        verdict = out.goal(metric, r["p99_ms"], target, False) if judged else ""
        extra = ""
        if "events_sent" in r:
            extra = f"; {r['events_sent']} events sent, each stream got >= {r['events_per_stream_min']}"
        out.row(
            f"GET /runs/{{id}}, {cfg.streams} streams {label}",
            f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms; server CPU {r['cpu_server']} % "
            f"of a core{extra}",
            f"p99 <= {target} ms" if judged else "(reported)",
            verdict,
        )
    delivered = results["delivered"]
    out.row("every stream got every event", delivered, "ok", "met" if delivered == "ok" else "MISSED")
    out.goals.append({"metric": "streams delivered every event", "measured": delivered, "target": "ok",
                      "met": delivered == "ok"})  # fmt: skip
    return out


if __name__ == "__main__":
    asyncio.run(serve_readers(sys.argv[1], sys.argv[2], int(sys.argv[3])))
