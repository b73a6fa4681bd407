"""Client SDK: ``GyozaClient`` (sync) and ``AsyncGyozaClient`` over httpx, sharing one set of request builders."""

from gyoza.client._async import AsyncGyozaClient

__all__ = ["AsyncGyozaClient"]
