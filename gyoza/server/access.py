"""Who a request is and whether its role allows it (docs/keys.md): the checks every request passes first.

``Authenticator`` runs in the ASGI body guard (before any body is read) and again in the first ``before_request``
hook; the answer is kept on the request's scope, so each request is authenticated once. The bootstrap key from
the config is checked first (constant time) and is admin; then a scoped key, looked up in the process's
``KeyRing`` (a dict, no NATS round trip); then a dashboard session, which only the bootstrap key can open and
which is therefore admin too.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, cast

from quart import request

from gyoza.core.roles import BOOTSTRAP, Principal, Rule, WorkerIdAt, refusal, rule_for, worker_refusal
from gyoza.errors import Forbidden
from gyoza.schema import Role
from gyoza.server.bodies import RequestScope
from gyoza.server.ui.sessions import Sessions
from gyoza.services.keys import KeyRing

PRINCIPAL = "gyoza.principal"  # the request scope's entry: the Principal, or None when nobody is
_API_KEY = b"x-api-key"


class Authenticator:
    def __init__(self, api_key: str, ring: KeyRing, sessions: Sessions) -> None:
        self._expected = api_key.encode()
        self.ring = ring
        self._sessions = sessions

    def principal(self, scope: RequestScope) -> Principal | None:
        held = cast(dict[str, Any], scope)
        if PRINCIPAL not in held:
            held[PRINCIPAL] = self._find(scope)
        found: Principal | None = held[PRINCIPAL]
        return found

    def _find(self, scope: RequestScope) -> Principal | None:
        given = b"".join(value for name, value in scope["headers"] if name == _API_KEY)
        if hmac.compare_digest(given, self._expected):
            return BOOTSTRAP
        scoped = self.ring.principal(given) if given else None
        if scoped is not None:
            return scoped
        # Looked at only when no key is right, so that a key-carrying call pays nothing for it.
        return BOOTSTRAP if self._sessions.admits(scope) else None


def _route_rule() -> Rule | None:
    """The rule of the route this request matched; None when it matched none (it gets its 404 or 405)."""
    return rule_for(request.method, request.url_rule.rule) if request.url_rule is not None else None


def request_owner() -> str | None:
    """The scoped key this request came with (its runs count against that key's quota), None for the bootstrap
    key or a dashboard session."""
    principal: Principal | None = cast(dict[str, Any], request.scope).get(PRINCIPAL)
    return None if principal is None else principal.key_id


def check_role(principal: Principal) -> None:
    """403 FORBIDDEN naming the role needed, when the key's role or scope does not allow the request."""
    if principal.role is Role.ADMIN:
        return
    rule = _route_rule()
    reason = None if rule is None else refusal(principal, rule, request.view_args or {}, request.args)
    if reason is not None:
        raise _forbidden(reason)


async def check_worker_in_body() -> None:
    """A worker key's events and log lines name their worker in the body: it must be the key's own (a body naming
    none, or naming it twice, is refused). Runs once the body's size was checked."""
    principal: Principal | None = cast(dict[str, Any], request.scope).get(PRINCIPAL)
    if principal is None or principal.role is not Role.WORKER:
        return
    rule = _route_rule()
    if rule is None or rule.worker_id_at is not WorkerIdAt.BODY:
        return
    raw = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    named = _top_level_worker_ids(raw)
    reason = worker_refusal(principal, named[0] if named else None)
    if reason is None and len(named) > 1:
        reason = (
            f"this key acts only as worker {principal.scope.worker_id}; the body names worker_id {len(named)} times"
        )
    if reason is not None:
        raise _forbidden(reason)


def _top_level_worker_ids(raw: bytes) -> list[object]:
    """Every ``worker_id`` of the body's top-level object, repeats included (JSON parsers differ on which of
    several they keep): the pairs hook keeps each object as its pairs, and the top level is the one returned."""
    try:
        parsed = json.loads(raw, object_pairs_hook=lambda pairs: pairs)
    except ValueError:
        return []
    if not isinstance(parsed, list) or not all(isinstance(pair, tuple) for pair in parsed):
        return []  # not an object (a JSON array holds no tuples)
    return [value for key, value in parsed if key == "worker_id"]


def _forbidden(reason: str) -> Forbidden:
    return Forbidden(reason, [{"field": "X-API-Key", "problem": reason}])
