"""Where a server process keeps its query index between starts, and when a kept one can be trusted.

Each process claims one file under ``<data dir>/index`` with an exclusive ``flock`` (the first ``runs-<n>.sqlite``
whose lock is free), so the processes of a ``--workers`` pool, and replicas sharing a data dir, never write one file
together, and a restarted process takes over a file a previous one left. The lock dies with its process, ``kill -9``
included.

A kept file is used only when it describes the runs bucket as it is now. Its ``meta`` table records the format it was
written in, the bucket's incarnation (``Bucket.origin``) and the revision through which the run feed had been applied.
It is rebuilt from nothing when the format differs (a new Gyoza version or row layout), the bucket is another one
(recreated), the bucket's latest revision is below the applied one (emptied or replaced), or SQLite cannot read it.
Otherwise start-up replays only the revisions past the applied one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from gyoza import __version__
from gyoza.schema import OpRun

log = logging.getLogger(__name__)

# Bump when the tables or a row's columns change meaning; the API view's schema and the Gyoza version are part of
# the format too, since rows hold that view's JSON.
LAYOUT = 5
MAX_FILES = 1024


def index_format() -> str:
    schema = json.dumps(OpRun.model_json_schema(), sort_keys=True)
    return hashlib.sha256(f"{LAYOUT}|{__version__}|{schema}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BucketState:
    """What the runs bucket is right now: its incarnation and latest revision."""

    origin: str
    last_revision: int


class IndexFile:
    """One claimed index file: the path and the open descriptor that holds its lock."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd = lock_fd

    @classmethod
    def claim(cls, directory: Path) -> IndexFile:
        directory.mkdir(parents=True, exist_ok=True)
        for n in range(MAX_FILES):
            path = directory / f"runs-{n}.sqlite"
            fd = os.open(directory / f"runs-{n}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return cls(path, fd)
        raise RuntimeError(f"{MAX_FILES} index files in {directory} are all locked")

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    def remove(self) -> None:
        remove_files(self.path)


def remove_files(path: Path) -> None:
    """An index file with its WAL and shared-memory files."""
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)


def connect(path: Path) -> sqlite_utils.Database:
    db = sqlite_utils.Database(sqlite3.connect(path, isolation_level=None, check_same_thread=False))
    db.execute("PRAGMA journal_mode=WAL")
    # A commit in WAL mode is atomic either way; NORMAL may lose the last commits on a power cut, never consistency
    # (and what is lost is replayed from KV, since the applied revision is committed with the rows).
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def open_kept(path: Path, bucket: BucketState) -> tuple[sqlite_utils.Database, int] | None:
    """The kept file at ``path`` and its applied revision when it matches ``bucket``; None (closed, and why is
    logged) when it must be rebuilt."""
    db = None
    try:
        db = connect(path)
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        reason = _rebuild_reason(meta, bucket)
    except (sqlite3.DatabaseError, ValueError) as exc:
        reason = f"SQLite cannot read it ({exc})"
    if reason is None and db is not None:
        return db, int(meta["applied"])
    if db is not None:
        db.conn.close()
    log.info("query index rebuilt from KV: %s", reason)
    return None


def _rebuild_reason(meta: dict[str, str], bucket: BucketState) -> str | None:
    applied = int(meta.get("applied", -1))
    if meta.get("format") != index_format():
        return "it was written in another format"
    if meta.get("origin") != bucket.origin:
        return "the runs bucket was created again since"
    if applied < 0 or applied > bucket.last_revision:
        return f"it has applied revision {applied}, past the bucket's latest {bucket.last_revision}"
    return None


def write_meta(db: sqlite_utils.Database, bucket: BucketState) -> None:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    rows = [("format", index_format()), ("origin", bucket.origin), ("applied", "0")]
    db.conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows)


def set_applied(db: sqlite_utils.Database, applied: int) -> None:
    db.conn.execute("UPDATE meta SET value = ? WHERE key = 'applied'", (str(applied),))
