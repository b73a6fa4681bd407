"""The local, disposable query index (SQLite via sqlite-utils) behind GET /runs and GET /definitions.

KV is the truth; this is a projection fed by watching the buckets (``server/watch.py``) and by this server's own
writes (read-your-writes). It is kept between starts (``server/indexfile.py`` says when a kept file is trusted) with
the revision through which the run feed was applied, committed with the rows, so a restart replays only what changed
since; deleting it loses nothing (the next start rebuilds it). Each run row keeps the KV revision it came from and is
only replaced by a newer one, so a late watch delivery never rolls back a fresher local write. Rows hold the API's
JSON, so listing needs no parsing, and unfinished runs also keep their KV record (``record``), from which a restart
seeds the scheduler's model without reading them from KV again.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import sqlite_utils

from gyoza.core.views import Reservation, run_view
from gyoza.errors import InvalidRequest
from gyoza.schema import (
    TERMINAL_STATES,
    DefinitionPointer,
    OpDefinition,
    RunFilterIn,
    RunListQuery,
    RunRecord,
    RunState,
    WorkerRecord,
    known_fields,
)
from gyoza.server import indexfile
from gyoza.server.indexfile import BucketState, IndexFile
from gyoza.server.runfilters import filter_conditions, list_conditions

# The newest version of a run this index holds, or has seen deleted.
_HELD_REVISION = (
    "SELECT max(revision) FROM (SELECT revision FROM runs WHERE id = ?1 UNION ALL "
    "SELECT revision FROM removed WHERE id = ?1)"
)
_TOMBSTONE = """
INSERT INTO removed (id, revision) VALUES (?, ?)
ON CONFLICT(id) DO UPDATE SET revision = max(revision, excluded.revision)
"""
# Off the (op_definition, created_at, id) index; the usage is read out of the row's JSON, not the whole body parsed.
_MEASURED = """
SELECT json_extract(body, '$.usage') FROM runs
WHERE op_definition = ? AND state IN ('COMPLETED', 'FAILED') AND json_extract(body, '$.usage') IS NOT NULL
ORDER BY created_at DESC, id DESC LIMIT ?
"""
_DROP_RUN = "DELETE FROM runs WHERE id = ? AND revision <= ? RETURNING attempt"
_DROP_EXPIRED = "DELETE FROM runs WHERE expires_at <= ? RETURNING id, attempt"
_UPSERT_RUN = """
INSERT INTO runs (id, created_at, state, op_definition, image, topic, worker_id, attempt, cpu, ram_mb, vram_mb,
                  gpu_ids, revision, body, batch_id, labels, priority, record, expires_at)
VALUES (:id, :created_at, :state, :op_definition, :image, :topic, :worker_id, :attempt, :cpu, :ram_mb, :vram_mb,
        :gpu_ids, :revision, :body, :batch_id, :labels, :priority, NULL, :expires_at)
ON CONFLICT(id) DO UPDATE SET
  state = excluded.state, worker_id = excluded.worker_id, attempt = excluded.attempt, gpu_ids = excluded.gpu_ids,
  revision = excluded.revision, body = excluded.body, priority = excluded.priority, record = NULL,
  expires_at = excluded.expires_at
