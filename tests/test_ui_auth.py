"""The dashboard's sign-in over HTTP: the session cookie, what needs it, and the CSRF guard on state changes.

Against the shared live server: the key signs in (a signed HttpOnly SameSite=Strict cookie), a wrong one does not;
pages send a browser without a session to sign in, assets and API calls answer 401; a session authenticates API
calls on its own for reads, and for changes only with its X-CSRF-Token; X-API-Key calls work exactly as before.
"""

from __future__ import annotations

import re
import stat
import zipfile
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from gyoza.server.ui.secret import SECRET_FILE, load_secret
from gyoza.server.ui.sessions import Sessions
from tests.api_checks import NoTrace, error_of
from tests.processes import API_KEY, GyozaServer

PAGES = ["/ui/runs", "/ui/runs/00000000-0000-4000-8000-000000000000", "/ui/queue", "/ui/workers", "/ui/definitions",
         "/ui/definitions/some-op"]  # fmt: skip
ASSETS = ["/ui/assets/app.css", "/ui/assets/js/app.js", "/ui/assets/js/api.js"]
_CSRF_META = re.compile(r'<meta name="csrf-token" content="([0-9a-f]+)">')


async def sign_in(http: httpx.AsyncClient, key: str = API_KEY, next_path: str = "") -> httpx.Response:
    return await http.post("/ui/sign-in", data={"api_key": key, "next": next_path})


