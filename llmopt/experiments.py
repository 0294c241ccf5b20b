"""The experiment store: every evaluation kept as one run in SQLite, to list, compare and redraw.

One file, ``$LLMOPT_HOME/experiments.sqlite`` (or ``$LLMOPT_EXPERIMENTS``), in WAL mode so that
readers never wait for a writer and several processes (the dashboard, a CLI run, a sweep) can
write at once; each run is written in one transaction, so a run is stored whole or not at all.
The layout carries a version (``PRAGMA user_version``) and is brought up to date by forward
migrations on open. A file that is not an llmopt store (damaged, or another program's) is
renamed aside — never overwritten — and a new store started, with a notice saying where the old
file went.

Tables: ``runs`` (one row per evaluated model: list-view fields as JSON in ``summary``, the rest
in ``details``), ``predictions`` (per-example probabilities as raw float64 bytes), ``masks``
(pruning masks, one bit per weight, per matrix) and ``row_sets`` (the evaluated rows' texts and
labels, once per rows fingerprint), so every view can be redrawn without running a model.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import sqlite3
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from llmopt.errors import Fix, LlmoptError
from llmopt.paths import llmopt_home
from llmopt.sqlitefile import BUSY_MS, begin_immediate, file_lock, inspect, migrate, move_aside

STORE_ENV = "LLMOPT_EXPERIMENTS"  # the store's path; default $LLMOPT_HOME/experiments.sqlite
FILE_NAME = "experiments.sqlite"

# Forward migrations: MIGRATIONS[v] takes a store from version v to v + 1. Never edit a shipped
# entry; append one.
MIGRATIONS = [
    # 0 -> 1: the first layout
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created TEXT NOT NULL,
        parent INTEGER,
        kind TEXT NOT NULL,
        origin TEXT NOT NULL,
        model TEXT NOT NULL,
        model_fingerprint TEXT NOT NULL,
        dataset TEXT NOT NULL,
        rows_fingerprint TEXT NOT NULL,
        n INTEGER NOT NULL,
        config TEXT,
        summary TEXT NOT NULL,
        details TEXT NOT NULL
    );
    CREATE TABLE predictions (
        run_id INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
        classes INTEGER NOT NULL,
        y_true BLOB NOT NULL,
        y_score BLOB NOT NULL
    );
    """,
    # 1 -> 2: names and tags; pruning masks; the evaluated rows' texts; lookup indexes
    """
    ALTER TABLE runs ADD COLUMN name TEXT NOT NULL DEFAULT '';
    ALTER TABLE runs ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE masks (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        matrix TEXT NOT NULL,
        rows INTEGER NOT NULL,
        cols INTEGER NOT NULL,
        zeros INTEGER NOT NULL,
        bits BLOB NOT NULL,
        PRIMARY KEY (run_id, matrix)
    );
    CREATE TABLE row_sets (
        fingerprint TEXT PRIMARY KEY,
        label_names TEXT NOT NULL,
        texts BLOB NOT NULL,
        labels BLOB NOT NULL,
        indices BLOB NOT NULL
    );
    CREATE INDEX runs_by_rows ON runs (rows_fingerprint);
    CREATE INDEX runs_by_base ON runs (model_fingerprint, rows_fingerprint, kind);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

# Fields of a Run kept in the ``summary`` JSON (what a list needs) and in ``details``.
SUMMARY_FIELDS = (
    "model_name", "dataset_name", "split", "rows", "seed", "label_names", "method", "steps",
    "metrics", "intervals", "delta_intervals", "mcnemar", "size_bytes", "params_total",
    "params_nonzero", "latency_ms", "latency_simulated", "agreement", "mean_kl", "flipped",
    "mean_rel_error", "n_truncated", "task",
)  # fmt: skip
DETAIL_FIELDS = ("confusion_matrix", "latency", "fidelity", "report", "notes", "versions")


def store_path() -> Path:
    """Where the store lives: ``$LLMOPT_EXPERIMENTS``, else ``$LLMOPT_HOME/experiments.sqlite``."""
    env = os.environ.get(STORE_ENV, "").strip()
    return Path(env).expanduser() if env else llmopt_home() / FILE_NAME


def now() -> str:
    """The current time, UTC, as stored in ``created``."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Run:
    """One evaluated model on one set of rows; a variant also carries the baseline's metrics.

    ``metrics`` is ``{"baseline": {...}, "compressed": {...} | None}``: the uncompressed base
    model's metrics on these rows and, for a variant, its own. ``intervals`` are 95% bootstrap
    intervals of this run's own model; ``delta_intervals`` and ``mcnemar`` compare a variant
    with the baseline on the same rows.
    """

    model: str  # source as given (bundled, a folder, a hub id, encoder:SRC)
    model_fingerprint: str  # content hash of the base model's tensors
    dataset: str  # source as given (bundled, a CSV path or name, hf:NAME)
    rows_fingerprint: str  # hash of the exact evaluated rows: texts, labels, order
    n: int
    label_names: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)  # {"baseline": {...}, "compressed": {...}}
    kind: str = "base"  # "base" (an uncompressed model) or "variant"
    origin: str = "api"  # what recorded it: cli, app, sweep, api, train
    config: dict | None = None  # the recipe (CompressionConfig.to_dict()); None for a base run
    parent: int | None = None  # the run this one was derived from
    name: str = ""
    tags: list[str] = field(default_factory=list)
    id: int | None = None
    created: str = ""
    model_name: str = ""
    dataset_name: str = ""
    split: str = "test"
    rows: dict = field(default_factory=dict)  # how they were chosen: split, limit, seed, columns
    seed: int | None = None
    method: str = "no compression"  # human description of the config
    steps: list[str] = field(default_factory=list)  # active steps, e.g. ["prune", "quantize"]
    intervals: dict = field(default_factory=dict)  # {metric: [low, high]}
    delta_intervals: dict | None = None  # {metric: [low, high]} of this minus the baseline
    mcnemar: dict | None = None  # {"only_a", "only_b", "p_value"}; a = baseline, b = this
    size_bytes: int = 0
    params_total: int = 0
    params_nonzero: int = 0
    latency_ms: float | None = None  # per text: the paired median where measured
    latency_simulated: bool = False  # the same kernels as the baseline: no latency of its own
    agreement: float | None = None  # with the baseline
    mean_kl: float | None = None  # KL(baseline || this), nats
    flipped: int | None = None  # rows whose prediction differs from the baseline's
    mean_rel_error: float | None = None  # over the compressed layers
    n_truncated: int = 0  # texts longer than the model's maximum length, cut to it
    confusion_matrix: list = field(default_factory=list)
    latency: dict = field(default_factory=dict)
    fidelity: dict | None = None
    report: dict | None = None  # CompressionReport.to_dict()
    notes: list[str] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    task: str = "classify"  # the evaluation task (llmopt.tasks): classify, perplexity, zero-shot

    @property
    def own_metrics(self) -> dict:
        """This run's model's metrics (the compressed side of a variant)."""
        return self.metrics.get("compressed") or self.metrics.get("baseline") or {}

    @property
    def label(self) -> str:
        """A short display name: its name, else '#id method' ('#id model, uncompressed')."""
        if self.name:
            return self.name
        if self.kind == "base":
            return f"#{self.id} {short_source(self.model)}, uncompressed"
        return f"#{self.id} {self.method}"

    def to_json(self, *, full: bool = False) -> dict:
        """The CLI's JSON of this run: the list fields, and with ``full`` everything recorded."""
        keys = ["id", "created", "name", "tags", "parent", "kind", "origin", "model"]
        keys += ["model_fingerprint", "dataset", "rows_fingerprint", "n", "config"]
        keys += list(SUMMARY_FIELDS) + (list(DETAIL_FIELDS) if full else [])
        return {k: _plain(getattr(self, k)) for k in keys}

    @classmethod
    def from_json(cls, data: dict) -> Run:
        """A run from ``to_json`` output (unknown keys are ignored, missing ones default)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class RowSet:
    """The exact rows runs were evaluated on: texts, labels and row numbers in the source."""

    texts: list[str]
    labels: np.ndarray  # (n,) label indices into label_names
    indices: np.ndarray  # (n,) row numbers in the source
    label_names: list[str]


def short_source(source: str) -> str:
    """A model or dataset source as tables show it: a path by its last part
    (``encoder:/a/b/bert`` -> ``encoder:bert``), anything else as it is."""
    prefix = "encoder:" if source.startswith("encoder:") else ""
    rest = source[len(prefix) :]
    if "/" in rest or "\\" in rest:
        rest = rest.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or rest
    return prefix + rest


def _plain(x):
    """JSON-ready values: numpy scalars and arrays to Python, NaN to None."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def _dumps(x) -> str:
    return json.dumps(_plain(x), allow_nan=False, separators=(",", ":"))


