"""/secrets and /registries: values definitions reference, and pull credentials, for admins only
(docs/secrets.md). No answer ever holds a value or a password."""

from __future__ import annotations

import re

from quart import Blueprint, Response
from quart_schema import document_request, document_response

from gyoza.errors import InvalidRequest, RegistryNotFound, SecretNotFound
from gyoza.schema import (
    REGISTRY_PATTERN,
    SECRET_NAME_PATTERN,
    NoContent,
    RegistryCredentialIn,
    RegistryList,
    RegistryView,
    SecretIn,
    SecretList,
    SecretView,
)
from gyoza.server.context import ctx
from gyoza.server.http import json_response, read_body, refusals

blueprint = Blueprint("secrets", __name__)


def _named(name: str, pattern: str, field: str, creating: bool) -> str:
    """A path's name: 400 naming it when a write gives one that cannot be, 404 when a read or delete does."""
    if re.fullmatch(pattern, name):
        return name
    if creating:
        raise InvalidRequest(
            f"{name!r} cannot be a {field}", details=[{"field": field, "problem": f"must match {pattern}"}]
        )
    if field == "registry":
        raise RegistryNotFound(f"no credentials for registry {name!r}")
    raise SecretNotFound(f"no secret named {name!r}")


@blueprint.put("/secrets/<name>")
@document_request(SecretIn)
@document_response(SecretView, 201)
@document_response(SecretView, 200)
@refusals(400, 403, 404, 413, 415)
async def set_secret(name: str) -> Response:
    """Store a secret's value: 201 new, 200 a new value for an existing one (runs assigned from then on get it).

    Definitions name it in ``secrets: {ENV_NAME: name}``; the value goes only to the worker an attempt is assigned
    to, as that environment variable, and is masked in the captured log. Admin only."""
    body = await read_body(SecretIn)
    view, created = await ctx().secrets.set(_named(name, SECRET_NAME_PATTERN, "name", creating=True), body)
    return json_response(view, 201 if created else 200)


@blueprint.get("/secrets")
@document_response(SecretList)
@refusals(403)
async def list_secrets() -> Response:
    """Every secret by name, with when it was created and last set; never a value. Admin only."""
    return json_response(await ctx().secrets.list())


@blueprint.get("/secrets/<name>")
@document_response(SecretView)
@refusals(403, 404)
async def get_secret(name: str) -> Response:
    """One secret (never its value). Admin only."""
    return json_response(await ctx().secrets.get(_named(name, SECRET_NAME_PATTERN, "name", creating=False)))


@blueprint.delete("/secrets/<name>")
@document_response(NoContent, 204)
@refusals(403, 404)
async def delete_secret(name: str) -> Response:
    """Delete a secret. A run that names it fails when assigned (``CONTAINER_ERROR``, naming it). Admin only."""
    await ctx().secrets.delete(_named(name, SECRET_NAME_PATTERN, "name", creating=False))
    return Response(status=204)


@blueprint.put("/registries/<registry>")
@document_request(RegistryCredentialIn)
@document_response(RegistryView, 201)
@document_response(RegistryView, 200)
@refusals(400, 403, 404, 413, 415)
async def set_registry(registry: str) -> Response:
    """Store the login workers pull this registry's images with (``ghcr.io``, ``registry.example:5000``,
    ``docker.io`` for Docker Hub): sent with each assignment of a run whose image is there. Admin only."""
    body = await read_body(RegistryCredentialIn)
    checked = _named(registry, REGISTRY_PATTERN, "registry", creating=True)
    view, created = await ctx().secrets.set_registry(checked, body)
    return json_response(view, 201 if created else 200)


@blueprint.get("/registries")
@document_response(RegistryList)
@refusals(403)
async def list_registries() -> Response:
    """Every registry with stored credentials and its username; never a password. Admin only."""
    return json_response(await ctx().secrets.list_registries())


@blueprint.delete("/registries/<registry>")
@document_response(NoContent, 204)
@refusals(403, 404)
async def delete_registry(registry: str) -> Response:
    """Forget a registry's credentials (its images are then pulled anonymously). Admin only."""
    await ctx().secrets.delete_registry(_named(registry, REGISTRY_PATTERN, "registry", creating=False))
    return Response(status=204)
