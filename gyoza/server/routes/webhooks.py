"""/runs/{id}/deliveries: a run's webhook deliveries, and asking for one again (docs/webhooks.md)."""

from __future__ import annotations

import re

from quart import Blueprint, Response
from quart_schema import document_response

from gyoza.errors import NotFound
from gyoza.schema import DeliveryList, WebhookDelivery, known_fields
from gyoza.server.context import ctx
from gyoza.server.http import checked_run_id, json_response, refusals

blueprint = Blueprint("webhooks", __name__)

# ``<event id>-<webhook index>`` (see gyoza.core.webhooks.delivery_id).
_DELIVERY_ID = re.compile(r"[0-9]{1,12}-[0-9]{1,2}")


@blueprint.get("/runs/<run_id>/deliveries")
@document_response(DeliveryList)
@refusals(404)
async def list_deliveries(run_id: str) -> Response:
    """A run's webhook deliveries, each with its state and attempts.

    In the order they were queued; each attempt with its status code or error. States: PENDING, RETRYING (tried
    again at ``next_attempt_at``), DELIVERED, FAILED.
    """
    context = ctx()
    record = await context.runs.get(checked_run_id(run_id))
    return json_response(known_fields(await context.webhooks.deliveries(record.id)))


@blueprint.post("/runs/<run_id>/deliveries/<delivery_id>/redeliver")
@document_response(WebhookDelivery, 202)
@refusals(404)
async def redeliver(run_id: str, delivery_id: str) -> Response:
    """Deliver a webhook delivery again, now.

    A new round of attempts with the same body and delivery id, whatever the delivery's state; a retry still waiting
    in an older round is dropped. 202 once the round is queued.
    """
    context = ctx()
    record = await context.runs.get(checked_run_id(run_id))
    if not _DELIVERY_ID.fullmatch(delivery_id):
        raise NotFound(f"run {record.id} has no webhook delivery {delivery_id!r}")
    return json_response(known_fields(await context.webhooks.redeliver(record, delivery_id)), 202)
