"""``python -m bench [names...] [--quick] [--profile]``: run benchmarks, print a table each, write JSON results."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench import batches, lifecycle, scheduling, storage, streams, submissions, warm, worker_overhead
from bench.common import Outcome, machine_info

RESULTS_DIR = Path(__file__).parent / "results"

Benchmark = Callable[[bool, bool, Path], Awaitable[Outcome]]
BENCHMARKS: dict[str, Benchmark] = {
    "submissions": submissions.run,
    "batches": batches.run,
    "lifecycle": lifecycle.run,
    "scheduling": scheduling.run,
    "worker_overhead": worker_overhead.run,
    "storage": storage.run,
    "streams": streams.run,
    "warm": warm.run,
}


def print_table(outcome: Outcome) -> None:
    headers = ("metric", "measured", "goal", "")
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text when rich is missing
        widths = [max(len(str(r[i])) for r in (headers, *outcome.rows)) for i in range(4)]
        print(f"\n== {outcome.name} ==")
        for row in (headers, *outcome.rows):
            print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
        return
    table = Table(title=f"benchmark: {outcome.name}")
    for header in headers:
        table.add_column(header)
    for row in outcome.rows:
        style = "red" if row[3] == "MISSED" else None
        table.add_row(*row, style=style)
    Console(width=160).print(table)


def write_json(outcome: Outcome, machine: dict[str, object], started: float) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{outcome.name}-{stamp}.json"
    document = {
        "benchmark": outcome.name,
        "timestamp": stamp,
        "duration_s": round(time.perf_counter() - started, 1),
        "machine": machine,
        **{k: v for k, v in asdict(outcome).items() if k != "name"},
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for iterating")
    parser.add_argument(
        "--profile", action="store_true",
        help="sample the server with py-spy (scheduling: placement; submissions, lifecycle: the measured window)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    logging.basicConfig(level=logging.WARNING)
    machine = machine_info()
    began = time.perf_counter()
    goals: list[tuple[str, dict[str, object]]] = []
    for name in args.names or list(BENCHMARKS):
        started = time.perf_counter()
        outcome = await BENCHMARKS[name](args.quick, args.profile, RESULTS_DIR)
        print_table(outcome)
        print(f"results: {write_json(outcome, machine, started)} ({time.perf_counter() - started:.0f} s)")
        goals += [(name, goal) for goal in outcome.goals]
    print(f"\ngoals ({time.perf_counter() - began:.0f} s in all):")
    for name, goal in goals:
        print(f"  {'met   ' if goal['met'] else 'MISSED'} {name}: {goal['metric']} = {goal['measured']} "
              f"(target {goal['target']})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
