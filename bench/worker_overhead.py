"""The worker overhead benchmark (issue 4): one trivial op, N times in a row, through Gyoza vs a bare ``docker run``.

Gyoza: a real ``gyoza worker start`` (Docker runtime, network none) on a fresh stack, once in each worker mode
(``rest``: long-poll claims, the default; ``nats``: assignments pushed on its subject). The bench submits
``POST /runs?wait=60``, which answers once the run has ended, one run at a time. Per-phase times come from the run's
events (server clock): submit -> ASSIGNED (``created_at`` -> ASSIGNED event), ASSIGNED -> STARTED (claim, attempt
dir, image check, container create and start, the STARTED report), STARTED -> COMPLETED (the op runs, the worker
waits for the exit, uploads logs, reports), COMPLETED -> observed (until the waiting client had the answer).

Ceiling, in the same run: the same image and command with the docker SDK directly, as the worker would start it but
with nothing around it: ``containers.run(detach=True, network none, init=True, the same /gyoza mount and inputs)``
-> ``wait`` -> ``remove``. The ratio is Gyoza's median end-to-end time over the bare median.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import API_KEY, Outcome, latency_summary, ms, stack, until
from gyoza.client import AsyncGyozaClient
from gyoza.op._contract import CONTAINER_IO_DIR
from gyoza.schema import OpRun
from gyoza.worker.iocontract import AttemptDir

IMAGE = "gyoza-test/pyop:latest"
COMMAND = ["ops:echo"]
INPUTS = {"text": "hello", "n": 1}
GOALS = {"ratio": 1.15}
WORKER = "bench-worker"


@dataclass
class Config:
    runs: int = 30
    warmup: int = 2
    poll_s: float = 0.02  # only should ?wait= answer before the run ended (it has 60 s)
    modes: tuple[str, ...] = ("rest", "nats")

    @classmethod
    def quick(cls) -> Config:
        return cls(runs=10, warmup=1)


def docker_ready() -> str | None:
    """None when the engine answers and the image is there; otherwise why this benchmark is skipped."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
        client.images.get(IMAGE)
    except Exception as exc:  # no engine, no image: skip with the reason
        return f"{type(exc).__name__}: {exc} (run scripts/build-test-images)"
    return None


# --- bare docker ------------------------------------------------------------------------------------------------


def bare_runs(count: int, warmup: int) -> dict[str, Any]:
    import docker

    client = docker.from_env()
    work_dir = Path(tempfile.mkdtemp(prefix="gyoza-bench-bare-"))
    totals: list[float] = []
    phases: dict[str, list[float]] = {"run": [], "wait": [], "remove": []}
    try:
        for i in range(warmup + count):
            attempt_dir = AttemptDir(work_dir, f"bare-{i}", 1)
            attempt_dir.prepare(INPUTS)
            started = time.perf_counter()
            container = client.containers.run(
                IMAGE, COMMAND, detach=True, network_mode="none", init=True,
                volumes={str(attempt_dir.path): {"bind": CONTAINER_IO_DIR, "mode": "rw"}},
                environment={"GYOZA_IO_DIR": CONTAINER_IO_DIR},
            )  # fmt: skip
            ran = time.perf_counter()
            status = container.wait()
            waited = time.perf_counter()
            container.remove(force=True)
            removed = time.perf_counter()
            if status.get("StatusCode") != 0 or not (attempt_dir.path / "outputs.json").exists():
                raise RuntimeError(f"bare run failed: {status}")
            attempt_dir.remove()
            if i >= warmup:
                totals.append(removed - started)
                phases["run"].append(ran - started)
                phases["wait"].append(waited - ran)
                phases["remove"].append(removed - waited)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return {"total": latency_summary(totals), "median_ms": ms(statistics.median(totals)),
            "phases": {k: latency_summary(v) for k, v in phases.items()}}  # fmt: skip


