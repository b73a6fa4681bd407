"""Sample a server process with py-spy (if installed) and summarise the hottest frames."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from pathlib import Path
from typing import Any


class Profiler:
    """``py-spy record`` of one process for a fixed duration, written as collapsed stacks (one per line)."""

    def __init__(self, pid: int, out: Path, duration_s: float, rate_hz: int = 200) -> None:
        self.pid = pid
        self.out = out
        self.duration_s = duration_s
        self.rate_hz = rate_hz
        self.process: asyncio.subprocess.Process | None = None
        self.error = ""

    @staticmethod
    def available() -> bool:
        return shutil.which("py-spy") is not None

    async def start(self) -> None:
        binary = shutil.which("py-spy")
        if binary is None:
            self.error = "py-spy not installed (pip install py-spy)"
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            binary, "record", "--pid", str(self.pid), "--duration", str(max(1, round(self.duration_s))),
            "--rate", str(self.rate_hz), "--format", "raw", "--output", str(self.out), "--nonblocking",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip

    async def finish(self) -> dict[str, Any]:
        """Wait for the recording to end; the top frames by own time and by time including callees."""
        if self.process is None:
            return {"error": self.error}
        output, _ = await self.process.communicate()
        if self.process.returncode != 0 or not self.out.exists():
            return {"error": output.decode(errors="replace")[-2000:]}
        return summarise(self.out)


def summarise(collapsed: Path, top: int = 20) -> dict[str, Any]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short(frame) for frame in stack.split(";")]
        # The first frame names the thread/process; skip it.
        frames = frames[1:] if frames and frames[0].startswith(("process ", "thread ")) else frames
        if not frames:
            continue
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return {
        "samples": total,
        "collapsed_stacks": str(collapsed),
        "top_own": [(frame, round(100 * n / total, 1)) for frame, n in own.most_common(top)] if total else [],
        # Gyoza's own frames by time including callees, without the entry chain every sample shares.
        "top_gyoza_inclusive": [
            (frame, round(100 * n / total, 1))
            for frame, n in inclusive.most_common()
            if "gyoza/" in frame and not any(entry in frame for entry in _ENTRY_FRAMES)
        ][:top]
        if total
        else [],
    }


_ENTRY_FRAMES = ("gyoza/__main__.py", "gyoza/cli/", "gyoza/server/serve.py")


def _short(frame: str) -> str:
    """``func (path/to/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py:12)``."""
    name, _, where = frame.partition(" (")
    if not where:
        return frame
    where = where.rstrip(")")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})"
