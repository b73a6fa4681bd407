"""The dashboard in a real browser: Debian's chromium driven by Playwright against a live server (a private cluster)
with a simulated worker that this test drives over HTTP. Every request to anything but the server is refused.

Skips where chromium is not installed, except in CI (GYOZA_REQUIRE_BROWSER=1), where a missing browser fails.
Set GYOZA_SCREENSHOTS=<dir> to keep a screenshot of each page (docs/img/ holds the README's).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, Route, ViewportSize, async_playwright, expect

from tests import test_docs_browser
from tests.processes import API_KEY
from tests.simworker import Cluster, Fleet, SimWorker, create_run, gpu, wait_run
from tests.test_docs_browser import CHROMIUM_ARGS, chromium_or_skip
from tests.waiting import until

# Where the page screenshots go: GYOZA_SCREENSHOTS, as for the docs page (docs/img/ holds the README's).
screenshots = test_docs_browser.screenshots
LAPTOP: ViewportSize = {"width": 1280, "height": 860}
PHONE: ViewportSize = {"width": 390, "height": 844}
WAIT_MS = 15_000


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_or_skip()
    expect.set_options(timeout=WAIT_MS)  # pages refresh every second: a loaded CI box may need a few
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


class Dashboard:
    """One browser tab on the cluster's server; ``outside`` lists every request it tried to send elsewhere and
    ``script_errors`` every uncaught error of the page's scripts."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url
        self.outside: list[str] = []
        self.script_errors: list[str] = []
        page.on("pageerror", lambda error: self.script_errors.append(str(error)))

    async def only_the_server(self, route: Route) -> None:
        if route.request.url.startswith(self.url):
            await route.continue_()
        else:
            self.outside.append(route.request.url)
            await route.abort()

    async def sign_in(self, key: str = API_KEY, path: str = "/ui/runs") -> None:
        await self.page.goto(self.url + path)
        await self.page.get_by_label("API key").fill(key)
        await self.page.get_by_role("button", name="Sign in").click()

    async def goto(self, path: str) -> None:
        await self.page.goto(self.url + path)


@pytest.fixture
async def dashboard(browser: Browser, cluster: Cluster) -> AsyncIterator[Dashboard]:
    context = await browser.new_context(viewport=LAPTOP)
    tab = Dashboard(await context.new_page(), cluster.url)
    await tab.page.route("**/*", tab.only_the_server)
    yield tab
    await context.close()
    assert tab.outside == []
    assert tab.script_errors == []


@pytest.fixture
async def signed_in(dashboard: Dashboard) -> Dashboard:
    await dashboard.sign_in()
    await expect(dashboard.page.get_by_role("heading", name="Runs")).to_be_visible()
    return dashboard


async def placed_on(http: httpx.AsyncClient, worker: SimWorker, tag: str, **constraints: Any) -> dict[str, Any]:
    """A run that the scheduler places on ``worker`` and the worker claims (ASSIGNED, held by it)."""
    body = {"image": "ghcr.io/acme-ml/trainer:0.4.0", "inputs": {"dataset": "pets-v2", "epochs": 3}, "tags": [tag],
            "constraints": constraints}  # fmt: skip
    created = await http.post("/runs", json=body)
    assert created.status_code == 201, created.text
    run: dict[str, Any] = created.json()
    claimed = await worker.claim(wait=15)  # the claim long-polls until the scheduler places the run
    assert [item["run_id"] for item in claimed] == [run["id"]]
    return run


async def put_logs(http: httpx.AsyncClient, worker: SimWorker, run_id: str, text: str) -> None:
    response = await http.put(
        f"/runs/{run_id}/logs", params={"worker_id": worker.worker_id}, content=text.encode(),
        headers={"Content-Type": "text/plain"},
    )  # fmt: skip
    assert response.status_code == 204, response.text


async def ship_log_lines(http: httpx.AsyncClient, worker: SimWorker, run_id: str, chunk: int, text: str) -> None:
    """New lines of the attempt's log, shipped live as a worker does while its op runs."""
    body = {"attempt": 1, "worker_id": worker.worker_id, "chunk": chunk, "text": text}
    response = await http.post(f"/runs/{run_id}/logs", json=body)
    assert response.status_code == 201, response.text


