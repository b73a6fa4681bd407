"""The dashboard's signing secret: one file in the data dir, created 0600 by the first process that needs it.

Every process of a ``--workers`` pool (and every restart) shares the data dir, so they all sign and check sessions
with the same secret. The file is written under a temporary name and linked into place, so a process that starts
at the same moment never reads a half-written secret: whoever links first wins, the others read the winner's.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

SECRET_FILE = "ui-session.secret"


def load_secret(data_dir: Path) -> bytes:
    path = data_dir / SECRET_FILE
    if not path.exists():
        _create(path)
    return path.read_bytes().strip()


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
        with contextlib.suppress(FileExistsError):  # another process linked its secret first: use that one
            os.link(draft, path)
    finally:
        draft.unlink(missing_ok=True)
