"""Closed-loop HTTP load generator, run as its own process: ``python -m bench.loadgen '<json spec>'``.

``connections`` clients each send the same request back to back for ``warmup_s + measure_s`` seconds; only the
requests that complete inside the measurement window count. Prints one JSON object: requests/s, statuses, latency
percentiles and the CPU this process used. Running apart from the bench keeps its CPU visible and separate.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections import Counter
from typing import Any

from bench.common import CpuMeter, percentile
from bench.rawhttp import Connection, build_request


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def load(spec: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(spec["body"]).encode() if "body" in spec else b""
    headers = {"Content-Type": "application/json", **spec.get("headers", {})}
    request = build_request(spec.get("method", "POST"), spec["url"], spec["path"], headers, body)
    connections = int(spec["connections"])
    warmup_s, measure_s = float(spec.get("warmup_s", 2.0)), float(spec["measure_s"])
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    sample: dict[str, bytes] = {}
    now = time.perf_counter()
    window_start, window_end = now + warmup_s, now + warmup_s + measure_s
    cpu_marks: dict[str, float] = {}

    async def client() -> None:
        connection = Connection(spec["url"])
        while True:
            started = time.perf_counter()
            if started >= window_end:
                break
            try:
                status, data = await connection.send(request)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                connection.close()
                errors[type(exc).__name__] += 1
                await asyncio.sleep(0.01)
                continue
            done = time.perf_counter()
            if window_start <= started and done <= window_end:
                statuses[status] += 1
                latencies.append(done - started)
                sample.setdefault(str(status), data[:2000])
        connection.close()

    async def mark_window() -> None:
        await asyncio.sleep(warmup_s)
        cpu_marks["start"] = _cpu_s()
        print("WINDOW START", flush=True)  # the parent meters the server's CPU over the same window
        await asyncio.sleep(measure_s)
        cpu_marks["end"] = _cpu_s()
        print("WINDOW END", flush=True)

    await asyncio.gather(mark_window(), *(client() for _ in range(connections)))
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    return {
        "connections": connections,
        "measure_s": measure_s,
        "requests": sum(statuses.values()),
        "ok": ok,
        "ok_per_s": round(ok / measure_s, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p90_ms": round(percentile(latencies, 90) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "cpu_percent_of_one_core": round(100 * (cpu_marks["end"] - cpu_marks["start"]) / measure_s),
        "request_bytes": len(body),
        "response_bytes": {k: len(v) for k, v in sample.items()},
        "sample_error": next((v.decode(errors="replace") for k, v in sample.items() if not k.startswith("2")), None),
    }


async def run_loadgen(spec: dict[str, Any], meter: CpuMeter | None = None) -> dict[str, Any]:
    """Run this module in a child process with ``spec``; its JSON result. ``meter`` (other processes' CPU) is
    started and stopped with the measurement window; its reading is returned under ``cpu_percent_of_one_core``."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.loadgen", json.dumps(spec),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    cpu: dict[str, float] = {}
    result: dict[str, Any] = {}
    async for line in process.stdout:
        if line.startswith(b"WINDOW START") and meter is not None:
            meter.start()
        elif line.startswith(b"WINDOW END") and meter is not None:
            cpu = meter.stop()
        elif line.startswith(b"{"):
            result = json.loads(line)
    err = await process.stderr.read()
    if await process.wait() != 0 or not result:
        raise RuntimeError(f"load generator failed ({process.returncode}): {err.decode()[-2000:]}")
    result["cpu_percent_of_one_core"] = {**cpu, "loadgen": result.pop("cpu_percent_of_one_core")}
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(load(json.loads(sys.argv[1])))))
