"""/keys: scoped API keys, for admins only (docs/keys.md)."""

from __future__ import annotations

from quart import Blueprint, Response
from quart_schema import document_request, document_response

from gyoza.schema import ApiKeyCreated, ApiKeyIn, ApiKeyList, ApiKeyView, NoContent, QuotaIn, known_fields
from gyoza.server.context import ctx
from gyoza.server.http import json_response, read_body, refusals

blueprint = Blueprint("keys", __name__)


@blueprint.post("/keys")
@document_request(ApiKeyIn)
@document_response(ApiKeyCreated, 201)
@refusals(400, 403, 413, 415)
async def create_key() -> Response:
    """Create a key with a role: ``admin``, ``submit`` (optionally limited to ``definitions``), ``read``, or
    ``worker`` (bound to ``worker_id``).

    The answer holds the key's ``token`` (send it as ``X-API-Key``) this once: only its hash is stored, so it can
    never be shown again. Admin only.
    """
    body = await read_body(ApiKeyIn)
    return json_response(await ctx().keys.create(body), 201)


@blueprint.get("/keys")
@document_response(ApiKeyList)
@refusals(403)
async def list_keys() -> Response:
    """Every key, revoked ones included, oldest first; never a token or its hash. Admin only."""
    return json_response(known_fields(await ctx().keys.list()))


@blueprint.get("/keys/<key_id>")
@document_response(ApiKeyView)
@refusals(403, 404)
async def get_key(key_id: str) -> Response:
    """One key (never its token or hash). Admin only."""
    return json_response(known_fields(await ctx().keys.get(key_id)))


@blueprint.put("/keys/<key_id>/quota")
@document_request(QuotaIn)
@document_response(ApiKeyView)
@refusals(400, 403, 404, 413, 415)
async def set_quota(key_id: str) -> Response:
    """Set a submit key's quota (``{"quota": {"gpus": 8, "vram_mb": 160000}}``), change it, or lift it
    (``{"quota": null}``): the most its runs may hold at once, summed over them. Runs that would overrun it wait
    (``QUOTA_EXCEEDED``, with the numbers); runs placed already keep their places. Admin only."""
    body = await read_body(QuotaIn)
    return json_response(known_fields(await ctx().keys.set_quota(key_id, body.quota)))


@blueprint.delete("/keys/<key_id>")
@document_response(NoContent, 204)
@refusals(403, 404)
async def revoke_key(key_id: str) -> Response:
    """Revoke a key: every server replica refuses it (401) within a second. Idempotent; the key stays listed, with
    ``revoked_at``. Admin only."""
    await ctx().keys.revoke(key_id)
    return Response(status=204)
