"""Dashboard sessions: a signed cookie that proves a sign-in with the API key, and the CSRF token bound to it.

The cookie holds a random session id, signed (itsdangerous) with the data dir's secret and salted with a digest
of the API key, so changing the key signs every browser out. Nothing is stored server-side: any process of a pool
checks any cookie. A cookie authenticates reads on its own; a state-changing request must also carry
``X-CSRF-Token``, an HMAC of the session id that only a page of this server is given (another site's request gets
the cookie attached by the browser, but cannot read the token).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from itsdangerous import BadData, URLSafeTimedSerializer
from werkzeug.http import parse_cookie

from gyoza.errors import CsrfTokenInvalid, GyozaError, Unauthorized
from gyoza.server.bodies import RequestScope

SESSION_COOKIE = "gyoza_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_MAX_AGE_S = 12 * 3600
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_COOKIE = b"cookie"
_CSRF = CSRF_HEADER.lower().encode()


class Sessions:
    def __init__(self, secret: bytes, api_key: str) -> None:
        self._api_key = api_key.encode()
        key_digest = hashlib.sha256(self._api_key).hexdigest()
        self._serializer = URLSafeTimedSerializer(secret, salt=f"gyoza-ui-session.{key_digest}")
        self._csrf_key = hmac.new(secret, b"gyoza-ui-csrf", hashlib.sha256).digest()

    def key_matches(self, given: str) -> bool:
        """Whether a sign-in gave the API key (constant time)."""
        return hmac.compare_digest(given.encode(), self._api_key)

    def new_cookie(self) -> str:
        """The signed value of a fresh session's cookie."""
        return self._serializer.dumps({"sid": secrets.token_urlsafe(18)})

    def session_id(self, cookie: str) -> str | None:
        """The session id a cookie value carries; None when it is forged, altered, expired or for another key."""
        try:
            data: Any = self._serializer.loads(cookie, max_age=SESSION_MAX_AGE_S)
        except BadData:
            return None
        sid = data.get("sid") if isinstance(data, dict) else None
        return sid if isinstance(sid, str) else None

    def csrf_token(self, session_id: str) -> str:
        return hmac.new(self._csrf_key, session_id.encode(), hashlib.sha256).hexdigest()

    def scope_session(self, scope: RequestScope) -> str | None:
        """The session id of a request's cookie, if it has a valid one."""
        raw = b"; ".join(value for name, value in scope["headers"] if name == _COOKIE)
        cookie = parse_cookie(raw.decode("latin-1")).get(SESSION_COOKIE) if raw else None
        return self.session_id(cookie) if cookie else None

    def admits(self, scope: RequestScope) -> bool:
        """A valid session, plus its CSRF token when the method changes state. Only asked when there is no key."""
        session_id = self.scope_session(scope)
        if session_id is None:
            return False
        if scope.get("method", "GET") in _SAFE_METHODS:
            return True
        given = b"".join(value for name, value in scope["headers"] if name == _CSRF)
        return hmac.compare_digest(given, self.csrf_token(session_id).encode())

    def refusal(self, scope: RequestScope) -> GyozaError:
        """Why a request that ``admits`` (and the key check) turned away was refused."""
        if self.scope_session(scope) is not None:
            return CsrfTokenInvalid(
                f"a dashboard session must send its {CSRF_HEADER} header with a state-changing request"
            )
        if any(name == _COOKIE for name, _ in scope["headers"]):
            return Unauthorized("missing or wrong X-API-Key header, and no valid dashboard session; sign in again")
        return Unauthorized("missing or wrong X-API-Key header")