def row_of(page: Page, run_id: str) -> Any:
    return page.locator("tbody tr").filter(has=page.locator(f'a[title="{run_id}"]'))


async def test_a_wrong_key_does_not_sign_in(dashboard: Dashboard) -> None:
    await dashboard.sign_in("not-the-key", "/ui/workers")
    await expect(dashboard.page.get_by_role("alert")).to_have_text("Wrong API key.")
    await dashboard.goto("/ui/workers")
    await expect(dashboard.page.get_by_label("API key")).to_be_visible()  # still the sign-in page
    await dashboard.sign_in(API_KEY, "/ui/workers")
    await expect(dashboard.page.get_by_role("heading", name="Workers")).to_be_visible()
    assert dashboard.page.url == dashboard.url + "/ui/workers"
    await dashboard.page.get_by_role("button", name="Sign out").click()
    await expect(dashboard.page.get_by_label("API key")).to_be_visible()
    await dashboard.goto("/ui/workers")
    await expect(dashboard.page.get_by_label("API key")).to_be_visible()  # signed out: the session is gone


async def test_a_run_appears_and_completes_without_a_reload(
    signed_in: Dashboard, http: httpx.AsyncClient, fleet: Fleet, tag: str, screenshots: Path
) -> None:
    page = signed_in.page
    await page.evaluate("window.notReloaded = true")
    worker = await fleet.add("ui-runs", tags=[tag])
    run = await placed_on(http, worker, tag, cpu=1)
    row = row_of(page, run["id"])
    await expect(row).to_contain_text("ASSIGNED")
    assert (await worker.report(run["id"], 1, "STARTED")).status_code == 200
    assert (await worker.report(run["id"], 1, "PROGRESS", 40)).status_code == 200
    await expect(row).to_contain_text("RUNNING")
    await expect(row.locator("progress")).to_have_attribute("value", "40")
    await expect(row).to_contain_text(worker.worker_id)
    # Beside it, a run that fails and one that waits for a worker nobody runs.
    failing = await placed_on(http, worker, tag, cpu=1)
    assert (await worker.report(failing["id"], 1, "STARTED")).status_code == 200
    failure = {"reason": "EXIT_CODE", "exit_code": 3, "error": "CUDA out of memory"}
    assert (await worker.report(failing["id"], 1, "FAILED", payload=failure)).status_code == 200
    waiting = await create_run(http, ["t-" + uuid.uuid4().hex[:10]], priority=20)
    await expect(row_of(page, failing["id"])).to_contain_text("FAILED")
    await expect(row_of(page, waiting["id"])).to_contain_text("PENDING")
    await page.screenshot(path=str(screenshots / "runs.png"))
    assert (await worker.report(run["id"], 1, "COMPLETED", payload={"outputs": {"n": 1}})).status_code == 200
    await expect(row).to_contain_text("COMPLETED")
    await expect(row.locator("progress")).to_have_attribute("value", "100")
    assert await page.evaluate("window.notReloaded") is True
    assert (await http.post(f"/runs/{waiting['id']}/cancel")).status_code == 200

    # The filters are GET /runs' own: a state filter shows only runs in that state.
    await page.get_by_label("State").select_option("RUNNING")
    await page.get_by_role("button", name="Filter").click()
    await expect(page).to_have_url(f"{signed_in.url}/ui/runs?state=RUNNING")
    await expect(page.get_by_text("No runs match.").or_(page.locator("tbody tr").first)).to_be_visible()
    await expect(row_of(page, run["id"])).to_have_count(0)


