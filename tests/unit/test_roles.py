"""The roles table (gyoza.core.roles): every route has an entry, and each role gets the verdicts docs/keys.md gives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gyoza.core.roles import BOOTSTRAP, PUBLIC, ROUTES, Principal, refusal, rule_for, worker_refusal
from gyoza.schema import KeyScope, Role
from gyoza.server.app import PUBLIC_PATHS, create_app
from gyoza.settings import Settings

PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")  # Quart's <run_id>, as OpenAPI writes it: {run_id}
READ = Principal(Role.READ, KeyScope(), "r")
SUBMIT = Principal(Role.SUBMIT, KeyScope(), "s")
LIMITED = Principal(Role.SUBMIT, KeyScope(definitions=["alpha", "beta"]), "l")
WORKER = Principal(Role.WORKER, KeyScope(worker_id="w1"), "w")


def verdict(principal: Principal, method: str, template: str, **path: str) -> str | None:
    return refusal(principal, rule_for(method, template), path, {})


def test_every_route_of_the_app_has_an_entry_and_no_entry_is_stale(tmp_path: Path) -> None:
    app = create_app(Settings.load(api_key="k", data_dir=tmp_path))
    routes = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    assert len(routes) > 40
    assert sorted(routes - ROUTES.keys()) == [], "a route without a rule in gyoza/core/roles.py"
    assert sorted(ROUTES.keys() - routes) == [], "a rule for a route that does not exist"


def test_public_rules_are_the_public_paths() -> None:
    public = {template for (_, template), rule in ROUTES.items() if rule is PUBLIC}
    assert {p for p in public if "<" not in p} == set(PUBLIC_PATHS)


def test_admin_may_do_everything() -> None:
    for method, template in ROUTES:
        assert refusal(BOOTSTRAP, ROUTES[method, template], {"worker_id": "any", "name": "any"}, {}) is None


def test_read_gets_but_never_writes_nor_keys() -> None:
    assert verdict(READ, "GET", "/runs") is None
    assert verdict(READ, "HEAD", "/runs/<run_id>") is None
    assert verdict(READ, "POST", "/runs") == "this needs the submit role; the key has read"
    assert verdict(READ, "GET", "/keys") == "this needs the admin role; the key has read"
    assert verdict(READ, "POST", "/workers/<worker_id>/heartbeat", worker_id="w1") == (
        "this needs the worker role; the key has read"
    )


def test_submit_creates_cancels_and_reads_but_does_not_deploy() -> None:
    for method, template in [("POST", "/runs"), ("POST", "/runs/<run_id>/cancel"), ("PATCH", "/runs/<run_id>")]:
        assert verdict(SUBMIT, method, template) is None
    assert verdict(SUBMIT, "GET", "/runs/<run_id>/attempts") is None
    assert verdict(SUBMIT, "POST", "/definitions") == "this needs the admin role; the key has submit"
    assert verdict(SUBMIT, "POST", "/runs/<run_id>/events") == "this needs the worker role; the key has submit"


def test_a_limited_submit_key_creates_runs_of_its_definitions_only() -> None:
    assert verdict(LIMITED, "POST", "/definitions/<name>/runs", name="alpha") is None
    assert verdict(LIMITED, "POST", "/definitions/<name>/runs/batch", name="beta") is None
    refused = verdict(LIMITED, "POST", "/definitions/<name>/runs", name="gamma")
    assert refused == "this key creates runs only of the definitions alpha, beta, not of gamma"
    for template in ("/runs", "/runs/batch"):
        assert "ad hoc runs need an unlimited submit key" in (verdict(LIMITED, "POST", template) or "")
    assert verdict(LIMITED, "POST", "/runs/<run_id>/retry") is None


def test_a_worker_key_acts_only_as_its_worker() -> None:
    for template in ("/workers/<worker_id>/heartbeat", "/workers/<worker_id>/claim"):
        assert verdict(WORKER, "POST", template, worker_id="w1") is None
        assert verdict(WORKER, "POST", template, worker_id="w2") == (
            "this key acts only as worker w1; the request names worker w2"
        )
    upload = rule_for("PUT", "/runs/<run_id>/logs")
    assert refusal(WORKER, upload, {}, {"worker_id": "w1"}) is None
    assert refusal(WORKER, upload, {}, {}) == "this key acts only as worker w1; the request names no worker_id"
    assert verdict(WORKER, "GET", "/runs") == "this needs the read role; the key has worker"
    assert verdict(WORKER, "POST", "/workers/<worker_id>/drain", worker_id="w1") is not None


@pytest.mark.parametrize("claimed", ["w2", "", None, 7])
def test_a_worker_body_naming_another_worker_is_refused(claimed: object) -> None:
    assert worker_refusal(WORKER, "w1") is None
    assert worker_refusal(WORKER, claimed) is not None
    assert worker_refusal(BOOTSTRAP, claimed) is None


def test_an_unknown_route_needs_admin() -> None:
    assert verdict(READ, "GET", "/no/such/route") == "this needs the admin role; the key has read"


def test_the_docs_route_table_is_the_roles_table() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "keys.md").read_text().split("## Every route")[1]
    rows = dict(re.findall(r"^\| `([A-Z]+ /[^`]*)` \| ([^|]+) \|", docs, re.M))
    needs = {None: "public (no key)", Role.ADMIN: "admin", Role.READ: "read, submit, admin",
             Role.SUBMIT: "submit, admin", Role.WORKER: "worker, admin"}  # fmt: skip
    documented = {
        method + " " + PARAMETER.sub(r"{\1}", template): needs[rule.needs]
        for (method, template), rule in ROUTES.items()
        if not template.startswith(("/ui", "/docs", "/static", "/openapi"))
    }
    assert {route: roles.strip() for route, roles in rows.items()} == documented
