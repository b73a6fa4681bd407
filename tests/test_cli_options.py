"""CLI flags a newcomer trips over (issue 14): ``--version``, help that shows no value after a flag, ``-f`` meaning
``--follow`` everywhere, and ``runs list`` paging past 100 with cursors or ``--all``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

import gyoza
from gyoza.cli.main import app
from gyoza.client import AsyncGyozaClient
from tests.cliproc import failed, gyoza_cli, ok
from tests.processes import API_KEY
from tests.simworker import Cluster
from tests.waiting import until

MORE_THAN_A_PAGE = 105  # the API's largest page is 100


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group of the CLI (typer's own click objects) with the words that reach it."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


def test_version(home: Path) -> None:
    assert ok(gyoza_cli(None, home, "--version")) == f"gyoza {gyoza.__version__}\n"


def test_help_shows_no_value_after_a_flag() -> None:
    runner = CliRunner()
    seen = 0
    for path, _ in commands(typer.main.get_command(app)):
        result = runner.invoke(app, [*path, "--help"], env={"TERMINAL_WIDTH": "200", "NO_COLOR": "1"})
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output, f"gyoza {' '.join(path)} --help:\n{result.output}"
        seen += 1
    assert seen > 20, "every command's help was read"


def test_dash_f_means_follow_in_every_command() -> None:
    owners = []
    for path, command in commands(typer.main.get_command(app)):
        for param in command.params:
            if "-f" in param.opts:
                assert "--follow" in param.opts, f"gyoza {' '.join(path)}: -f is {param.opts}"
                owners.append(path)
    assert sorted(owners) == [("runs", "logs"), ("topics", "tail")]


# --- runs list: cursors and --all ------------------------------------------------------------------------------------


def listed(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [run["id"] for run in json.loads(ok(result))["data"]]


async def test_runs_list_pages_with_cursors_and_all(cluster: Cluster, http: httpx.AsyncClient, home: Path) -> None:
    name = "page-" + uuid.uuid4().hex[:8]
    # No worker has the tag: the runs stay PENDING, and no other test's workers see them.
    body = {"name": name, "version": "1", "image": "busybox", "tags": ["t-" + uuid.uuid4().hex[:10]]}
    assert (await http.post("/definitions", json=body)).status_code in (200, 201)
    created = [(await http.post(f"/definitions/{name}/runs", json={})).json()["id"] for _ in range(MORE_THAN_A_PAGE)]
    newest_first = created[::-1]
    async with AsyncGyozaClient(cluster.url, API_KEY) as sdk:

        async def indexed() -> bool:
            return len([run async for run in sdk.iter_runs(op_definition=name, limit=50)]) == MORE_THAN_A_PAGE

        await until(indexed, 20, interval=0.1, what="every run in the index")
        assert [run.id async for run in sdk.iter_runs(op_definition=name, limit=40)] == newest_first

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return gyoza_cli(cluster.servers[0], home, "runs", "list", "--op", name, *args)

    every = await asyncio.to_thread(cli, "--all", "--json")
    assert listed(every) == newest_first, "--all follows has_more past 100, each run once"
    assert json.loads(every.stdout)["has_more"] is False
    table = ok(await asyncio.to_thread(cli, "--all"))
    assert sum(run_id in table for run_id in created) == MORE_THAN_A_PAGE

    first = await asyncio.to_thread(cli, "--limit", "5")
    assert f"--starting-after {newest_first[4]}" in first.stderr, "the hint names the next page's cursor"
    after = await asyncio.to_thread(cli, "--limit", "5", "--starting-after", newest_first[4], "--json")
    assert listed(after) == newest_first[5:10] and json.loads(after.stdout)["has_more"] is True
    before = await asyncio.to_thread(cli, "--limit", "5", "--ending-before", newest_first[10], "--json")
    assert listed(before) == newest_first[5:10]
    back = await asyncio.to_thread(cli, "--all", "--limit", "30", "--ending-before", newest_first[100], "--json")
    assert listed(back) == newest_first[:100][::-1], "from the cursor towards newer runs, oldest first"
    both = ("--starting-after", created[0], "--ending-before", created[1])
    failed(await asyncio.to_thread(cli, *both), 2, "not both")
