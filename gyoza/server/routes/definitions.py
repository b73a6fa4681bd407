"""/definitions: deploy, read, list and delete op definitions; create runs from them."""

from __future__ import annotations

from pydantic import BaseModel
from quart import Blueprint, Response, request
from quart_schema import document_querystring, document_request, document_response

from gyoza.core.sizing import summarise
from gyoza.core.views import run_view
from gyoza.schema import (
    AttemptUsage,
    DefinitionList,
    DefinitionUsage,
    NoContent,
    OpDefinition,
    OpDefinitionIn,
    OpRun,
    RunFromDefinitionIn,
    known_fields,
)
from gyoza.server.access import request_owner
from gyoza.server.context import ctx
from gyoza.server.http import checked_name, json_response, list_response, query_bool, read_body, refusals
from gyoza.server.sse import CreateRunQuery, create_wait
from gyoza.services.livestreams import until_terminal

# GET /definitions/{name}/usage sums up this many of the newest measured attempts.
USAGE_ATTEMPTS = 500

blueprint = Blueprint("definitions", __name__)


class ListDefinitionsQuery(BaseModel):
    all_versions: bool = False


class GetDefinitionQuery(BaseModel):
    version: str | None = None


@blueprint.post("/definitions")
@document_request(OpDefinitionIn)
@document_response(OpDefinition, 201)
@document_response(OpDefinition, 200)
@refusals(400, 409, 413, 415)
async def deploy() -> Response:
    """Deploy a definition version: 201 new, 200 identical re-post, 409 different content for a stored version."""
    body = await read_body(OpDefinitionIn)
    await ctx().secrets.check_named(body.secrets)
    definition, created = await ctx().definitions.deploy(body)
    return json_response(known_fields(definition), 201 if created else 200)


@blueprint.get("/definitions")
@document_querystring(ListDefinitionsQuery)
@document_response(DefinitionList)
@refusals(400)
async def list_definitions() -> Response:
    """The latest version of each definition, or every version with ``all_versions=true``."""
    return list_response(ctx().index.list_definitions(query_bool("all_versions")))


@blueprint.get("/definitions/<name>")
@document_querystring(GetDefinitionQuery)
@document_response(OpDefinition)
@refusals(404)
async def get_definition(name: str) -> Response:
    """One version of a definition: the latest, or the one given as ``version``."""
    version = request.args.get("version")
    return json_response(known_fields(await ctx().definitions.get(checked_name(name), version)))


@blueprint.get("/definitions/<name>/usage")
@document_response(DefinitionUsage)
@refusals(404)
async def definition_usage(name: str) -> Response:
    """What its last finished attempts (up to 500, any version) really used, measured by their workers: p50, p95
    and max of the peaks, its current request, and a ``suggested`` one that would have fit 95 % of them with 20 %
    to spare."""
    context = ctx()
    definition = await context.definitions.get(checked_name(name))
    measured = context.index.measured_usage(name, USAGE_ATTEMPTS)
    usages = [AttemptUsage.model_validate_json(raw) for raw in measured]
    return json_response(summarise(name, usages, definition.constraints))


@blueprint.get("/definitions/<name>/versions")
@document_response(DefinitionList)
@refusals(404)
async def list_versions(name: str) -> Response:
    """Every version of a definition, newest first."""
    versions = await ctx().definitions.versions(checked_name(name))
    return json_response(known_fields(DefinitionList(data=versions)))


@blueprint.delete("/definitions/<name>")
@document_response(NoContent, 204)
@refusals(404)
async def delete_definition(name: str) -> Response:
    """Delete a definition: new runs of it get 404; existing runs keep their copy."""
    await ctx().definitions.delete(checked_name(name))
    return Response(status=204)


@blueprint.post("/definitions/<name>/runs")
@document_querystring(CreateRunQuery)
@document_request(RunFromDefinitionIn)
@document_response(OpRun, 201)
@document_response(OpRun, 200)
@refusals(400, 404, 413, 415)
async def create_run(name: str) -> Response:
    """Create a run of the latest (or the given) version; 400 lists every input problem.

    A run may override the definition's constraints, retry_policy, timeout_seconds, tags and env; its image,
    command, specs and event delivery are set by the definition (a 400 says so).
    """
    wait = create_wait()
    body = await read_body(RunFromDefinitionIn)
    record, created = await ctx().runs.create_from_definition(
        checked_name(name), body, request.headers.get("Idempotency-Key"), request_owner()
    )
    record = await until_terminal(ctx().runs, ctx().stream_hub, record, wait)
    return json_response(run_view(record), 201 if created else 200)
