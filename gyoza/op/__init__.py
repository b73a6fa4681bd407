"""The Python op SDK: turn a plain function into a Gyoza op (SPEC §7, the op IO contract).

Standard library only: ``gyoza op build`` copies ``gyoza/__init__.py`` and this package into op images that have
nothing but ``python3``. Never import third-party packages or other ``gyoza`` modules from here.

Usage::

    from gyoza.op import info, op, progress

    @op
    def classify(image_path: str, top_k: int = 3) -> dict:
        info("model loaded")
        progress(50)
        return {"labels": [...]}

and run it with ``python -m gyoza.op main:classify`` (the worker mounts the attempt's IO directory at ``/gyoza``).
Inputs from ``inputs.json`` arrive as keyword arguments, checked against the type hints; the returned dict becomes
``outputs.json``; an exception becomes ``error.json`` and exit code 1. ``@op(setup=load_model)`` loads what every
attempt needs once: a definition with ``keep_warm_seconds`` keeps the container up to serve attempt after attempt.
"""

from gyoza.op._context import Context, context
from gyoza.op._convert import InputError
from gyoza.op._events import info, progress
from gyoza.op._runner import OutputError, op, run_attempt
from gyoza.op._serve import run

__all__ = ["Context", "InputError", "OutputError", "context", "info", "op", "progress", "run", "run_attempt"]