def _os_problem(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno == errno.EROFS:
        return "the file system is read-only"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "its folder or file is read-only for this account"
    return exc.strerror or str(exc)


def _damaged_fix(path: Path) -> Fix:
    return Fix(
        cli=f"move {path} aside (llmopt then starts a new store), or set {STORE_ENV} to "
        "another file",
        app=f"ask the server's administrator to move {path.name} aside",
    )


class ExperimentStore:
    """The runs recorded on this machine (see the module docstring for the layout).

    Args:
        path: the store file; default ``store_path()``.

    Attributes:
        notice: a sentence to show the user when opening had to move a file aside, else None.

    Raises:
        LlmoptError: the file was written by a newer llmopt, or its folder cannot be written.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else store_path()
        self.notice: str | None = None
        self.read_only = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LlmoptError(
                f"cannot create the folder of the experiment store {self.path}: {exc.strerror}"
            ) from None
        try:
            self._open()
        except (OSError, LlmoptError) as exc:
            # a healthy store on a read-only mount, an immutable file or a full disk: it can
            # still be listed and shown, read-only, without the lock file
            if not self.path.is_file() or (
                isinstance(exc, LlmoptError) and "cannot be written" not in str(exc)
            ):
                raise
            self.read_only = True
            why = exc.args[0] if isinstance(exc, LlmoptError) else _os_problem(exc)
            self.notice = f"opened read-only, new runs are not recorded: {why}"

    def _open(self) -> None:
        """Check, move aside if damaged, and migrate the store, under its lock file."""
        with file_lock(self.path):
            newer = Fix(
                cli=f"upgrade llmopt, or set {STORE_ENV} to another file",
                app="upgrade llmopt on the server",
            )
            problem = inspect(
                self.path, SCHEMA_VERSION, damaged=_damaged_fix(self.path), newer=newer
            )
            if problem is not None:
                aside = move_aside(self.path)
                self.notice = (
                    f"the experiment store {self.path} {problem}; it was moved to {aside.name} "
                    "(nothing in it was changed) and a new, empty store was started"
                )
            with self._connect() as conn:
                conn.execute("PRAGMA journal_mode = WAL")  # kept in the file from then on
                migrate(conn, MIGRATIONS)

    # ------------------------------------------------------------------ connections

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection for one operation (connections are cheap; threads never share one)."""
        try:
            if self.read_only:  # never creates a -wal, -shm or lock file
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                conn = sqlite3.connect(uri, uri=True, timeout=BUSY_MS / 1000, isolation_level=None)
                try:
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                except sqlite3.OperationalError:  # WAL without its -shm on a read-only mount
                    conn.close()
                    conn = sqlite3.connect(
                        uri.replace("mode=ro", "immutable=1"), uri=True, isolation_level=None
                    )
            else:
                conn = sqlite3.connect(self.path, timeout=BUSY_MS / 1000, isolation_level=None)
        except sqlite3.Error as exc:
            raise LlmoptError(f"cannot open the experiment store {self.path}: {exc}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
            # WAL + NORMAL: a commit is atomic and survives a crash of the process; a power cut
            # may lose the last runs, never the file (FULL would fsync every run: ~10x slower).
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise LlmoptError(
                    f"the experiment store {self.path} stayed locked by another process for "
                    f"{BUSY_MS // 1000} s; try again"
                ) from None
            raise self._damaged(exc) from None
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from None
        finally:
            conn.close()

    def _damaged(self, exc: Exception) -> LlmoptError:
        """The error for an SQLite failure: what is wrong when the file is healthy (a full
        disk, a read-only file or mount), and the move-aside advice only for real damage."""
        text = str(exc).lower()
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith("SQLITE_FULL") or "disk is full" in text:
            return LlmoptError(
                f"the experiment store {self.path} cannot be written: the disk is full "
                "(the store itself is fine)",
                fix=Fix(cli="free some disk space and run again", app="ask the server's "
                        "administrator to free disk space"),
            )  # fmt: skip
        if name.startswith("SQLITE_READONLY") or "readonly" in text or "read-only" in text:
            return LlmoptError(
                f"the experiment store {self.path} cannot be written: it is read-only (a "
                "read-only file, folder or mount; the store itself is fine)",
                fix=Fix(cli=f"make it writable, or set {STORE_ENV} to another file",
                        app="ask the server's administrator to make the store writable"),
            )  # fmt: skip
        return LlmoptError(
            f"the experiment store {self.path} cannot be read ({exc})", fix=_damaged_fix(self.path)
        )

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken at once (BEGIN IMMEDIATE), committed or rolled back whole."""
        with self._connect() as conn:
            begin_immediate(conn)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # ------------------------------------------------------------------ writing

    def add(
        self,
        run: Run,
        *,
        y_true: np.ndarray | None = None,
        y_score: np.ndarray | None = None,
        masks: dict | None = None,
        row_set: RowSet | None = None,
    ) -> int:
        """Store ``run`` (its ``id`` and ``created`` are set here) with what views redraw from.

        Args:
            run: the record.
            y_true: (n,) labels of the rows, in order.
            y_score: (n, classes) the model's probabilities, kept as float64 bytes.
            masks: {matrix name: bool (out, in) array or tensor of kept weights} from pruning.
            row_set: the rows' texts and labels, stored once per ``run.rows_fingerprint``.

        Returns:
            The new run's id.
        """
        run.created = run.created or now()
        summary = _dumps({k: getattr(run, k) for k in SUMMARY_FIELDS})
        details = _dumps({k: getattr(run, k) for k in DETAIL_FIELDS})
        packed = _pack_masks(masks or {})
        rows_blob = None
        if row_set is not None and not self._has_rows(run.rows_fingerprint):
            rows_blob = _pack_rows(row_set)
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO runs (created, parent, kind, origin, model, model_fingerprint, "
                "dataset, rows_fingerprint, n, config, summary, details, name, tags) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.created,
                    run.parent,
                    run.kind,
                    run.origin,
                    run.model,
                    run.model_fingerprint,
                    run.dataset,
                    run.rows_fingerprint,
                    int(run.n),
                    None if run.config is None else _dumps(run.config),
                    summary,
                    details,
                    run.name,
                    _dumps(list(run.tags)),
                ),
            )
            run.id = int(cur.lastrowid)
            if y_score is not None:
                y_score = np.ascontiguousarray(y_score, dtype="<f8")
                conn.execute(
                    "INSERT INTO predictions VALUES (?, ?, ?, ?)",
                    (
                        run.id,
                        int(y_score.shape[1]),
                        np.ascontiguousarray(y_true, dtype="<i4").tobytes(),
                        y_score.tobytes(),
                    ),
                )
            conn.executemany(
                "INSERT INTO masks VALUES (?, ?, ?, ?, ?, ?)",
                [(run.id, *row) for row in packed],
            )
            if rows_blob is not None:
                conn.execute(
                    "INSERT OR IGNORE INTO row_sets VALUES (?, ?, ?, ?, ?)",
                    (run.rows_fingerprint, *rows_blob),
                )
        return run.id

    def _has_rows(self, fingerprint: str) -> bool:
        with self._connect() as conn:
            found = conn.execute("SELECT 1 FROM row_sets WHERE fingerprint = ?", (fingerprint,))
            return found.fetchone() is not None

    def rename(self, run_id: int, name: str) -> None:
        """Give a run a display name ('' clears it).

        Raises:
            LlmoptError: no such run.
        """
        with self._write() as conn:
            self._require(conn, run_id)
            conn.execute("UPDATE runs SET name = ? WHERE id = ?", (str(name).strip(), run_id))

    def set_tags(self, run_id: int, tags: list[str]) -> None:
        """Replace a run's tags (blank ones dropped, duplicates once, order kept).

        Raises:
            LlmoptError: no such run.
        """
        clean = list(dict.fromkeys(t.strip() for t in tags if str(t).strip()))
        with self._write() as conn:
            self._require(conn, run_id)
            conn.execute("UPDATE runs SET tags = ? WHERE id = ?", (_dumps(clean), run_id))

    def delete(self, run_id: int) -> None:
        """Delete a run with its predictions and masks; its children move up to its parent,
        so the lineage stays connected.

        Raises:
            LlmoptError: no such run.
        """
        with self._write() as conn:
            parent = self._require(conn, run_id)
            conn.execute("UPDATE runs SET parent = ? WHERE parent = ?", (parent, run_id))
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    def _require(self, conn: sqlite3.Connection, run_id) -> int | None:
        """The parent of ``run_id``, or a 'no such run' error."""
        row = conn.execute("SELECT parent FROM runs WHERE id = ?", (_run_id(run_id),)).fetchone()
        if row is None:
            raise LlmoptError(
                f"there is no run {run_id} in {self.path}",
                fix=Fix(cli="`llmopt runs list` shows the ids", app="choose a run from the table"),
            )
        return row[0]

    # ------------------------------------------------------------------ reading

    def runs(
        self,
        *,
        ids: list[int] | None = None,
        rows_fingerprint: str | None = None,
        model_fingerprint: str | None = None,
        kind: str | None = None,
        full: bool = False,
    ) -> list[Run]:
        """Stored runs, oldest first, optionally filtered.

        Args:
            ids: only these runs (in id order).
            rows_fingerprint: only runs on these exact rows.
            model_fingerprint: only runs of this base model.
            kind: "base" or "variant".
            full: also read the details (confusion matrix, report, latency, versions).
        """
        where, args = [], []
        if ids is not None:
            ids = [_run_id(i) for i in ids]
            where.append(f"id IN ({','.join('?' * len(ids))})")
            args += ids
        for column, value in [
            ("rows_fingerprint", rows_fingerprint),
            ("model_fingerprint", model_fingerprint),
            ("kind", kind),
        ]:
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        columns = "id, created, name, tags, parent, kind, origin, model, model_fingerprint, "
        columns += "dataset, rows_fingerprint, n, config, summary" + (", details" if full else "")
        sql = f"SELECT {columns} FROM runs"  # noqa: S608 - fixed column names; values bound
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._connect() as conn:
            rows = conn.execute(sql + " ORDER BY id", args).fetchall()
        return [_row_to_run(row, full) for row in rows]

    def get(self, run_id: int) -> Run:
        """One run in full.

        Raises:
            LlmoptError: no such run.
        """
        found = self.runs(ids=[run_id], full=True)
        if not found:
            with self._connect() as conn:
                self._require(conn, run_id)
        return found[0]

    def predictions(self, run_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(y_true (n,), y_score (n, classes)) of a run, or None if it has none."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT classes, y_true, y_score FROM predictions WHERE run_id = ?",
                (_run_id(run_id),),
            ).fetchone()
        if row is None:
            return None
        classes, y_true, y_score = row
        return (
            np.frombuffer(y_true, dtype="<i4").astype(np.int64),
            np.frombuffer(y_score, dtype="<f8").reshape(-1, classes),
        )

    def masks(self, run_id: int) -> dict[str, dict]:
        """A run's pruning masks: {matrix: {"shape", "zeros", "bits"}}; ``bits`` is the packed
        keep-mask (``numpy.packbits`` of the flattened bool array, 1 = kept); {} if none."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT matrix, rows, cols, zeros, bits FROM masks WHERE run_id = ? ORDER BY rowid",
                (_run_id(run_id),),
            ).fetchall()
        return {
            m: {"shape": (r, c), "zeros": z, "bits": np.frombuffer(zlib.decompress(b), np.uint8)}
            for m, r, c, z, b in rows
        }

    def row_set(self, fingerprint: str) -> RowSet | None:
        """The texts and labels of rows with this fingerprint, if any run stored them."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT label_names, texts, labels, indices FROM row_sets WHERE fingerprint = ?",
                (fingerprint,),
            ).fetchone()
        if row is None:
            return None
        names, texts, labels, indices = row
        return RowSet(
            texts=json.loads(zlib.decompress(texts)),
            labels=np.frombuffer(labels, dtype="<i4").astype(np.int64),
            indices=np.frombuffer(indices, dtype="<i8").astype(np.int64),
            label_names=json.loads(names),
        )

    def find_base(self, model_fingerprint: str, rows_fingerprint: str) -> int | None:
        """The latest base run of this model on these rows, if one was recorded."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT max(id) FROM runs WHERE model_fingerprint = ? AND rows_fingerprint = ? "
                "AND kind = 'base'",
                (model_fingerprint, rows_fingerprint),
            ).fetchone()
        return row[0]

    def count(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])


