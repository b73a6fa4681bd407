"""The worker's options are one settings section, built once: flag > ``GYOZA_WORKER_*`` > default, on the shared
settings (server URL, API key, NATS, heartbeat interval, ``<data dir>/work``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from gyoza.cli.main import app
from gyoza.settings import Settings
from gyoza.worker.settings import WORKER_ENV_PREFIX, WorkerSettings


@pytest.fixture(autouse=True)
def no_worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in WorkerSettings.model_fields:
        monkeypatch.delenv(WORKER_ENV_PREFIX + name.upper(), raising=False)


def shared(tmp_path: Path) -> Settings:
    return Settings(server_url="http://server:1", api_key="key", data_dir=tmp_path, heartbeat_interval=0.5,
                    nats_url="nats://nats:4222")  # fmt: skip


def test_flags_win_over_the_environment_which_wins_over_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GYOZA_WORKER_NAME", "from-env")
    monkeypatch.setenv("GYOZA_WORKER_TAGS", "a100, eu,")
    monkeypatch.setenv("GYOZA_WORKER_STOP_GRACE", "3")
    monkeypatch.setenv("GYOZA_WORKER_MODE", "")  # empty: not given
    settings = WorkerSettings.load(shared(tmp_path), name="from-flag", pull="never", cpu=None)
    assert (settings.name, settings.tags, settings.stop_grace) == ("from-flag", ("a100", "eu"), 3.0)
    assert (settings.pull, settings.mode, settings.runtime, settings.network) == ("never", "rest", "docker", "bridge")
    assert settings.cpu is None and settings.drain_timeout is None
    # From the shared settings, under their own names.
    assert (settings.server_url, settings.api_key, settings.heartbeat_interval, settings.nats_url) == (
        "http://server:1", "key", 0.5, "nats://nats:4222",
    )  # fmt: skip
    assert settings.work_dir == (tmp_path / "work").resolve()
    assert settings.container_io_dir == "/gyoza"


def test_a_process_worker_gives_ops_the_host_path_and_an_absolute_work_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = WorkerSettings.load(shared(tmp_path), runtime="process", work_dir=Path("relative"))
    assert settings.container_io_dir is None
    assert settings.work_dir == tmp_path.resolve() / "relative"


def test_a_bad_value_names_the_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GYOZA_WORKER_RUNTIME", "podman")
    with pytest.raises(ValidationError) as raised:
        WorkerSettings.load(shared(tmp_path))
    assert [error["loc"] for error in raised.value.errors()] == [("runtime",)]
    with pytest.raises(ValidationError):
        WorkerSettings(work_dir=tmp_path, runtime="process", mode="grpc")  # type: ignore[arg-type]


def test_worker_start_refuses_a_bad_option_before_starting_anything(tmp_path: Path) -> None:
    env = {"GYOZA_API_KEY": "key", "GYOZA_DATA_DIR": str(tmp_path), "TERMINAL_WIDTH": "200", "NO_COLOR": "1"}
    result = CliRunner().invoke(app, ["worker", "start", "--mode", "grpc"], env=env)
    assert result.exit_code == 2
    assert "--mode (or GYOZA_WORKER_MODE)" in result.output and "'rest' or 'nats'" in result.output
    assert not (tmp_path / "work").exists()
