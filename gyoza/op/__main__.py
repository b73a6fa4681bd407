"""``python -m gyoza.op module:function``: the entry point of an op container.

A bare ``function`` is looked up in the module named by ``$GYOZA_OP_MODULE``, so an image can set
``ENTRYPOINT ["python3", "-m", "gyoza.op"]`` and ``ENV GYOZA_OP_MODULE=ops`` and take the op's name as its command.
Failing to import the module or find the function is reported like any op failure (error.json, exit 1). With
``GYOZA_SERVE=1`` (a warm instance) the function serves attempt after attempt instead (``_serve``).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from gyoza.op._contract import OP_MODULE_VAR
from gyoza.op._runner import report_failure
from gyoza.op._serve import entry

USAGE = "usage: python -m gyoza.op module:function  (or a bare function name with GYOZA_OP_MODULE set)"


def resolve(target: str) -> Callable[..., Any]:
    """The function named by ``module:function`` (or by ``function`` in ``$GYOZA_OP_MODULE``)."""
    module_name, separator, function_name = target.partition(":")
    if not separator:
        module_name, function_name = os.environ.get(OP_MODULE_VAR, ""), target
        if not module_name:
            raise ValueError(f"expected module:function, got {target!r} (and {OP_MODULE_VAR} is not set)")
    module = importlib.import_module(module_name)
    func = getattr(module, function_name, None)
    if not callable(func):
        raise AttributeError(f"module {module_name!r} has no function {function_name!r}")
    return func  # type: ignore[no-any-return]


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        func = resolve(argv[0])
    except Exception as exc:
        report_failure(exc)
        return 1
    return entry(func)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
