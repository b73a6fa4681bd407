"""The admin's calls, described as in ``_calls``: scoped API keys and their quotas (docs/keys.md), secrets and
registry logins (docs/secrets.md)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from gyoza.client._calls import Call, _body, _model, _nothing
from gyoza.errors import InvalidRequest
from gyoza.schema import (
    ApiKeyCreated,
    ApiKeyIn,
    ApiKeyList,
    ApiKeyView,
    Quota,
    RegistryList,
    RegistryView,
    Role,
    SecretList,
    SecretView,
    validation_problems,
)


def create_key(
    name: str, role: Role | str, definitions: Sequence[str] | None = None, worker_id: str | None = None,
    quota: Quota | Mapping[str, Any] | None = None,
) -> Call[ApiKeyCreated]:  # fmt: skip
    """The answer holds the key's token, this once. The body is checked here (a mistake is an ``InvalidRequest``
    before anything is sent), as the server checks it."""
    fields: dict[str, Any] = {"name": name, "role": str(role), "worker_id": worker_id}
    fields["definitions"] = None if definitions is None else list(definitions)
    fields["quota"] = None if quota is None else _body(quota)
    try:  # as JSON, the way the server reads it (strict models take a role's name only there)
        body = ApiKeyIn.model_validate_json(json.dumps(fields))
    except ValidationError as exc:
        raise InvalidRequest("invalid API key", validation_problems(exc)) from None
    return Call("POST", "/keys", _model(ApiKeyCreated), json=_body(body))


def list_keys() -> Call[list[ApiKeyView]]:
    return Call("GET", "/keys", lambda response: ApiKeyList.model_validate_json(response.content).data)


def get_key(key_id: str) -> Call[ApiKeyView]:
    return Call("GET", f"/keys/{key_id}", _model(ApiKeyView))


def revoke_key(key_id: str) -> Call[None]:
    return Call("DELETE", f"/keys/{key_id}", _nothing)


def set_quota(key_id: str, quota: Quota | Mapping[str, Any] | None) -> Call[ApiKeyView]:
    body = {"quota": None if quota is None else _body(quota)}
    return Call("PUT", f"/keys/{key_id}/quota", _model(ApiKeyView), json=body)


def set_secret(name: str, value: str) -> Call[SecretView]:
    return Call("PUT", f"/secrets/{name}", _model(SecretView), json={"value": value})


def list_secrets() -> Call[list[SecretView]]:
    return Call("GET", "/secrets", lambda response: SecretList.model_validate_json(response.content).data)


def delete_secret(name: str) -> Call[None]:
    return Call("DELETE", f"/secrets/{name}", _nothing)


def set_registry(registry: str, username: str, password: str) -> Call[RegistryView]:
    body = {"username": username, "password": password}
    return Call("PUT", f"/registries/{registry}", _model(RegistryView), json=body)


def list_registries() -> Call[list[RegistryView]]:
    return Call("GET", "/registries", lambda response: RegistryList.model_validate_json(response.content).data)


def delete_registry(registry: str) -> Call[None]:
    return Call("DELETE", f"/registries/{registry}", _nothing)
