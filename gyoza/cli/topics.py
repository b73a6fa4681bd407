"""``gyoza topics tail TOPIC``: read a topic feed from a cursor, optionally following it live."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from gyoza.cli import render
from gyoza.cli.errors import api
from gyoza.schema import TopicEvent

app = typer.Typer(no_args_is_help=True, help="Read topic feeds (the events of runs delivering to a topic).")

PAGE = 100
FOLLOW_POLL_S = 0.5


@app.command("tail")
def tail(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic name")],
    after: Annotated[int, typer.Option(min=0, help="Start after this cursor (0: from the beginning)")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events until Ctrl-C")] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print JSON: the API's page shape ({data, next_cursor}); with --follow one event per line"
        ),
    ] = False,
) -> None:
    """Events after ``--after`` up to now (a table), or a live stream with ``--follow``."""
    with api(ctx) as client:
        if not follow:
            events: list[TopicEvent] = []
            cursor = after
            while page := client.topic_events(topic, cursor, PAGE).data:
                events.extend(page)
                cursor = page[-1].cursor
            if as_json:
                render.print_json({"data": events, "next_cursor": cursor})
            else:
                render.console().print(render.topic_events_table(events))
            return
        cursor = after
        while True:
            page = client.topic_events(topic, cursor, PAGE).data
            for event in page:
                typer.echo(render.json_line(event) if as_json else render.topic_event_line(event))
                cursor = event.cursor
            if len(page) < PAGE:
                time.sleep(FOLLOW_POLL_S)