async def test_the_run_page_follows_logs_and_cancels_a_running_run(
    signed_in: Dashboard, http: httpx.AsyncClient, fleet: Fleet, tag: str, screenshots: Path
) -> None:
    page = signed_in.page
    worker = await fleet.add("ui-run", tags=[tag])
    run = await placed_on(http, worker, tag, cpu=1)
    assert (await worker.report(run["id"], 1, "STARTED")).status_code == 200
    await signed_in.goto(f"/ui/runs/{run['id']}")
    logs = page.get_by_label("Logs of the current attempt")
    await expect(page.locator(".facts")).to_contain_text("RUNNING")
    await ship_log_lines(http, worker, run["id"], 1, "loading model\n")
    await expect(logs).to_have_text("loading model\n")
    assert (await worker.report(run["id"], 1, "PROGRESS", 65)).status_code == 200
    assert (await worker.report(run["id"], 1, "INFO", "model loaded")).status_code == 200
    await ship_log_lines(http, worker, run["id"], 2, "epoch 1/3 loss=0.41\n")
    await expect(logs).to_have_text("loading model\nepoch 1/3 loss=0.41\n")
    await expect(page.get_by_label("Run progress")).to_have_attribute("value", "65")
    await expect(page.get_by_role("article", name="Attempt 1")).to_contain_text("model loaded")
    await page.screenshot(path=str(screenshots / "run.png"), full_page=True)

    await page.get_by_role("button", name="Cancel run").click()
    await expect(page.get_by_role("status")).to_have_text("Cancel requested.")
    await expect(page.locator(".facts")).to_contain_text("requested; waiting for the worker")
    cancel = await until(lambda: [c for c in worker.cancels if c["run_id"] == run["id"]], what="a cancel command")
    assert cancel[0]["attempt"] == 1
    assert (await worker.report(run["id"], 1, "CANCELLED")).status_code == 200
    await expect(page.locator(".facts")).to_contain_text("CANCELLED")
    await expect(page.get_by_role("button", name="Retry")).to_be_visible()
    await expect(page.get_by_role("button", name="Cancel run")).to_be_hidden()


async def test_a_definition_form_shows_field_errors_then_starts_a_run(
    signed_in: Dashboard, http: httpx.AsyncClient, tag: str, screenshots: Path
) -> None:
    page = signed_in.page
    name = "ui-" + uuid.uuid4().hex[:8]
    definition = {
        "name": name, "version": "1.2.0", "image": "ghcr.io/acme-ml/image-classifier:1.2.0",
        "description": "Classify an image; returns the top labels.", "tags": [tag],
        "input_specs": {
            "image_url": {"type": "string", "description": "where the image is"},
            "top_k": {"type": "int", "required": False, "default": 3, "min": 1, "max": 10},
            "model": {"type": "string", "required": False, "default": "small", "choices": ["small", "large"]},
            "threshold": {"type": "float", "required": False, "default": 0.2},
            "normalise": {"type": "bool", "required": False, "default": True},
            "crop": {"type": "object", "required": False},
        },
        "output_specs": {"labels": {"type": "array"}},
    }  # fmt: skip
    assert (await http.post("/definitions", json=definition)).status_code == 201
    await signed_in.goto("/ui/definitions")
    await page.get_by_role("link", name=name).click()
    await expect(page.get_by_role("heading", name=name)).to_be_visible()
    await page.get_by_label("top_k").fill("50")
    await page.get_by_role("button", name="Start run").click()
    await expect(page.locator("#in-image_url-error")).not_to_be_empty()
    await expect(page.locator("#in-top_k-error")).to_contain_text("10")
    await expect(page.get_by_label("top_k")).to_have_attribute("aria-invalid", "true")
    await page.screenshot(path=str(screenshots / "definition.png"), full_page=True)

    await page.get_by_label("image_url").fill("https://images.example.com/dog.jpg")
    await page.get_by_label("top_k").fill("5")
    await page.get_by_label("model").select_option(label='"large"')
    await page.get_by_role("button", name="Start run").click()
    await expect(page).to_have_url(re.compile(r"/ui/runs/[0-9a-f-]{36}$"))
    run_id = page.url.rsplit("/", 1)[1]
    run = await wait_run(http, run_id, state="PENDING")
    assert run["op_definition"] == name
    assert run["inputs"] == {"image_url": "https://images.example.com/dog.jpg", "top_k": 5, "model": "large",
                             "threshold": 0.2, "normalise": True}  # fmt: skip
    assert (await http.post(f"/runs/{run_id}/cancel")).status_code == 200


