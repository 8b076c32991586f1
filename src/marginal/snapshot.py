"""A consistent copy of a pool that another process may still be writing.

``snapshot(db, dst)`` copies ``db`` with SQLite's online backup from a
read-only connection, so the original is never written (a background run
keeps appending to it) and the copy holds one committed state. Left out:
copying only some runs of a file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .errors import MarginalError


def snapshot(db: str | Path, dst: str | Path) -> Path:
    """Copy the SQLite file ``db`` to ``dst`` (online backup, ``db`` opened read-only); returns ``dst``."""
    db, dst = Path(db).resolve(), Path(dst)
    if not db.is_file():
        raise MarginalError(f"no such run database: {db}")
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)
    out = sqlite3.connect(dst)
    try:
        src.backup(out)
    except sqlite3.DatabaseError as e:
        raise MarginalError(f"cannot copy {db}: {e}") from None
    finally:
        out.close()
        src.close()
    return dst