@pytest.fixture
async def browser(server: GyozaServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no key, like a browser: it keeps cookies and does not follow redirects."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        yield http


@pytest.fixture
async def signed_in(browser: httpx.AsyncClient) -> httpx.AsyncClient:
    assert (await sign_in(browser)).status_code == 303
    return browser


async def csrf_token(http: httpx.AsyncClient) -> str:
    page = await http.get("/ui/runs")
    assert page.status_code == 200, page.text
    found = _CSRF_META.search(page.text)
    assert found is not None, page.text
    return found.group(1)


async def test_the_sign_in_page_is_public(browser: httpx.AsyncClient) -> None:
    page = await browser.get("/ui/sign-in")
    assert page.status_code == 200
    assert 'name="api_key"' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_the_key_signs_in_with_a_strict_http_only_cookie(browser: httpx.AsyncClient) -> None:
    response = await sign_in(browser, next_path="/ui/workers")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/workers"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("gyoza_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here: a Secure cookie would never be sent back
    assert (await browser.get("/ui/workers")).status_code == 200


@pytest.mark.parametrize("key", ["wrong", "", API_KEY + "x"], ids=["wrong", "empty", "longer"])
async def test_a_wrong_key_does_not_sign_in(browser: httpx.AsyncClient, key: str) -> None:
    response = await sign_in(browser, key)
    assert response.status_code == 401
    assert "Wrong API key." in response.text
    assert "set-cookie" not in response.headers
    assert (await browser.get("/ui/runs")).status_code == 303


async def test_sign_in_returns_to_the_page_asked_for_even_after_a_wrong_key(browser: httpx.AsyncClient) -> None:
    asked = "/ui/runs?state=FAILED&worker_id=gpu-box-1"
    sent = await browser.get(asked)
    assert sent.status_code == 303
    form = await browser.get(sent.headers["location"])
    assert f'name="next" value="{asked.replace("&", "&amp;")}"' in form.text
    wrong = await sign_in(browser, "wrong", asked)
    assert f'name="next" value="{asked.replace("&", "&amp;")}"' in wrong.text
    right = await sign_in(browser, API_KEY, asked)
    assert right.headers["location"] == asked


async def test_sign_in_goes_on_only_to_a_dashboard_page(browser: httpx.AsyncClient) -> None:
    for outside in ["https://evil.example/", "//evil.example/ui", "/runs", "/ui/../runs"]:
        response = await sign_in(browser, next_path=outside)
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/runs", outside


async def test_pages_without_a_session_send_the_browser_to_sign_in(browser: httpx.AsyncClient) -> None:
    for path in PAGES:
        response = await browser.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"] == f"/ui/sign-in?next={path}"


async def test_assets_and_actions_without_a_session_are_401(browser: httpx.AsyncClient) -> None:
    for path in ASSETS:
        error_of(await browser.get(path), 401, "UNAUTHORIZED")
    error_of(await browser.post("/ui/sign-out"), 401, "UNAUTHORIZED")
    error_of(await browser.get("/runs"), 401, "UNAUTHORIZED")


async def test_a_forged_or_altered_cookie_is_no_session(server: GyozaServer, browser: httpx.AsyncClient) -> None:
    real = (await sign_in(browser)).cookies["gyoza_session"]
    altered = real[:10] + ("x" if real[10] != "x" else "y") + real[11:]
    for value in ["forged", altered]:
        async with httpx.AsyncClient(base_url=server.url, headers={"Cookie": f"gyoza_session={value}"}) as forger:
            assert (await forger.get("/ui/runs")).status_code == 303
            error_of(await forger.get("/ui/assets/app.css"), 401, "UNAUTHORIZED")
            error = error_of(await forger.get("/runs"), 401, "UNAUTHORIZED")
            assert "sign in again" in error["message"]


async def test_a_session_reads_pages_assets_and_the_api(signed_in: httpx.AsyncClient) -> None:
    for path in PAGES:
        page = await signed_in.get(path)
        assert page.status_code == 200, path
        assert page.headers["cache-control"] == "no-store"
    for path in ASSETS:
        assert (await signed_in.get(path)).status_code == 200, path
    assert (await signed_in.get("/ui/assets/../routes/ui.py")).status_code == 404
    listed = await signed_in.get("/runs")
    assert listed.status_code == 200
    assert listed.json()["object"] == "list"


async def test_a_cookie_authenticated_change_needs_the_csrf_token(
    signed_in: httpx.AsyncClient, nothing_written: NoTrace
) -> None:
    body = {"image": "alpine:3", "tags": ["ui-auth-never-placed"]}
    async with nothing_written():
        for headers in [{}, {"X-CSRF-Token": "0" * 64}, {"X-CSRF-Token": ""}]:
            refused = await signed_in.post("/runs", json=body, headers=headers)
            error = error_of(refused, 403, "CSRF_TOKEN_INVALID")
            assert "X-CSRF-Token" in error["message"]
    created = await signed_in.post("/runs", json=body, headers={"X-CSRF-Token": await csrf_token(signed_in)})
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    cancelled = await signed_in.post(f"/runs/{run_id}/cancel", headers={"X-CSRF-Token": await csrf_token(signed_in)})
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "CANCELLED"


async def test_one_session_token_does_not_fit_another(server: GyozaServer, signed_in: httpx.AsyncClient) -> None:
    token = await csrf_token(signed_in)
    async with httpx.AsyncClient(base_url=server.url) as other:
        await sign_in(other)
        assert await csrf_token(other) != token
        refused = await other.post("/runs", json={"image": "alpine:3"}, headers={"X-CSRF-Token": token})
        error_of(refused, 403, "CSRF_TOKEN_INVALID")


async def test_the_key_works_as_before_with_or_without_a_cookie(
    signed_in: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    # A key-carrying call needs no CSRF token, whatever cookie rides along.
    tags = ["ui-auth-never-placed"]
    created = await signed_in.post("/runs", json={"image": "alpine:3", "tags": tags}, headers={"X-API-Key": API_KEY})
    assert created.status_code == 201, created.text
    plain = await client.post(f"/runs/{created.json()['id']}/cancel")
    assert plain.status_code == 200
    assert (await client.get("/ui/assets/app.css")).status_code == 200


async def test_sign_out_ends_the_session_in_the_browser(signed_in: httpx.AsyncClient) -> None:
    token = await csrf_token(signed_in)
    error_of(await signed_in.post("/ui/sign-out"), 403, "CSRF_TOKEN_INVALID")
    out = await signed_in.post("/ui/sign-out", headers={"X-CSRF-Token": token})
    assert out.status_code == 204
    assert 'gyoza_session=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    assert (await signed_in.get("/ui/runs")).status_code == 303


async def test_the_session_secret_is_private_to_its_user(server: GyozaServer) -> None:
    mode = (server.data_dir / SECRET_FILE).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_the_wheel_carries_the_dashboard(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for asset in ["app.css", "js/app.js", "js/api.js", "js/pages/run.js"]:
        assert f"gyoza/server/static/ui/assets/{asset}" in names
    assert "gyoza/server/static/ui/shell.html" in names


def test_every_process_of_a_pool_gets_the_same_secret(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: load_secret(data_dir), range(32)))
    assert len(secrets) == 1
    (secret,) = secrets
    assert len(secret) == 64
    assert load_secret(data_dir) == secret
    assert sorted(p.name for p in data_dir.iterdir()) == [SECRET_FILE]  # no draft left behind


def test_a_new_key_or_secret_ends_every_session() -> None:
    sessions = Sessions(b"a" * 64, "key-1")
    cookie = sessions.new_cookie()
    session_id = sessions.session_id(cookie)
    assert session_id is not None
    assert Sessions(b"a" * 64, "key-1").session_id(cookie) == session_id  # another process of the pool
    assert Sessions(b"a" * 64, "key-2").session_id(cookie) is None
    assert Sessions(b"b" * 64, "key-1").session_id(cookie) is None
    assert sessions.csrf_token(session_id) != Sessions(b"b" * 64, "key-1").csrf_token(session_id)
