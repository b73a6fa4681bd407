"""GET /metrics speaks Prometheus text, needs the key, and counts what happened."""

import httpx

from tests.processes import GyozaServer


async def test_metrics_count_requests_and_runs(server: GyozaServer, client: httpx.AsyncClient) -> None:
    await client.get("/definitions")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'gyoza_http_requests_total{method="GET",route="/definitions",status="200"}' in text
    assert "gyoza_scheduler_leader 1.0" in text
    assert "# TYPE gyoza_runs gauge" in text


async def test_metrics_need_the_key(server: GyozaServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 401


async def test_the_openapi_documents_the_text_answer(server: GyozaServer) -> None:
    # Found by the fuzz (tests/test_fuzz_openapi.py): /metrics documented only its refusals, not its 200.
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        operation = (await anonymous.get("/openapi.json")).json()["paths"]["/metrics"]["get"]
    assert operation["responses"]["200"]["content"] == {"text/plain": {"schema": {"type": "string"}}}
