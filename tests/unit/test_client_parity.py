"""``GyozaClient`` and ``AsyncGyozaClient`` offer the same methods with the same signatures, so code moves between
them by adding or removing ``await`` alone."""

from __future__ import annotations

import inspect
from typing import Any

from gyoza.client import AsyncGyozaClient, GyozaClient

# httpx's own naming, kept on purpose: an async client closes with ``aclose``.
RENAMED = {"aclose": "close"}


def _public(cls: type) -> dict[str, Any]:
    return {
        RENAMED.get(name, name): member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def _shape(function: Any) -> tuple[list[tuple[str, Any, Any, Any]], str]:
    signature = inspect.signature(function)
    parameters = [(p.name, p.kind, p.default, p.annotation) for p in signature.parameters.values()]
    returns = str(signature.return_annotation).replace("AsyncIterator[", "Iterator[")
    return parameters, returns


def test_same_public_methods() -> None:
    assert sorted(_public(GyozaClient)) == sorted(_public(AsyncGyozaClient))


def test_same_signatures() -> None:
    sync, asynchronous = _public(GyozaClient), _public(AsyncGyozaClient)
    different = {
        name: (_shape(sync[name]), _shape(asynchronous[name]))
        for name in sync
        if _shape(sync[name]) != _shape(asynchronous[name])
    }
    assert different == {}


def test_async_methods_are_awaitable_or_async_iterators() -> None:
    for name, member in _public(AsyncGyozaClient).items():
        assert inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member), name
    for name, member in _public(GyozaClient).items():
        assert not inspect.iscoroutinefunction(member), name


def test_both_contexts() -> None:
    assert hasattr(GyozaClient, "__enter__") and hasattr(GyozaClient, "__exit__")
    assert hasattr(AsyncGyozaClient, "__aenter__") and hasattr(AsyncGyozaClient, "__aexit__")