async def test_the_workers_page_shows_one_vram_bar_per_gpu_and_drains(
    signed_in: Dashboard, http: httpx.AsyncClient, fleet: Fleet, tag: str, screenshots: Path
) -> None:
    page = signed_in.page
    worker = await fleet.add("ui-gpus", tags=[tag], cpu=16, ram_mb=65536, gpus=[gpu(0, 24576), gpu(1, 81920)])
    run = await placed_on(http, worker, tag, cpu=4, ram_mb=16384, vram_mb=20000)
    await signed_in.goto("/ui/workers")
    card = page.get_by_role("article", name=worker.worker_id)
    gpu0 = card.get_by_label("GPU 0 SimGPU: reserved of total")
    gpu1 = card.get_by_label("GPU 1 SimGPU: reserved of total")
    await expect(gpu0).to_have_attribute("value", "20000")  # best fit: the smaller GPU that holds 20,000 MiB
    await expect(gpu0).to_have_attribute("max", "24576")
    await expect(gpu1).to_have_attribute("value", "0")
    await expect(gpu1).to_have_attribute("max", "81920")
    await expect(card.get_by_label("CPU: reserved of total")).to_have_attribute("value", "4")
    await expect(card).to_contain_text("19.53 GiB / 24 GiB VRAM")
    await expect(card.locator(f'a[title="{run["id"]}"]')).to_be_visible()
    await page.screenshot(path=str(screenshots / "workers.png"), full_page=True)

    drain = card.get_by_role("button", name="Drain")
    await drain.focus()
    await page.keyboard.press("Enter")
    await expect(card).to_contain_text("DRAINING")
    await expect(drain).to_be_disabled()
    assert (await worker.view())["status"] == "DRAINING"


async def test_the_queue_page_lists_pending_runs_in_order_with_reasons(
    signed_in: Dashboard, http: httpx.AsyncClient, screenshots: Path
) -> None:
    page = signed_in.page
    nowhere = "t-" + uuid.uuid4().hex[:10]  # no worker has this tag: the runs wait
    routine = await create_run(http, [nowhere], priority=5)
    urgent = await create_run(http, [nowhere], priority=80, vram_mb=8000)
    # Why they wait depends on whether other tests' workers are still online.
    waiting = ("NO_WORKERS", "NO_WORKER_WITH_TAGS")
    await wait_run(http, routine["id"], reason=waiting)
    await signed_in.goto("/ui/queue")
    rows = page.locator("tbody tr")
    reason = re.compile("|".join(waiting))
    await expect(rows.filter(has_text=routine["id"][:8])).to_contain_text(reason)
    ids = [await link.get_attribute("title") for link in await rows.locator("a").all()]
    assert ids.index(urgent["id"]) < ids.index(routine["id"])
    await page.screenshot(path=str(screenshots / "queue.png"), full_page=True)
    for run in (routine, urgent):
        assert (await http.post(f"/runs/{run['id']}/cancel")).status_code == 200
    await expect(rows.filter(has_text=routine["id"][:8])).to_have_count(0)


async def test_the_pages_fit_a_phone_and_work_with_the_keyboard(
    browser: Browser, cluster: Cluster, http: httpx.AsyncClient, screenshots: Path
) -> None:
    context = await browser.new_context(viewport=PHONE)
    page = await context.new_page()
    try:
        await page.goto(cluster.url + "/ui/runs")
        await page.keyboard.press("Tab")  # the key field has focus already: type, Enter submits
        await page.get_by_label("API key").focus()
        await page.keyboard.type(API_KEY)
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Runs")).to_be_visible()
        await expect(page.locator("tbody tr").first).to_be_visible()
        # Nothing wider than the screen but the tables, which scroll inside their own region.
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        await page.screenshot(path=str(screenshots / "runs-phone.png"))
        await page.keyboard.press("Tab")
        skip = page.get_by_role("link", name="Skip to content")
        await expect(skip).to_be_focused()
        await page.get_by_role("link", name="Definitions").focus()
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Definitions")).to_be_visible()
        await page.screenshot(path=str(screenshots / "definitions-phone.png"))
    finally:
        await context.close()


