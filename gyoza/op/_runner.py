"""One attempt: read ``inputs.json``, call the op function, write ``outputs.json`` or ``error.json``."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, overload

from gyoza.op._context import io_dir
from gyoza.op._contract import ERROR_FILE, INPUTS_FILE, OUTPUTS_FILE
from gyoza.op._convert import InputError, bind_inputs, json_type

F = TypeVar("F", bound=Callable[..., Any])


class OutputError(TypeError):
    """The op function returned something that cannot be the run's outputs (not a JSON object)."""


SETUP_ATTRIBUTE = "__gyoza_setup__"


@overload
def op(func: F, *, setup: Callable[[], object] | None = None) -> F: ...


@overload
def op(func: None = None, *, setup: Callable[[], object] | None = None) -> Callable[[F], F]: ...


def op(func: F | None = None, *, setup: Callable[[], object] | None = None) -> F | Callable[[F], F]:
    """Mark ``func`` as an op. It stays an ordinary function; ``python -m gyoza.op module:func`` runs it.

    ``@op(setup=load_model)``: call ``load_model()`` once before the first attempt (and keep what it loads in a
    module global). A cold container calls it for its one attempt; a warm instance (a definition with
    ``keep_warm_seconds``) calls it once and then serves attempt after attempt.
    """

    def mark(function: F) -> F:
        function.__gyoza_op__ = True  # type: ignore[attr-defined]
        setattr(function, SETUP_ATTRIBUTE, setup)
        return function

    return mark if func is None else mark(func)


def setup_of(func: Callable[..., Any]) -> Callable[[], object] | None:
    """The setup an op was declared with, if any."""
    setup: Callable[[], object] | None = getattr(func, SETUP_ATTRIBUTE, None)
    return setup


def read_inputs(directory: Path) -> dict[str, Any]:
    """The run's inputs from ``<directory>/inputs.json``, which must hold a JSON object."""
    path = directory / INPUTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the worker writes the run's inputs there "
            f"(set GYOZA_IO_DIR to the attempt's directory when running an op by hand)"
        )
    try:
        inputs = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError([f"{INPUTS_FILE} is not valid JSON: {exc}"]) from None
    if not isinstance(inputs, dict):
        raise InputError([f"{INPUTS_FILE} must hold a JSON object, got {json_type(inputs)}"])
    return inputs


def write_json_atomically(path: Path, data: object) -> None:
    """Write ``data`` as JSON so that a reader sees either no file or the whole file (temp file + rename)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)


def _outputs_from(result: object) -> dict[str, Any]:
    if result is None:
        return {}
    if not isinstance(result, dict):
        raise OutputError(f"an op must return a dict (or None), got {json_type(result)}")
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise OutputError(f"the op's outputs are not JSON-serialisable: {exc}") from None
    return result


def report_failure(exc: BaseException) -> None:
    """Print the traceback to stderr and describe the failure in ``error.json`` for the worker."""
    text = "".join(traceback.format_exception(exc))
    sys.stderr.write(text)
    sys.stderr.flush()
    error = {"message": str(exc) or exc.__class__.__name__, "type": exc.__class__.__name__, "traceback": text}
    try:
        write_json_atomically(io_dir() / ERROR_FILE, error)
    except OSError as write_error:  # no IO directory: stderr (above) is all the worker gets
        sys.stderr.write(f"gyoza.op: could not write {ERROR_FILE}: {write_error}\n")


def run_attempt(func: Callable[..., Any]) -> int:
    """Run one attempt of ``func`` through the IO contract; return the process exit code (0 or 1).

    ``SystemExit`` and ``KeyboardInterrupt`` are not failures of the op's code and pass through untouched.
    """
    directory = io_dir()
    try:
        kwargs = bind_inputs(func, read_inputs(directory))
        outputs = _outputs_from(func(**kwargs))
        write_json_atomically(directory / OUTPUTS_FILE, outputs)
    except Exception as exc:
        report_failure(exc)
        return 1
    return 0


def run_cold(func: Callable[..., Any]) -> int:
    """A cold container's one attempt: the op's setup, then the attempt (a failing setup fails the attempt)."""
    setup = setup_of(func)
    if setup is not None:
        try:
            setup()
        except Exception as exc:
            report_failure(exc)
            return 1
    return run_attempt(func)
