"""The one place where CLI commands meet the API: building the client and turning failures into exit codes.

Exit codes scripts can rely on:

- 0: the command did what was asked;
- 1: the run it waited for (``run --wait``, ``runs watch``) ended FAILED or CANCELLED;
- 2: usage error (bad flag, unparseable or unknown ``-i`` input, invalid configuration) — click's own code;
- 3: the server said no or could not be reached (unreachable, 5xx, or a 4xx such as 404 or 400);
- 4: ``--timeout`` passed before the run ended (``run --wait``, ``runs watch``); the run continues on the server;
- 130: interrupted (Ctrl-C); a run being waited for or watched continues on the server.

Server errors print the server's code and message (and each detail) on stderr, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import typer
from pydantic import ValidationError

from gyoza.client import GyozaClient
from gyoza.errors import GyozaError

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_SERVER = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Connection:
    """The root ``--server`` / ``--api-key`` options; None falls back to GYOZA_* env, then ``gyoza up``'s config."""

    server_url: str | None = None
    api_key: str | None = None


def fail(message: str, code: int) -> typer.Exit:
    """Print ``message`` on stderr and return the exit to raise."""
    typer.secho(message, err=True, fg="red")
    return typer.Exit(code)


def describe(error: GyozaError) -> str:
    lines = [f"error: {error.code}: {error.message}"]
    for detail in error.details:
        if isinstance(detail, dict) and "field" in detail:
            lines.append(f"  {detail['field']}: {detail.get('problem', '')}")
        else:
            lines.append(f"  {detail}")
    return "\n".join(lines)


@contextmanager
def api(ctx: typer.Context) -> Iterator[GyozaClient]:
    """A client for the root options; API failures inside the block exit 3 with the server's code and message."""
    connection = ctx.find_object(Connection) or Connection()
    try:
        client = GyozaClient(connection.server_url, connection.api_key)
    except ValidationError as exc:
        # A malformed GYOZA_* variable or config file is the user's setup, not the server's answer.
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise fail(f"error: invalid configuration: {problems}", EXIT_USAGE) from None
    try:
        with client:
            yield client
    except GyozaError as exc:
        raise fail(describe(exc), EXIT_SERVER) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