async def test_the_definitions_page_lists_every_definition(
    signed_in: Dashboard, http: httpx.AsyncClient, screenshots: Path
) -> None:
    name = "ui-list-" + uuid.uuid4().hex[:6]
    body = {
        "name": name,
        "version": "0.3.1",
        "image": "ghcr.io/acme-ml/text-embedder:0.3.1",
        "description": "Embed texts with a sentence model.",
        "input_specs": {"texts": {"type": "array"}},
    }
    assert (await http.post("/definitions", json=body)).status_code == 201
    await signed_in.goto("/ui/definitions")
    row = signed_in.page.locator("tbody tr").filter(has_text=name)
    await expect(row).to_contain_text("0.3.1")
    await expect(row).to_contain_text("texts")
    await signed_in.page.screenshot(path=str(screenshots / "definitions.png"), full_page=True)


async def test_the_run_page_changes_priority_and_retries(signed_in: Dashboard, http: httpx.AsyncClient) -> None:
    page = signed_in.page
    run = await create_run(http, ["t-" + uuid.uuid4().hex[:10]], priority=5)  # no worker has the tag: it waits
    await signed_in.goto(f"/ui/runs/{run['id']}")
    facts = page.locator(".facts")
    await expect(facts).to_contain_text("PENDING")
    await expect(facts).to_contain_text(re.compile("NO_WORKERS|NO_WORKER_WITH_TAGS|QUEUED"))
    priority = page.get_by_label("Priority", exact=True)
    await priority.fill("150")
    await page.get_by_role("button", name="Set priority").click()
    await expect(page.locator("#priority-error")).to_contain_text("100")
    assert (await wait_run(http, run["id"]))["priority"] == 5  # the refused change changed nothing
    await priority.fill("60")
    await page.get_by_role("button", name="Set priority").click()
    await expect(page.get_by_role("status")).to_have_text("Priority changed.")
    await expect(page.locator("#priority-error")).to_be_empty()
    assert (await wait_run(http, run["id"]))["priority"] == 60

    await page.get_by_role("button", name="Cancel run").click()
    await expect(facts).to_contain_text("CANCELLED")
    await page.get_by_role("button", name="Retry").click()
    await expect(page.get_by_role("article", name="Attempt 2")).to_contain_text("PENDING")
    assert (await wait_run(http, run["id"], state="PENDING", attempt=2))["current_attempt"] == 2
    assert (await http.post(f"/runs/{run['id']}/cancel")).status_code == 200


async def test_the_run_page_polls_where_the_stream_is_refused(
    signed_in: Dashboard, http: httpx.AsyncClient, fleet: Fleet, tag: str
) -> None:
    page = signed_in.page
    streams: list[str] = []

    async def refuse_streams(route: Route) -> None:  # as a proxy that does not pass event streams might
        streams.append(route.request.url)
        await route.fulfill(status=502, body="no streams here")

    await page.route("**/stream", refuse_streams)
    worker = await fleet.add("ui-poll", tags=[tag])
    run = await placed_on(http, worker, tag, cpu=1)
    await signed_in.goto(f"/ui/runs/{run['id']}")
    facts = page.locator(".facts")
    await expect(facts).to_contain_text("ASSIGNED")
    assert (await worker.report(run["id"], 1, "STARTED")).status_code == 200
    await expect(facts).to_contain_text("RUNNING")
    await put_logs(http, worker, run["id"], "step 1\nstep 2\n")
    await expect(page.get_by_label("Logs of the current attempt")).to_have_text("step 1\nstep 2\n")
    assert (await worker.report(run["id"], 1, "COMPLETED", payload={"outputs": {"ok": True}})).status_code == 200
    await expect(facts).to_contain_text("COMPLETED")
    await expect(page.locator("section", has_text="Outputs").locator("pre")).to_contain_text('"ok": true')
    assert streams  # the page did try the stream first
