"""The API docs page in a real browser: Debian's chromium driven by Playwright, every non-server request refused.

Skips where chromium is not installed, except in CI (GYOZA_REQUIRE_BROWSER=1), where a missing browser fails.
Set GYOZA_SCREENSHOTS=<dir> to keep the screenshot for a look.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Route, async_playwright

from tests.processes import GyozaServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless, as root, and quiet: without the background-networking flags chromium dials Google's hosts at start.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_or_skip() -> str:
    if not Path(CHROMIUM).exists():
        if os.environ.get("GYOZA_REQUIRE_BROWSER"):
            pytest.fail(f"GYOZA_REQUIRE_BROWSER is set but {CHROMIUM} is missing")
        pytest.skip("chromium is not installed")
    return CHROMIUM


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    shots = Path(os.environ.get("GYOZA_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    return shots


async def test_the_docs_page_renders_every_operation_with_no_outside_request(
    server: GyozaServer, screenshots: Path
) -> None:
    executable = chromium_or_skip()
    outside: list[str] = []

    async def only_the_server(route: Route) -> None:
        if route.request.url.startswith(server.url):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.route("**/*", only_the_server)
            await page.goto(f"{server.url}/docs")
            # Swagger UI draws one .opblock per operation once it has loaded /openapi.json and its own scripts.
            await page.wait_for_selector(".opblock", timeout=20_000)
            operations = await page.locator(".opblock").count()
            title = await page.locator(".info .title").inner_text()
            await page.screenshot(path=str(screenshots / "docs.png"))
        finally:
            await browser.close()
    assert outside == []
    assert "Gyoza" in title
    openapi = (await _openapi(server))["paths"]
    assert operations == sum(len(methods) for methods in openapi.values())


async def _openapi(server: GyozaServer) -> dict[str, dict[str, dict[str, object]]]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        document: dict[str, dict[str, dict[str, object]]] = (await http.get("/openapi.json")).json()
    return document
