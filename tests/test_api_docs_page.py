"""The /docs page works offline (issue 14.7): it and every asset it loads come from the server, out of the wheel."""

from __future__ import annotations

import re
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import httpx

from tests.processes import GyozaServer

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE", "swagger-ui-bundle.js.LICENSE.txt")


class References(HTMLParser):
    """Every URL the page makes a browser load: ``src`` and ``href`` attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


async def test_docs_page_and_its_assets_come_from_the_server(server: GyozaServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as keyless:  # a browser sends no key
        page = await keyless.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert not re.search(r"https?://|//[a-z]", page.text), "the page must not load anything from elsewhere"
        parser = References()
        parser.feed(page.text)
        loaded = [url for url in parser.urls if not url.startswith("data:")]
        assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(loaded)
        for url in loaded:
            asset = await keyless.get(url)
            assert asset.status_code == 200 and asset.content, url
        bundle = await keyless.get("/docs/assets/swagger-ui-bundle.js")
        assert "javascript" in bundle.headers["content-type"]
        assert b"SwaggerUIBundle" in bundle.content
        assert (await keyless.get("/docs/assets/swagger-ui.css")).headers["content-type"].startswith("text/css")
        # What the page's script fetches: the description, also without a key.
        assert "/openapi.json" in page.text
        assert (await keyless.get("/openapi.json")).status_code == 200
        assert b"Apache License" in (await keyless.get("/docs/assets/LICENSE")).content


async def test_only_the_docs_assets_are_public(server: GyozaServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as keyless:
        assert (await keyless.get("/docs/assets/no-such-file.js")).status_code == 404
        assert (await keyless.get("/docs/assets/../app.py")).status_code in (401, 404)
        assert (await keyless.get("/docs/assetsx")).status_code == 401


def test_the_wheel_ships_the_docs_assets(wheel: zipfile.ZipFile) -> None:
    shipped = set(wheel.namelist())
    assert {f"gyoza/server/static/swagger-ui/{name}" for name in ASSETS} <= shipped