# --- through Gyoza ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def worker_process(url: str, work_dir: Path, mode: str, nats_url: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GYOZA_")}
    env.update(GYOZA_API_KEY=API_KEY, GYOZA_SERVER_URL=url, GYOZA_LOG_LEVEL="warning", GYOZA_NATS_URL=nats_url)
    log_path = work_dir / "worker.log"
    command = [
        sys.executable, "-m", "gyoza", "worker", "start", "--name", WORKER, "--work-dir", str(work_dir / "attempts"),
        "--runtime", "docker", "--network", "none", "--cpu", "2", "--ram-mb", "4096", "--gpus", "none",
        "--mode", mode, "--pull", "never",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    try:
        yield process, log_path
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _t(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def gyoza_runs(cfg: Config, mode: str) -> dict[str, Any]:
    totals: list[float] = []
    phases: dict[str, list[float]] = {"submit_to_assigned": [], "assigned_to_started": [],
                                      "started_to_completed": [], "completed_to_observed": []}  # fmt: skip
    async with stack() as s:
        with worker_process(s.server.url, s.work_dir, mode, s.nats_url) as (process, log_path):

            async def online() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"worker exited: {log_path.read_text()[-2000:]}")
                response = await s.http.get(f"/workers/{WORKER}")
                return response.status_code == 200 and response.json()["status"] == "ONLINE"

            if not await until(online, 30):
                raise TimeoutError("the worker did not come online")
            async with AsyncGyozaClient(s.server.url, API_KEY) as client:
                body = {"image": IMAGE, "command": COMMAND, "inputs": INPUTS, "constraints": {"cpu": 1, "ram_mb": 256}}
                for i in range(cfg.warmup + cfg.runs):
                    started = time.perf_counter()
                    # ?wait= answers as the run ends (the server follows it; no client polling interval to pay).
                    response = await s.http.post("/runs", json=body, params={"wait": 60}, timeout=70)
                    response.raise_for_status()
                    observed_wall = time.time()
                    run = OpRun.model_validate_json(response.content)
                    if run.state.value not in ("COMPLETED", "FAILED", "CANCELLED"):
                        run = await client.wait(run.id, timeout=60, poll_s=cfg.poll_s)
                        observed_wall = time.time()
                    elapsed = time.perf_counter() - started
                    if run.state.value != "COMPLETED":
                        raise RuntimeError(f"run {run.id} ended {run.state}: {run.model_dump_json()[:1000]}")
                    if i < cfg.warmup:
                        continue
                    totals.append(elapsed)
                    events = (await s.http.get(f"/runs/{run.id}/events")).json()["data"]
                    at = {e["type"]: _t(e["t"]) for e in events}
                    created = _t(response.json()["created_at"])
                    phases["submit_to_assigned"].append(at["ASSIGNED"] - created)
                    phases["assigned_to_started"].append(at["STARTED"] - at["ASSIGNED"])
                    phases["started_to_completed"].append(at["COMPLETED"] - at["STARTED"])
                    phases["completed_to_observed"].append(observed_wall - at["COMPLETED"])
    return {"total": latency_summary(totals), "median_ms": ms(statistics.median(totals)),
            "phases": {k: latency_summary(v) for k, v in phases.items()}}  # fmt: skip


async def run(quick: bool = False, profile: bool = False, results_dir: Path = Path("bench/results")) -> Outcome:
    cfg = Config.quick() if quick else Config()
    out = Outcome("worker_overhead", asdict(cfg))
    skipped = await asyncio.to_thread(docker_ready)
    if skipped is not None:
        out.results["skipped"] = skipped
        out.row("skipped", skipped)
        return out
    load = round(os.getloadavg()[0], 2)
    bare = await asyncio.to_thread(bare_runs, cfg.runs, cfg.warmup)
    out.results = {"bare_docker": bare, "loadavg_1m_before": load}
    b = bare["total"]
    out.row(
        f"ceiling: bare docker run -> wait -> remove ({IMAGE} {' '.join(COMMAND)})",
        f"p50 {b['p50_ms']} ms, p90 {b['p90_ms']} ms (n={b['count']}); run {bare['phases']['run']['p50_ms']}, "
        f"wait {bare['phases']['wait']['p50_ms']}, remove {bare['phases']['remove']['p50_ms']} ms; load {load}",
    )
    for mode in cfg.modes:
        through = await gyoza_runs(cfg, mode)
        ratio = through["median_ms"] / bare["median_ms"]
        out.results[f"gyoza_{mode}"] = {**through, "ratio_median": round(ratio, 3)}
        g = through["total"]
        out.row(f"through Gyoza, one {mode}-mode worker, sequential",
                f"p50 {g['p50_ms']} ms, p90 {g['p90_ms']} ms (n={g['count']})")  # fmt: skip
        verdict = out.goal(f"gyoza ({mode} worker) / bare docker (median)", round(ratio, 3), GOALS["ratio"], False)
        out.row(f"ratio Gyoza ({mode} worker) / bare (medians)", f"{ratio:.2f}x", f"<= {GOALS['ratio']}x", verdict)
        p = through["phases"]
        out.row(
            f"Gyoza phases p50, {mode} worker (ms, from run events)",
            f"submit->assigned {p['submit_to_assigned']['p50_ms']}, "
            f"assigned->started {p['assigned_to_started']['p50_ms']}, "
            f"started->completed {p['started_to_completed']['p50_ms']}, completed->observed "
            f"{p['completed_to_observed']['p50_ms']} (?wait=)",
        )
    return out
