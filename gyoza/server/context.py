"""What a running server holds: the bus, the services and the local index, built in ``before_serving``."""

from __future__ import annotations

from dataclasses import dataclass

from quart import current_app

from gyoza.bus.connection import Bus
from gyoza.server.index import QueryIndex
from gyoza.server.watch import IndexFeeder
from gyoza.services.definitions import DefinitionService
from gyoza.services.runs import RunService
from gyoza.services.topics import TopicFeed
from gyoza.settings import Settings


@dataclass
class ServerContext:
    settings: Settings
    bus: Bus
    index: QueryIndex
    definitions: DefinitionService
    runs: RunService
    topics: TopicFeed
    feeder: IndexFeeder


def ctx() -> ServerContext:
    context: ServerContext = current_app.extensions["gyoza"]
    return context
