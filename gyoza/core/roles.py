"""What each role of an API key may do (docs/keys.md): one table from every route to the role it needs.

Pure: the server asks ``refusal`` before a route runs and gets None (allowed) or the sentence of its 403. ``admin``
may do everything; ``read`` every GET but the keys' and the secrets'; ``submit`` what ``read`` may, plus creating
runs (only of its definitions when it is limited to some, and then no ad hoc runs), cancel, retry, reprioritise and
redeliver;
``worker`` only what a REST worker sends (heartbeat, claim, events, logs), and only for the worker it is bound to.
A route missing from ``ROUTES`` is refused to every key but admin (and a test fails on it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from gyoza.schema.keys import KeyScope, Role


class WorkerIdAt(Enum):
    """Where a worker's request names the worker it is for."""

    PATH = "path"
    QUERY = "query"
    BODY = "body"


class Creates(Enum):
    """The runs a route creates, for a submit key limited to definitions."""

    OF_DEFINITION = "definition"  # of the path's <name>
    AD_HOC = "ad hoc"


@dataclass(frozen=True)
class Rule:
    """``needs``: the least role allowed (the one a refusal names); None: public, no key needed."""

    needs: Role | None
    worker_id_at: WorkerIdAt | None = None
    creates: Creates | None = None


@dataclass(frozen=True)
class Principal:
    """Who a request is: the bootstrap key (and a dashboard session) is ``BOOTSTRAP``; a scoped key carries its id."""

    role: Role
    scope: KeyScope
    key_id: str | None = None


BOOTSTRAP = Principal(Role.ADMIN, KeyScope())

# The roles each ``needs`` lets in (admin is let in everywhere).
_ALLOWED: dict[Role, frozenset[Role]] = {
    Role.ADMIN: frozenset({Role.ADMIN}),
    Role.READ: frozenset({Role.ADMIN, Role.SUBMIT, Role.READ}),
    Role.SUBMIT: frozenset({Role.ADMIN, Role.SUBMIT}),
    Role.WORKER: frozenset({Role.ADMIN, Role.WORKER}),
}

PUBLIC = Rule(None)
ANY_KEY = Rule(None)  # no role needed; the key is still checked, unless the path is public
ADMIN = Rule(Role.ADMIN)
READ = Rule(Role.READ)
SUBMIT = Rule(Role.SUBMIT)

RUN = "/runs/<run_id>"
WORKER = "/workers/<worker_id>"

