"""Bind ``inputs.json`` to a function's parameters, checking and converting values by its simple type hints.

Understood hints: ``str``, ``int`` (JSON integers only: ``true`` is not an int), ``float`` (ints are converted),
``bool``, ``dict``/``dict[str, X]``, ``list``/``list[X]``, ``Optional[X]``/``X | None``, unions, ``Literal[...]``
and ``Any``. Anything else is passed through unchecked. Every problem is reported at once, like the server's 400.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

_NAMES: dict[object, str] = {str: "string", int: "int", float: "float", bool: "bool", dict: "object", list: "array"}


class InputError(ValueError):
    """The inputs do not fit the op function's signature; ``problems`` lists every one."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid inputs: " + "; ".join(problems))
        self.problems = problems


def json_type(value: object) -> str:
    """The JSON name of a value's type, as used in problem messages."""
    if value is None:
        return "null"
    for python_type in (bool, int, float, str, dict, list):  # bool first: it is a subclass of int
        if isinstance(value, python_type):
            return _NAMES[python_type]
    return type(value).__name__


def _describe(hint: object) -> str:
    return _NAMES.get(typing.get_origin(hint) or hint, getattr(hint, "__name__", str(hint)))


def _convert_union(value: object, hint: object, path: str, problems: list[str]) -> object:
    members = typing.get_args(hint)
    if value is None and type(None) in members:
        return None
    choices = [member for member in members if member is not type(None)]
    if len(choices) == 1:  # Optional[X]: report X's own problem, which is more precise
        return convert(value, choices[0], path, problems)
    for member in choices:
        attempt: list[str] = []
        converted = convert(value, member, path, attempt)
        if not attempt:
            return converted
    expected = " or ".join(_describe(member) for member in members)
    problems.append(f"{path}: expected {expected}, got {json_type(value)}")
    return value


def _convert_container(value: object, hint: object, path: str, problems: list[str]) -> object:
    origin = typing.get_origin(hint) or hint
    args = typing.get_args(hint)
    if not isinstance(value, origin):  # type: ignore[arg-type]  # origin is dict or list here
        problems.append(f"{path}: expected {_NAMES[origin]}, got {json_type(value)}")
        return value
    if isinstance(value, list):
        if not args:
            return value
        return [convert(item, args[0], f"{path}[{index}]", problems) for index, item in enumerate(value)]
    assert isinstance(value, dict)
    if len(args) != 2:
        return value
    return {key: convert(item, args[1], f"{path}.{key}", problems) for key, item in value.items()}


def convert(value: object, hint: object, path: str, problems: list[str]) -> Any:
    """Check ``value`` against ``hint``; return it (converted if needed) and append any problem to ``problems``."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return _convert_union(value, hint, path, problems)
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            problems.append(f"{path}: expected one of {list(typing.get_args(hint))!r}, got {value!r}")
        return value
    if (origin or hint) in (dict, list):
        return _convert_container(value, hint, path, problems)
    if hint in (str, bool, int, float):
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        # type(value) is exact on purpose: bool is an int subclass, and True is not an int input.
        if type(value) is not hint:
            problems.append(f"{path}: expected {_NAMES[hint]}, got {json_type(value)}")
        return value
    return value  # Any, unannotated, or a hint we do not understand: pass through


def _type_hints(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except Exception:
        # An annotation that cannot be resolved (a name only imported under TYPE_CHECKING): use the plain ones.
        return {name: hint for name, hint in getattr(func, "__annotations__", {}).items() if not isinstance(hint, str)}


def bind_inputs(func: Callable[..., Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``func`` from ``inputs``; raises :class:`InputError` listing every problem."""
    parameters = inspect.signature(func).parameters
    hints = _type_hints(func)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = {
        name: p
        for name, p in parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    problems: list[str] = []
    kwargs: dict[str, Any] = {}
    for name, value in inputs.items():
        if name not in named and not takes_any:
            problems.append(f"inputs.{name}: unknown input (the op takes: {', '.join(named) or 'no inputs'})")
        elif value is None and name in named and named[name].default is None:
            kwargs[name] = None  # def f(limit: int = None): null means "use the default"
        else:
            kwargs[name] = convert(value, hints.get(name, Any), f"inputs.{name}", problems)
    for name, p in named.items():
        if p.default is inspect.Parameter.empty and name not in inputs:
            problems.append(f"inputs.{name}: missing required input")
    if problems:
        raise InputError(problems)
    return kwargs