MAX_RUN_ID = 2**63 - 1


def _run_id(value) -> int:
    try:
        number = int(str(value).lstrip("#"))
    except ValueError:
        raise LlmoptError(f"a run id is a whole number, got {value!r}") from None
    if not 1 <= number <= MAX_RUN_ID:  # SQLite's integers are 64-bit: larger ids overflow
        raise LlmoptError(
            f"a run id is a whole number from 1 to {MAX_RUN_ID}, got {str(value)[:40]!r}",
            fix=Fix(cli="`llmopt runs list` shows the ids", app="choose a run from the table"),
        )
    return number


def _row_to_run(row: tuple, full: bool) -> Run:
    (
        run_id,
        created,
        name,
        tags,
        parent,
        kind,
        origin,
        model,
        model_fp,
        dataset,
        rows_fp,
        n,
        config,
        summary,
        *rest,
    ) = row
    data = json.loads(summary)
    if full and rest:
        data.update(json.loads(rest[0]))
    return Run.from_json(
        {
            **data,
            "id": run_id,
            "created": created,
            "name": name,
            "tags": json.loads(tags),
            "parent": parent,
            "kind": kind,
            "origin": origin,
            "model": model,
            "model_fingerprint": model_fp,
            "dataset": dataset,
            "rows_fingerprint": rows_fp,
            "n": n,
            "config": None if config is None else json.loads(config),
        }
    )


def _pack_masks(masks: dict) -> list[tuple]:
    """(matrix, rows, cols, zeros, zlib(packbits(keep))) per mask; 1 bit per weight."""
    packed = []
    for name, mask in masks.items():
        keep = np.asarray(mask.numpy() if hasattr(mask, "numpy") else mask, dtype=bool)
        keep = keep.reshape(keep.shape[0], -1) if keep.ndim != 2 else keep
        zeros = int(keep.size - np.count_nonzero(keep))
        bits = zlib.compress(np.packbits(keep.ravel()).tobytes(), 1)
        packed.append((str(name), int(keep.shape[0]), int(keep.shape[1]), zeros, bits))
    return packed


def _pack_rows(rows: RowSet) -> tuple:
    return (
        _dumps(list(rows.label_names)),
        zlib.compress(json.dumps(list(rows.texts), ensure_ascii=False).encode("utf-8"), 6),
        np.ascontiguousarray(rows.labels, dtype="<i4").tobytes(),
        np.ascontiguousarray(rows.indices, dtype="<i8").tobytes(),
    )
