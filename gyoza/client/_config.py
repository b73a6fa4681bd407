"""Where clients connect by default: explicit arguments, then GYOZA_* environment, then ``gyoza up``'s config."""

from __future__ import annotations

from gyoza.settings import Settings


def client_defaults(server_url: str | None, api_key: str | None) -> tuple[str, str]:
    settings = Settings.load(server_url=server_url, api_key=api_key)
    return settings.server_url, settings.api_key or ""
