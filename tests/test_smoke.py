"""The server starts on a real nats-server and answers its health check and an authenticated request."""

import httpx

from tests.processes import GyozaServer


async def test_health_needs_no_key(server: GyozaServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_definitions_list_needs_the_key(server: GyozaServer, client: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        assert (await anonymous.get("/definitions")).status_code == 401
    response = await client.get("/definitions")
    assert response.status_code == 200
    assert "data" in response.json()
