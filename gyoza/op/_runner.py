"""One attempt: read ``inputs.json``, call the op function, write ``outputs.json`` or ``error.json``."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from gyoza.op._context import io_dir
from gyoza.op._contract import ERROR_FILE, INPUTS_FILE, OUTPUTS_FILE
from gyoza.op._convert import InputError, bind_inputs, json_type

F = TypeVar("F", bound=Callable[..., Any])


class OutputError(TypeError):
    """The op function returned something that cannot be the run's outputs (not a JSON object)."""


def op(func: F) -> F:
    """Mark ``func`` as an op. It stays an ordinary function; ``python -m gyoza.op module:func`` runs it."""
    func.__gyoza_op__ = True  # type: ignore[attr-defined]
    return func


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


def run(func: Callable[..., Any]) -> NoReturn:
    """Run one attempt of ``func`` and exit with its code: ``if __name__ == "__main__": run(classify)``."""
    sys.exit(run_attempt(func))