# (method, Quart route template) -> rule. Every route of the app is here (tests/unit/test_roles.py).
ROUTES: dict[tuple[str, str], Rule] = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/assets/<path:name>"): PUBLIC,
    ("GET", "/ui/sign-in"): PUBLIC,
    ("POST", "/ui/sign-in"): PUBLIC,
    ("POST", "/ui/sign-out"): READ,
    ("GET", "/ui"): READ,
    ("GET", "/ui/"): READ,
    ("GET", "/ui/runs"): READ,
    ("GET", "/ui/runs/<run_id>"): READ,
    ("GET", "/ui/queue"): READ,
    ("GET", "/ui/workers"): READ,
    ("GET", "/ui/definitions"): READ,
    ("GET", "/ui/definitions/<name>"): READ,
    ("GET", "/ui/assets/<path:name>"): READ,
    ("GET", "/static/<path:filename>"): READ,  # Quart's own static route
    ("GET", "/metrics"): READ,
    ("POST", "/definitions"): ADMIN,
    ("GET", "/definitions/<name>/usage"): READ,
    ("GET", "/definitions"): READ,
    ("GET", "/definitions/<name>"): READ,
    ("GET", "/definitions/<name>/versions"): READ,
    ("DELETE", "/definitions/<name>"): ADMIN,
    ("POST", "/definitions/<name>/runs"): Rule(Role.SUBMIT, creates=Creates.OF_DEFINITION),
    ("POST", "/definitions/<name>/runs/batch"): Rule(Role.SUBMIT, creates=Creates.OF_DEFINITION),
    ("POST", "/runs"): Rule(Role.SUBMIT, creates=Creates.AD_HOC),
    ("POST", "/runs/batch"): Rule(Role.SUBMIT, creates=Creates.AD_HOC),
    ("POST", "/runs/cancel"): SUBMIT,
    ("POST", "/runs/retry"): SUBMIT,
    ("POST", "/runs/purge"): ADMIN,
    ("GET", "/batches/<batch_id>"): READ,
    ("GET", "/queue"): READ,
    ("GET", "/runs"): READ,
    ("GET", RUN): READ,
    ("PATCH", RUN): SUBMIT,
    ("DELETE", RUN): ADMIN,
    ("GET", RUN + "/attempts"): READ,
    ("GET", RUN + "/events"): READ,
    ("POST", RUN + "/events"): Rule(Role.WORKER, WorkerIdAt.BODY),
    ("GET", RUN + "/logs"): READ,
    ("PUT", RUN + "/logs"): Rule(Role.WORKER, WorkerIdAt.QUERY),
    ("POST", RUN + "/logs"): Rule(Role.WORKER, WorkerIdAt.BODY),
    ("POST", RUN + "/cancel"): SUBMIT,
    ("POST", RUN + "/retry"): SUBMIT,
    ("GET", RUN + "/stream"): READ,
    ("GET", RUN + "/deliveries"): READ,
    ("POST", RUN + "/deliveries/<delivery_id>/redeliver"): SUBMIT,
    ("GET", "/topics/<topic>/events"): READ,
    ("GET", "/topics/<topic>/stream"): READ,
    ("GET", "/workers"): READ,
    ("GET", WORKER): READ,
    ("POST", WORKER + "/heartbeat"): Rule(Role.WORKER, WorkerIdAt.PATH),
    ("POST", WORKER + "/claim"): Rule(Role.WORKER, WorkerIdAt.PATH),
    ("POST", WORKER + "/drain"): ADMIN,
    ("POST", "/keys"): ADMIN,
    ("GET", "/keys"): ADMIN,
    ("GET", "/keys/<key_id>"): ADMIN,
    ("DELETE", "/keys/<key_id>"): ADMIN,
    ("PUT", "/keys/<key_id>/quota"): ADMIN,
    ("PUT", "/secrets/<name>"): ADMIN,
    ("GET", "/secrets"): ADMIN,
    ("GET", "/secrets/<name>"): ADMIN,
    ("DELETE", "/secrets/<name>"): ADMIN,
    ("PUT", "/registries/<registry>"): ADMIN,
    ("GET", "/registries"): ADMIN,
    ("DELETE", "/registries/<registry>"): ADMIN,
}


def rule_for(method: str, template: str) -> Rule:
    """The route's rule; HEAD is answered like GET, and OPTIONS to every key (it tells only the methods a route
    takes, which /openapi.json publishes). A route not in the table needs admin."""
    if method == "OPTIONS":
        return ANY_KEY
    return ROUTES.get(("GET" if method == "HEAD" else method, template), ADMIN)


def refusal(principal: Principal, rule: Rule, path: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """Why ``principal`` may not make this request (the sentence of the 403), or None when it may. A worker id in
    the body is checked by the caller once the body is read (``worker_refusal``)."""
    if rule.needs is None or principal.role is Role.ADMIN:
        return None
    if principal.role not in _ALLOWED[rule.needs]:
        return f"this needs the {rule.needs} role; the key has {principal.role}"
    if rule.worker_id_at is WorkerIdAt.PATH:
        return worker_refusal(principal, path.get("worker_id"))
    if rule.worker_id_at is WorkerIdAt.QUERY:
        return worker_refusal(principal, query.get("worker_id"))
    if rule.creates is not None:
        return _definition_refusal(principal.scope, rule.creates, path.get("name", ""))
    return None


def worker_refusal(principal: Principal, worker_id: object) -> str | None:
    """A worker key acts only as its own worker; other roles allowed here (admin) act as any."""
    own = principal.scope.worker_id
    if principal.role is not Role.WORKER or worker_id == own:
        return None
    named = f"worker {worker_id}" if isinstance(worker_id, str) and worker_id else "no worker_id"
    return f"this key acts only as worker {own}; the request names {named}"


def _definition_refusal(scope: KeyScope, creates: Creates, name: str) -> str | None:
    if scope.definitions is None:
        return None
    allowed = ", ".join(scope.definitions)
    if creates is Creates.AD_HOC:
        return f"this key creates runs only of the definitions {allowed}; ad hoc runs need an unlimited submit key"
    if name not in scope.definitions:
        return f"this key creates runs only of the definitions {allowed}, not of {name}"
    return None