WHERE excluded.revision > runs.revision
"""

# Run upserts are grouped into transactions of this many statements: one commit each costs more than the upsert
# itself, and nothing needs a commit to see them (this process reads through the same connection; no other process
# reads the file). What a crash loses of them is replayed at the next start: the applied revision commits with them.
RUN_WRITES_PER_COMMIT = 256
# The API views of the runs indexed last, by revision: the reply to a request that just wrote them reuses the JSON
# the index built instead of building it again (``run_body``). ~1 KB each.
RECENT_BODIES = 8192


class QueryIndex:
    def __init__(self, file: IndexFile, bucket: BucketState) -> None:
        """Open the claimed ``file``: kept as it is when it matches ``bucket`` (``applied`` says how far it got),
        else rebuilt empty (``applied`` 0)."""
        self.file = file
        self.path = file.path
        self.db = self._open(file, bucket)
        self._uncommitted = 0
        self._bodies: OrderedDict[str, tuple[int, str]] = OrderedDict()

    def _open(self, file: IndexFile, bucket: BucketState) -> sqlite_utils.Database:
        if file.path.exists():
            kept = indexfile.open_kept(file.path, bucket)
            if kept is not None:
                db, self.applied = kept
                # Definitions and workers are few: their own watches replay them at every start.
                for table in ("definitions", "latest", "workers"):
                    db.execute(f"DELETE FROM {table}")
                return db
            file.remove()
        self.applied = 0
        db = indexfile.connect(file.path)
        with db.conn:
            db.execute("BEGIN")
            _create_tables(db)
            indexfile.write_meta(db, bucket)
        return db

    def close(self) -> None:
        """Commit what is applied and keep the file for the next start."""
        self._commit()
        self.db.conn.close()
        self.file.release()

    def _commit(self) -> None:
        if self.db.conn.in_transaction:
            # The feed delivers in revision order: past a tombstone's revision, nothing older of that run can come.
            self.db.conn.execute("DELETE FROM removed WHERE revision <= ?", (self.applied,))
            indexfile.set_applied(self.db, self.applied)
            self.db.conn.commit()
        self._uncommitted = 0

    def note_applied(self, revision: int) -> None:
        """The run feed has delivered every revision up to ``revision`` (recorded at the next commit)."""
        self.applied = max(self.applied, revision)

    def keep_record(self, record: RunRecord, raw: bytes, revision: int) -> None:
        """Keep an unfinished run's KV record beside its row (for ``live_records``), if the row is at this
        revision: a row already at a newer one gets its record when the feed delivers that one."""
        if record.current.state in TERMINAL_STATES:
            return
        if not self.db.conn.in_transaction:
            self.db.conn.execute("BEGIN")
        self.db.conn.execute("UPDATE runs SET record = ? WHERE id = ? AND revision = ?", (raw, record.id, revision))

    def live_records(self) -> list[tuple[str, bytes, int]]:
        """(run id, KV record, revision) of every unfinished run as of ``applied``."""
        sql = "SELECT id, record, revision FROM runs WHERE record IS NOT NULL"
        return [(row[0], row[1], row[2]) for row in self.db.conn.execute(sql).fetchall()]

    # --- runs --------------------------------------------------------------------------------------------------

    def upsert_run(self, record: RunRecord, revision: int) -> None:
        """Index this version unless the row holds it (or a newer one) already.

        Every version arrives twice on the server that wrote it (its own write, then the run feed): the look-up
        spares building the row's view and JSON again for the second."""
        held = self.db.conn.execute(_HELD_REVISION, (record.id,)).fetchone()[0]
        if held is not None and held >= revision:
            return
        if not self.db.conn.in_transaction:
            self.db.conn.execute("BEGIN")
        row = _run_row(record, revision)
        self.db.conn.execute(_UPSERT_RUN, row)
        self._bodies[record.id] = (revision, row["body"])
        self._bodies.move_to_end(record.id)
        if len(self._bodies) > RECENT_BODIES:
            self._bodies.popitem(last=False)
        self._uncommitted += 1
        if self._uncommitted >= RUN_WRITES_PER_COMMIT:
            self._commit()

    def remove_run(self, run_id: str, revision: int) -> int | None:
        """The run is deleted, its last version at ``revision`` or older: drop its row, and keep a tombstone so
        that a version up to ``revision`` still arriving (this server's delete can overtake the feed) is ignored.
        Returns the number of attempts the dropped row had (None: no row was dropped)."""
        if not self.db.conn.in_transaction:
            self.db.conn.execute("BEGIN")
        dropped = self.db.conn.execute(_DROP_RUN, (run_id, revision)).fetchone()
        self.db.conn.execute(_TOMBSTONE, (run_id, revision))
        self._bodies.pop(run_id, None)
        self._uncommitted += 1
        return None if dropped is None else int(dropped[0])

    def drop_expired(self, now: float) -> list[tuple[str, int]]:
        """Drop the runs whose retention ended by ``now`` (a Unix time): (run id, attempts) of each. A kept index
        needs it at start: JetStream keeps the marker of an expiry only an hour, so a server stopped for longer
        never hears of some of them."""
        with self.db.conn:
            rows = self.db.conn.execute(_DROP_EXPIRED, (now,)).fetchall()
        return [(row[0], int(row[1])) for row in rows]

    def run_body(self, record: RunRecord, revision: int) -> str:
        """This version's API view as JSON: the one the index built for it, when it was among the last indexed."""
        held = self._bodies.get(record.id)
        if held is not None and held[0] == revision:
            return held[1]
        return run_view(record).model_dump_json()

    def measured_usage(self, definition: str, limit: int) -> list[str]:
        """The measured usage (JSON) of the newest ``limit`` finished runs of ``definition`` that have one."""
        rows = self.db.conn.execute(_MEASURED, (definition, limit)).fetchall()
        return [row[0] for row in rows]

    def upsert_runs(self, rows: list[tuple[RunRecord, int]]) -> None:
        with self.db.conn:
            self.db.conn.executemany(_UPSERT_RUN, [_run_row(r, rev) for r, rev in rows])

    def list_runs(self, query: RunListQuery) -> tuple[list[str], bool]:
        """Runs newest first, Stripe-style cursors. Returns (JSON bodies, has_more)."""
        where, params = list_conditions(query)
        backwards = query.ending_before is not None
        cursor_id = query.ending_before if backwards else query.starting_after
        if cursor_id is not None:
            anchor = self.db.execute("SELECT created_at FROM runs WHERE id = ?", [cursor_id]).fetchone()
            if anchor is None:
                field = "ending_before" if backwards else "starting_after"
                raise InvalidRequest(f"unknown run id in {field}", [{"field": field, "problem": "unknown run id"}])
            op = ">" if backwards else "<"
            where.append(f"(created_at, id) {op} (?, ?)")
            params += [anchor[0], cursor_id]
        order = "ASC" if backwards else "DESC"
        sql = (
            f"SELECT body FROM runs {'WHERE ' + ' AND '.join(where) if where else ''} "
            f"ORDER BY created_at {order}, id {order} LIMIT ?"
        )
        rows = [row[0] for row in self.db.execute(sql, [*params, query.limit + 1]).fetchall()]
        has_more = len(rows) > query.limit
        rows = rows[: query.limit]
        if backwards:
            rows.reverse()
        return rows, has_more

    def pending_in_order(self, limit: int) -> tuple[list[str], bool, int]:
        """PENDING runs in the scheduler's order (priority desc, then oldest first): (JSON bodies, has_more, total)."""
        sql = (
            "SELECT body FROM runs INDEXED BY idx_runs_queue WHERE state = 'PENDING' "
            "ORDER BY priority DESC, created_at, id LIMIT ?"
        )
        rows = [row[0] for row in self.db.execute(sql, [limit + 1]).fetchall()]
        total = self.db.execute("SELECT count(*) FROM runs WHERE state = 'PENDING'").fetchone()[0]
        return rows[:limit], len(rows) > limit, int(total)

    def run_written(self, record: RunRecord, revision: int) -> None:
        self.upsert_run(record, revision)

    def assigned_to(self, worker_id: str) -> list[str]:
        """Run bodies ASSIGNED to the worker and not yet started, oldest assignment first."""
        sql = "SELECT body FROM runs WHERE worker_id = ? AND state = 'ASSIGNED' ORDER BY revision"
        return [row[0] for row in self.db.execute(sql, [worker_id]).fetchall()]

    def batch_summary(self, batch_id: str) -> tuple[dict[str, int], float]:
        """A batch's runs by state, and the sum of their progress counting a finished run as 100."""
        sql = (
            "SELECT state, count(*), sum(CASE WHEN state IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN 100 "
            "ELSE json_extract(body, '$.progress') END) FROM runs WHERE batch_id = ? GROUP BY state"
        )
        rows = self.db.execute(sql, [batch_id]).fetchall()
        return {row[0]: row[1] for row in rows}, float(sum(row[2] or 0 for row in rows))

    def matching_run_ids(self, run_filter: RunFilterIn) -> list[str]:
        """Every run matching the filter (all its conditions), oldest first."""
        where, params = filter_conditions(
            run_filter.batch_id, run_filter.labels or {}, run_filter.state or [], run_filter.reason
        )
        sql = f"SELECT id FROM runs WHERE {' AND '.join(where) or '1'} ORDER BY created_at, id"
        return [row[0] for row in self.db.execute(sql, params).fetchall()]

    def count_runs_by_state(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT state, count(*) FROM runs GROUP BY state").fetchall())

    # --- workers -----------------------------------------------------------------------------------------------

    def upsert_worker(self, record: WorkerRecord) -> None:
        self.db.table("workers").upsert({"id": record.id, "body": record.model_dump_json()}, pk="id")

    def count_workers_by_status(self) -> dict[str, int]:
        sql = "SELECT json_extract(body, '$.status'), count(*) FROM workers GROUP BY 1"
        return dict(self.db.execute(sql).fetchall())

    def workers(self, worker_id: str | None = None) -> list[tuple[WorkerRecord, list[Reservation]]]:
        """Worker records with the runs holding resources on them (ASSIGNED or RUNNING)."""
        sql, params = "SELECT body FROM workers ORDER BY id", []
        if worker_id is not None:
            sql, params = "SELECT body FROM workers WHERE id = ?", [worker_id]
        records = [WorkerRecord.model_validate_json(row[0]) for row in self.db.execute(sql, params).fetchall()]
        return [(record, self.reservations(record.id)) for record in records]

    def reservations(self, worker_id: str) -> list[Reservation]:
        sql = (
            "SELECT id, attempt, state, cpu, ram_mb, vram_mb, gpu_ids FROM runs "
            "WHERE worker_id = ? AND state IN ('ASSIGNED', 'RUNNING') ORDER BY created_at"
        )
        return [
            Reservation(
                run_id=row[0],
                attempt=row[1],
                state=RunState(row[2]),
                cpu=row[3],
                ram_mb=row[4],
                vram_mb=row[5],
                gpu_ids=json.loads(row[6]),
            )
            for row in self.db.execute(sql, [worker_id]).fetchall()
        ]

    # --- definitions -------------------------------------------------------------------------------------------

    def upsert_definition(self, definition: OpDefinition) -> None:
        self.db.table("definitions").upsert(
            {
                "name": definition.name,
                "version": definition.version,
                "created_at": definition.created_at.timestamp(),
                "body": known_fields(definition).model_dump_json(),
            },
            pk=("name", "version"),
        )

    def set_pointer(self, pointer: DefinitionPointer) -> None:
        latest = pointer.latest
        if latest is None:
            self.definition_deleted(pointer.name)
            return
        self.db.table("latest").upsert({"name": pointer.name, "version": latest.version}, pk="name")

    def list_definitions(self, all_versions: bool) -> list[str]:
        if all_versions:
            sql = "SELECT d.body FROM definitions d JOIN latest l ON d.name = l.name ORDER BY d.name, d.created_at DESC"
        else:
            sql = (
                "SELECT d.body FROM latest l JOIN definitions d ON d.name = l.name AND d.version = l.version "
                "ORDER BY l.name"
            )
        return [row[0] for row in self.db.execute(sql).fetchall()]

    def definition_written(self, definition: OpDefinition, pointer: DefinitionPointer) -> None:
        self.upsert_definition(definition)
        self.set_pointer(pointer)

    def definition_deleted(self, name: str) -> None:
        self.db.execute("DELETE FROM latest WHERE name = ?", [name])
        self.db.execute("DELETE FROM definitions WHERE name = ?", [name])


def _create_tables(db: sqlite_utils.Database) -> None:
    runs = db.table("runs")
    runs.create(
        {
            "id": str, "created_at": float, "state": str, "op_definition": str, "image": str, "topic": str,
            "worker_id": str, "attempt": int, "cpu": float, "ram_mb": int, "vram_mb": int, "gpu_ids": str,
            "revision": int, "body": str,
        },
        pk="id",
    )  # fmt: skip
    runs.create_index(["created_at", "id"])
    for column in ("state", "op_definition", "worker_id", "topic", "image"):
        runs.create_index([column, "created_at", "id"])
    runs.create_index(["worker_id", "state"], index_name="idx_runs_worker_state")
    _add_batch_columns(runs)
    # The queue in the scheduler's order (GET /queue): read off this index, however many runs wait. Partial, and
    # named by its one query: over every state, SQLite took it for ``state IN (...)`` lists and sorted the whole
    # match (p50 272 ms for COMPLETED,FAILED at 100k runs), where (state, created_at, id) answers in a millisecond.
    runs.add_column("priority", int)
    db.execute("CREATE INDEX idx_runs_queue ON runs (priority DESC, created_at, id) WHERE state = 'PENDING'")
    runs.add_column("record", bytes)
    db.execute("CREATE INDEX idx_runs_live ON runs (id) WHERE record IS NOT NULL")
    runs.add_column("expires_at", float)  # Unix time; NULL: kept until deleted
    db.table("removed").create({"id": str, "revision": int}, pk="id")
    db.table("definitions").create(
        {"name": str, "version": str, "created_at": float, "body": str}, pk=("name", "version")
    )
    db.table("latest").create({"name": str, "version": str}, pk="name")
    db.table("workers").create({"id": str, "body": str}, pk="id")


def _run_row(record: RunRecord, revision: int) -> dict[str, Any]:
    attempt = record.current
    return {
        "id": record.id,
        "created_at": record.created_at.timestamp(),
        "state": attempt.state.value,
        "op_definition": record.op_definition,
        "image": record.image,
        "topic": record.event_delivery.topic if record.event_delivery else None,
        "worker_id": attempt.worker_id,
        "attempt": attempt.number,
        "cpu": record.constraints.cpu,
        "ram_mb": record.constraints.ram_mb,
        "vram_mb": record.constraints.vram_mb,
        "gpu_ids": json.dumps(attempt.gpu_ids),
        "revision": revision,
        "body": run_view(record).model_dump_json(),
        "batch_id": record.batch_id,
        "labels": json.dumps(record.labels) if record.labels else None,
        "priority": record.priority,
        "expires_at": record.expires_at.timestamp() if record.expires_at else None,
    }


def _add_batch_columns(runs: sqlite_utils.db.Table) -> None:
    """Batch and label columns: runs of a batch are found by an index; labels (rarely many) by a JSON look-up."""
    runs.add_column("batch_id", str)
    runs.add_column("labels", str)
    runs.create_index(["batch_id", "created_at", "id"])
