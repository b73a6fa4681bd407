"""Structural rules that keep the codebase navigable: import layers, no ``http`` package, no work at import time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Imports every module of gyoza (except __main__, which runs the CLI) and reports what importing started.
_IMPORT_EVERYTHING = """
import importlib, json, os, pkgutil, threading
import gyoza

def sockets():
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            found += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return found

before = sockets()
imported = []
for info in pkgutil.walk_packages(gyoza.__path__, "gyoza."):
    if info.name != "gyoza.__main__":
        importlib.import_module(info.name)
        imported.append(info.name)
children = [
    pid for task in os.listdir("/proc/self/task")
    for pid in open(f"/proc/self/task/{task}/children").read().split()
]
print(json.dumps({"imported": imported, "threads": threading.active_count(), "children": children,
                  "new_sockets": sockets() - before}))
"""


def test_import_layers_hold() -> None:
    # The contracts live in pyproject.toml [tool.importlinter]: cli > server > services > bus > core > schema.
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_http_folder_is_not_a_python_package() -> None:
    # An importable http/ would shadow the standard library's http (and break every HTTP client) when run from here.
    assert not (ROOT / "http" / "__init__.py").exists()
    assert not list((ROOT / "http").glob("*.py"))
    result = subprocess.run(
        [sys.executable, "-c", "import http.client; print(http.client.__file__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert not Path(result.stdout.strip()).is_relative_to(ROOT)


def test_importing_every_module_starts_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-I", "-c", _IMPORT_EVERYTHING], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "gyoza.server.app" in report["imported"]  # the walk really reached the deep modules
    assert report["threads"] == 1
    assert report["children"] == []
    assert report["new_sockets"] == 0


def test_importing_gyoza_imports_nothing_else() -> None:
    # gyoza.op (the op SDK) must stay standard-library only, and it is imported through gyoza/__init__.py.
    script = "import sys; before = set(sys.modules); import gyoza; print(sorted(set(sys.modules) - before))"
    result = subprocess.run(
        [sys.executable, "-I", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout.replace("'", '"')) == ["gyoza"]
