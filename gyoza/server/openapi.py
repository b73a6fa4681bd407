"""The OpenAPI description, made to match what the server does in the places quart-schema cannot see.

Every operation can answer 400 (an unknown query parameter, or a bad one) and every operation behind the key can
answer 401: those come from checks that run before any route, so they are added here, to every operation, rather
than on each route. Answers that are not JSON (204, text) are documented with the ``NoContent`` and ``PlainText``
markers.
"""

from __future__ import annotations

from typing import Any

from quart_schema import OpenAPIProvider
from werkzeug.routing import Rule

from gyoza.schema import ErrorBody, EventStream, NoContent, PlainText

ERROR_DESCRIPTIONS = {
    400: "Bad request: an unknown or invalid query parameter, or an invalid body; details lists every problem",
    401: "Missing or wrong X-API-Key header",
    404: "No such resource",
    409: "Conflicts with the stored state (the message names it)",
    413: "The body is over the size limit",
    415: "The body is not JSON (send Content-Type: application/json)",
}


class GyozaOpenAPIProvider(OpenAPIProvider):
    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        error, error_components = self.build_response_object(ErrorBody, None)
        components.update(error_components)
        for operations in paths.values():
            for operation in operations.values():
                responses = operation["responses"] = dict(operation["responses"])
                responses.setdefault(400, error)
                if operation.get("security") != []:
                    responses.setdefault(401, error)
                for status, response in responses.items():
                    if int(status) in ERROR_DESCRIPTIONS:
                        responses[status] = {**response, "description": ERROR_DESCRIPTIONS[int(status)]}
        return paths, components

    def build_response_object(
        self, model: type[Any], headers_model: type[Any] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if model is NoContent:
            return {"description": "No content"}, {}
        if model is PlainText:
            text = {"text/plain": {"schema": {"type": "string"}}}
            return {"description": "Text, not JSON", "content": text}, {}
        if model is EventStream:
            events = {"text/event-stream": {"schema": {"type": "string"}}}
            return {"description": "Server-Sent Events (see the operation's description)", "content": events}, {}
        return super().build_response_object(model, headers_model)
