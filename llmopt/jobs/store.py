"""The job table, in the experiment store's SQLite file and through its connections.

Two tables sit beside the runs, created on first use (``CREATE TABLE IF NOT EXISTS``, so the
store's layout version and its migrations are untouched):

``jobs``: one row per job: its kind ("sweep"), the spec (JSON) and its hash, the executor, the
status (queued, running, done, cancelled, failed), progress (tasks done of total), the driver
process (host:pid) while one runs it, a cancel flag the driver polls between tasks, and the
error of a failed job.

``job_points``: one row per point of a job (method, value, task key) with the run it was
recorded as once it is done; the runs themselves are the experiment store's.

Only drivers and the CLI write here (workers never open the store); every write is one short
``BEGIN IMMEDIATE`` transaction of ``ExperimentStore``.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field

from llmopt.errors import Fix, LlmoptError
from llmopt.experiments import ExperimentStore, now

STATUSES = ("queued", "running", "done", "cancelled", "failed")
ACTIVE = ("queued", "running")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    executor TEXT NOT NULL,
    status TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    driver TEXT NOT NULL DEFAULT '',
    cancel INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_by_spec ON jobs (spec_hash, status);
CREATE TABLE IF NOT EXISTS job_points (
    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    method TEXT NOT NULL,
    value TEXT NOT NULL,
    task_key TEXT NOT NULL,
    run_id INTEGER,
    state TEXT NOT NULL DEFAULT 'pending',
    PRIMARY KEY (job_id, position)
);
"""


@dataclass
class Job:
    """One job as stored."""

    id: int
    kind: str
    spec: dict
    executor: str
    status: str
    done: int
    total: int
    created: str
    updated: str
    driver: str = ""
    cancel: bool = False
    error: str = ""
    points: list[dict] = field(default_factory=list)

    def to_json(self, *, points: bool = False) -> dict:
        """The CLI's JSON of a job (``jobs list`` rows; ``jobs show`` adds the points)."""
        data = {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "progress": {"done": self.done, "total": self.total},
            "created": self.created,
            "updated": self.updated,
            "executor": self.executor,
            "cancel_requested": self.cancel,
            "error": self.error or None,
            "spec": self.spec,
        }
        if points:
            data["points"] = self.points
        return data


