"""An SQLite file that is ours or is moved aside: checked, locked, migrated, written safely.

Used by the experiment store: a file is ours when its header carries ``APPLICATION_ID``; one
that is damaged or another program's is renamed aside (never overwritten), one written by a
newer llmopt is refused and left alone. Writers take the lock with short retries
(``begin_immediate``), and layouts move forward by numbered migrations (``migrate``).
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from llmopt.errors import Fix, LlmoptError

APPLICATION_ID = 0x6C6C6D6F  # "llmo" in the file header: tells our stores from other SQLite files
BUSY_MS = 60_000  # wait this long for another writer (a write takes milliseconds)
SQLITE_MAGIC = b"SQLite format 3\x00"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside the store while it is checked, moved aside or migrated,
    so two processes never both move a file or migrate it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: SQLite's own locking still serialises the migration
        yield
        return
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def inspect(path: Path, schema_version: int, *, damaged: Fix, newer: Fix) -> str | None:
    """Why ``path`` cannot be used as our store (to move it aside), or None if it can.

    Args:
        path: the file (missing or empty is fine: SQLite starts one).
        schema_version: the newest layout this llmopt knows.
        damaged: how to fix a path that is not a regular file.
        newer: how to fix a store of a newer layout.

    Raises:
        LlmoptError: not a regular file, or a store written by a newer llmopt (kept where it
            is: it is not damaged).
    """
    if not path.exists():
        return None
    if not path.is_file():
        raise LlmoptError(f"the experiment store {path} is not a regular file", fix=damaged)
    with open(path, "rb") as f:
        head = f.read(len(SQLITE_MAGIC))
    if not head:
        return None  # an empty file: SQLite starts a database in it
    if head != SQLITE_MAGIC:
        return "is not an SQLite database (damaged, or another kind of file)"
    try:
        uri = f"{path.resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_MS / 1000)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if app_id == APPLICATION_ID and "runs" in tables:
                conn.execute("SELECT count(*), max(length(summary)) FROM runs").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):  # locked, out of memory, ...: not the file's fault
            raise LlmoptError(
                f"cannot read the experiment store {path} ({exc}); try again"
            ) from None
        return f"is damaged ({exc})"
    if app_id != APPLICATION_ID:
        return None if not tables else "belongs to another program (it is not an llmopt store)"
    if version > schema_version:
        raise LlmoptError(
            f"the experiment store {path} was written by a newer llmopt (layout version "
            f"{version}; this llmopt knows up to {schema_version})",
            fix=newer,
        )
    return None


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether SQLite says the file itself is bad (not a database, or corrupt)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in str(exc)


def move_aside(path: Path) -> Path:
    """Rename ``path`` (and its -wal/-shm companions) to a new name beside it; never overwrite."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        target = path.with_name(f"{path.name}.damaged-{stamp}" + (f"-{i}" if i else ""))
        if not target.exists():
            break
    else:  # pragma: no cover - a thousand moves in one second
        raise LlmoptError(f"cannot find a free name to move {path} aside")
    os.rename(path, target)
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            os.rename(companion, target.with_name(target.name + suffix))
    return target


def begin_immediate(conn: sqlite3.Connection) -> None:
    """Take the write lock, retrying every few milliseconds while another process holds it.

    SQLite's own busy handler may sleep in whole seconds (builds without usleep), which turns
    a few milliseconds of contention into seconds; this loop waits as long as the lock is
    held, no longer, up to ``BUSY_MS``.
    """
    conn.execute("PRAGMA busy_timeout = 0")
    deadline = time.monotonic() + BUSY_MS / 1000
    delay = 0.001
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError as exc:
            busy = "locked" in str(exc) or "busy" in str(exc)
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter, not a secret
            delay = min(delay * 1.5, 0.05)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_MS}")


def migrate(conn: sqlite3.Connection, migrations: list[str]) -> None:
    """Bring a file's layout to ``len(migrations)``: ``migrations[v]`` takes version v to
    v + 1, applied in order in one transaction (a failure leaves the old layout untouched)."""
    begin_immediate(conn)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for script in migrations[version:]:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
        if version < len(migrations):
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {len(migrations)}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
