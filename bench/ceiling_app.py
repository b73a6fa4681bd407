"""The HTTP ceiling for submissions: a bare Quart app on Hypercorn doing only the JSON work of a submission.

``python -m bench.ceiling_app PORT SAMPLE_RESPONSE_FILE``: ``POST /definitions/<name>/runs`` parses the body into
the same pydantic model Gyoza uses (``RunFromDefinitionIn``) and answers 201 with a fresh ``model_dump_json`` of an
``OpRun`` read from the sample file (a real Gyoza response, so the size matches). Hypercorn is configured as
``gyoza.server.serve`` configures it, on a socket bound as a ``--workers`` pool's processes bind theirs
(SO_REUSEPORT): start several on one port for the ceiling at that process count. No NATS, no auth, no index: what is
left is the framework's own cost.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, Response, request

from gyoza.processes import stop_on_signals
from gyoza.schema import OpRun, RunFromDefinitionIn
from gyoza.server.serve import listen


def create_app(sample: OpRun) -> Quart:
    app = Quart("ceiling")

    @app.post("/definitions/<name>/runs")
    async def create_run(name: str) -> Response:
        RunFromDefinitionIn.model_validate_json(await request.get_data(cache=False))
        return Response(sample.model_dump_json(), status=201, content_type="application/json")

    @app.get("/health")
    async def health() -> Response:
        return Response(f'{{"status":"ok","pid":{os.getpid()}}}', content_type="application/json")

    return app


async def main(port: int, sample: OpRun) -> None:
    config = Config()
    config.bind = [f"fd://{listen('127.0.0.1', port, share=True).detach()}"]
    config.accesslog = None
    config.graceful_timeout = 2
    app = create_app(sample)
    stop = stop_on_signals()
    await serve(app, config, shutdown_trigger=stop.wait)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), OpRun.model_validate_json(Path(sys.argv[2]).read_bytes())))