def driver_id() -> str:
    """This process as a job's driver: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def driver_alive(driver: str) -> bool:
    """Whether the driver ``host:pid`` still runs (a driver on another host counts as alive:
    it cannot be checked from here)."""
    host, _, pid = driver.rpartition(":")
    if not driver or host != socket.gethostname() or not pid.isdigit():
        return bool(driver)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def job_id(value) -> int:
    """A job id from the command line (``7`` or ``#7``).

    Raises:
        LlmoptError: not a positive whole number.
    """
    try:
        number = int(str(value).lstrip("#"))
    except ValueError:
        number = 0
    if not 1 <= number <= 2**63 - 1:
        raise LlmoptError(
            f"a job id is a whole number from 1 up, got {str(value)[:40]!r}",
            fix=Fix(cli="`llmopt jobs list` shows the ids", app="choose a job from the list"),
        )
    return number


class JobStore:
    """Jobs in an experiment store (see the module docstring).

    Args:
        store: the experiment store whose file holds the jobs; default ``ExperimentStore()``.
    """

    def __init__(self, store: ExperimentStore | None = None):
        self.runs = store if store is not None else ExperimentStore()
        if not self.runs.read_only:
            with self.runs._write() as conn:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)

    def _has_tables(self, conn) -> bool:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'jobs'").fetchone()
        return found is not None

    # ------------------------------------------------------------------ writing

    def create(
        self, kind: str, spec: dict, spec_hash: str, executor: str, points: list[dict]
    ) -> Job:
        """A job for ``spec``: an unfinished one of the same spec whose driver is gone is taken
        over (resumed: its recorded points are found again and skipped), else a new one is queued.

        Args:
            points: [{"method", "value", "task_key"}] in the job's order.
        """
        with self.runs._write() as conn:
            rows = conn.execute(
                "SELECT id, driver FROM jobs WHERE spec_hash = ? AND status != 'done' "
                "ORDER BY id DESC",
                (spec_hash,),
            ).fetchall()
            resumable = [r[0] for r in rows if not driver_alive(r[1])]
            stamp = now()
            if resumable:
                found = resumable[0]
                conn.execute(
                    "UPDATE jobs SET status = 'queued', executor = ?, cancel = 0, error = '', "
                    "driver = ?, updated = ?, done = 0, total = ? WHERE id = ?",
                    (executor, driver_id(), stamp, len(points), found),
                )
                # its points again, with today's task keys (the model's files may have
                # changed since); what is recorded is found again by those keys
                conn.execute("DELETE FROM job_points WHERE job_id = ?", (found,))
            else:
                cur = conn.execute(
                    "INSERT INTO jobs (kind, spec, spec_hash, executor, status, total, created, "
                    "updated, driver) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
                    (kind, json.dumps(spec), spec_hash, executor, len(points), stamp, stamp,
                     driver_id()),
                )  # fmt: skip
                found = int(cur.lastrowid or 0)
            conn.executemany(
                "INSERT INTO job_points (job_id, position, method, value, task_key) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (found, i, p["method"], json.dumps(p["value"]), p["task_key"])
                    for i, p in enumerate(points)
                ],
            )
        return self.get(found)

    def set_status(self, job: int, status: str, *, error: str = "") -> None:
        """Move a job to ``status`` (a finished job lets go of its driver)."""
        if status not in STATUSES:
            raise ValueError(f"unknown job status {status!r}")
        with self.runs._write() as conn:
            conn.execute(
                "UPDATE jobs SET status = ?, error = ?, updated = ?, "
                "driver = CASE WHEN ? IN ('queued', 'running') THEN driver ELSE '' END "
                "WHERE id = ?",
                (status, error[:500], now(), status, job),
            )

    def point_done(self, job: int, task_key: str, run_id: int, state: str) -> None:
        """Every point of ``job`` with this task key is recorded as ``run_id`` (``state``:
        evaluated or skipped); the job's progress follows."""
        with self.runs._write() as conn:
            conn.execute(
                "UPDATE job_points SET run_id = ?, state = ? WHERE job_id = ? AND task_key = ?",
                (run_id, state, job, task_key),
            )
            self._progress(conn, job)

    def _progress(self, conn, job: int) -> None:
        done = conn.execute(
            "SELECT count(*) FROM job_points WHERE job_id = ? AND run_id IS NOT NULL", (job,)
        ).fetchone()[0]
        conn.execute("UPDATE jobs SET done = ?, updated = ? WHERE id = ?", (done, now(), job))

    def request_cancel(self, job: int) -> Job:
        """Ask a job's driver to stop after the tasks running now (a queued or orphaned job,
        whose driver is gone, is cancelled at once).

        Raises:
            LlmoptError: no such job, or it has finished.
        """
        current = self.get(job)
        if current.status not in ACTIVE:
            raise LlmoptError(f"job {job} is already {current.status}: nothing to cancel")
        with self.runs._write() as conn:
            conn.execute("UPDATE jobs SET cancel = 1, updated = ? WHERE id = ?", (now(), job))
            if not driver_alive(current.driver):
                conn.execute(
                    "UPDATE jobs SET status = 'cancelled', driver = '' WHERE id = ?", (job,)
                )
        return self.get(job)

    def cancel_requested(self, job: int) -> bool:
        with self.runs._connect() as conn:
            row = conn.execute("SELECT cancel FROM jobs WHERE id = ?", (job,)).fetchone()
        return bool(row and row[0])

    # ------------------------------------------------------------------ reading

    def list(self) -> list[Job]:
        """Every job, newest first (an active job whose driver is gone shows as failed)."""
        with self.runs._connect() as conn:
            if not self._has_tables(conn):
                return []
            rows = conn.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY id DESC").fetchall()  # noqa: S608
        return [_job(row) for row in rows]

    def get(self, job) -> Job:
        """One job with its points.

        Raises:
            LlmoptError: no such job.
        """
        number = job_id(job)
        with self.runs._connect() as conn:
            row = None
            if self._has_tables(conn):
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE id = ?",  # noqa: S608 - fixed columns
                    (number,),
                ).fetchone()
            if row is None:
                raise LlmoptError(
                    f"there is no job {number} in {self.runs.path}",
                    fix=Fix(cli="`llmopt jobs list` shows the ids", app="choose a job"),
                )
            points = conn.execute(
                "SELECT method, value, task_key, run_id, state FROM job_points "
                "WHERE job_id = ? ORDER BY position",
                (number,),
            ).fetchall()
        found = _job(row)
        found.points = [
            {"method": m, "value": json.loads(v), "task_key": k, "run_id": r, "state": s}
            for m, v, k, r, s in points
        ]
        return found


_COLUMNS = "id, kind, spec, executor, status, done, total, created, updated, driver, cancel, error"


def _job(row: tuple) -> Job:
    jid, kind, spec, executor, status, done, total, created, updated, driver, cancel, error = row
    if status in ACTIVE and not driver_alive(driver):
        status, error = "failed", error or "its driver stopped; run the same command to resume"
    return Job(
        id=jid, kind=kind, spec=json.loads(spec), executor=executor, status=status, done=done,
        total=total, created=created, updated=updated, driver=driver, cancel=bool(cancel),
        error=error,
    )  # fmt: skip
