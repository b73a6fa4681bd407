"""/ui: the dashboard. Sign-in with the API key, then one page shell whose JS modules (shipped in the wheel, no build
step, no CDN) read and act through the JSON API with the session cookie.

Pages and assets need a session (or the key): ``gyoza.server.app`` checks that before any route here runs and sends
a browser without one to the sign-in page.
"""

from __future__ import annotations

import functools
import html
import re
from pathlib import Path
from string import Template
from urllib.parse import quote

from quart import Blueprint, Response, current_app, request, send_from_directory
from quart_schema import hide

from gyoza.server.bodies import RequestScope
from gyoza.server.ui.sessions import SESSION_COOKIE, SESSION_MAX_AGE_S, Sessions

UI_PATH = "/ui"
SIGN_IN_PATH = "/ui/sign-in"
ASSETS_PATH = "/ui/assets"
SESSIONS = "gyoza.ui.sessions"  # app.extensions key of the Sessions
# The page templates; the files browsers load are in its assets/ folder.
STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "ui"
ASSETS_DIR = STATIC_DIR / "assets"
# Where a sign-in may send the browser on: a dashboard path of this server, never another site.
# No segment starts with a dot, so "/ui/../x" cannot climb out of the dashboard.
_NEXT = re.compile(r"/ui(/[A-Za-z0-9_\-][A-Za-z0-9_\-.]*)*(\?[A-Za-z0-9_\-.=&%+]*)?")
_HOME = "/ui/runs"
# The pages load only this server's files and call only its API; no page of the dashboard may be framed.
_CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# The sign-in page carries its few styles inline: it is the one page shown without a session, assets included.
_SIGN_IN_CSP = _CSP + "; style-src 'unsafe-inline'"

blueprint = Blueprint("ui", __name__)


def is_page(scope: RequestScope) -> bool:
    """A dashboard page a browser navigates to (not an asset, not an action)."""
    path: str = scope["path"]
    dashboard = path == UI_PATH or path.startswith(UI_PATH + "/")
    return dashboard and scope.get("method") in ("GET", "HEAD") and not path.startswith(ASSETS_PATH + "/")


def sign_in_redirect(next_path: str) -> Response:
    """To the sign-in page, which sends the browser back to ``next_path`` once signed in."""
    target = next_path.rstrip("?")
    return _redirect(f"{SIGN_IN_PATH}?next={quote(target, safe='/')}" if _NEXT.fullmatch(target) else SIGN_IN_PATH)


def _sessions() -> Sessions:
    sessions: Sessions = current_app.extensions[SESSIONS]
    return sessions


def _redirect(location: str) -> Response:
    return Response(status=303, headers={"Location": location})


@functools.cache
def _template(name: str) -> Template:
    return Template((STATIC_DIR / name).read_text())


def _page(body: str, status: int = 200, csp: str = _CSP) -> Response:
    response = Response(body, status=status, content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = csp
    response.headers["Cache-Control"] = "no-store"
    return response


def _sign_in_page(next_path: str, error: str = "", status: int = 200) -> Response:
    values = {
        "next": html.escape(next_path if _NEXT.fullmatch(next_path) else _HOME),
        "error": f'<p class="error" role="alert">{html.escape(error)}</p>' if error else "",
    }
    return _page(_template("sign-in.html").substitute(values), status, _SIGN_IN_CSP)


@blueprint.get(SIGN_IN_PATH)
@hide
async def sign_in_form() -> Response:
    return _sign_in_page(request.args.get("next", ""))


@blueprint.post(SIGN_IN_PATH)
@hide
async def sign_in() -> Response:
    """The key from the form, compared in constant time; right: a session cookie and on to the page asked for."""
    form = await request.form
    next_path = form.get("next", "")
    if not _sessions().key_matches(form.get("api_key", "")):
        return _sign_in_page(next_path, "Wrong API key.", 401)
    response = _redirect(next_path if _NEXT.fullmatch(next_path) else _HOME)
    response.set_cookie(
        SESSION_COOKIE,
        _sessions().new_cookie(),
        max_age=SESSION_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.scheme == "https",
    )
    return response


@blueprint.post("/ui/sign-out")
@hide
async def sign_out() -> Response:
    response = Response(status=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict")
    return response


@blueprint.get(UI_PATH)
@blueprint.get(UI_PATH + "/")
@hide
async def home() -> Response:
    return _redirect(_HOME)


@blueprint.get("/ui/runs")
@blueprint.get("/ui/runs/<run_id>")
@blueprint.get("/ui/queue")
@blueprint.get("/ui/workers")
@blueprint.get("/ui/definitions")
@blueprint.get("/ui/definitions/<name>")
@hide
async def shell(run_id: str = "", name: str = "") -> Response:
    """Every page is this shell; ``app.js`` picks the page module from the path. The CSRF token of the session is
    handed to the page here (the cookie itself is HttpOnly: scripts never see it)."""
    session_id = _sessions().scope_session(request.scope)
    token = _sessions().csrf_token(session_id) if session_id else ""
    return _page(_template("shell.html").substitute(csrf_token=html.escape(token)))


@blueprint.get(f"{ASSETS_PATH}/<path:name>")
@hide
async def asset(name: str) -> Response:
    """A dashboard file (404 for anything else: send_from_directory keeps to the directory)."""
    response = await send_from_directory(ASSETS_DIR, name)
    response.headers["Cache-Control"] = "no-cache"  # revalidated each time: an upgrade never serves stale modules
    return response
