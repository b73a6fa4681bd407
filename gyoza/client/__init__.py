"""Client SDK: ``GyozaClient`` (sync) and ``AsyncGyozaClient`` over httpx, with the same method names.

Every failure is a ``gyoza.errors.GyozaError`` subclass: the server's refusal as its class (by error code),
``Unavailable`` when the server cannot be reached, ``BadResponse`` for an answer the client cannot read (``wait``
alone raises ``TimeoutError`` when its own deadline passes). ``gyoza_client`` is a shared ``GyozaClient`` built on
first use from the environment (or ``gyoza up``'s config)::

    from gyoza.client import gyoza_client
    run = gyoza_client.create_run("classify", {"image_url": "s3://bucket/cat.png"})
    print(gyoza_client.wait(run.id, timeout=600).outputs)
"""

from __future__ import annotations

from typing import Any

from gyoza.client._async import AsyncGyozaClient
from gyoza.client._sync import GyozaClient

__all__ = ["AsyncGyozaClient", "GyozaClient", "gyoza_client"]

_shared: dict[str, GyozaClient] = {}


def __getattr__(name: str) -> Any:
    # Built on first use, not at import: importing the SDK never reads config or opens a connection.
    if name == "gyoza_client":
        if "client" not in _shared:
            _shared["client"] = GyozaClient()
        return _shared["client"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
