"""The results database: one DuckDB file, one row per result, safe under concurrent writers.

Every measure evaluated by ``repscope analyze`` becomes one row of the ``results`` table, keyed
by a deterministic task key (a hash of source, layer(s), measure, resolved parameters and the
selected rows). The key is the primary key, so re-running a plan skips what is already there
and a killed run resumes without duplicates. A second table, ``runs``, records each
invocation's plan and provenance (model, data, versions, machine).

Concurrency: DuckDB locks a database file for its whole connection (a read-only connection
blocks every writer), so readers and writers never share a file:

- ``results.duckdb`` is a published, read-only **snapshot**: writers replace it atomically
  (copy, fsync, rename) and never open it for writing, so any number of readers, including a
  plain ``duckdb.connect(path, read_only=True)`` kept open in a notebook, never block or break
  a running ``repscope analyze``. A reader's open connection keeps the snapshot it opened; a
  new connection sees the newest one.
- Writes go to a private working copy, ``.results.duckdb.work``, each in one short transaction
  under an ``fcntl`` lock on ``results.duckdb.lock`` (exclusive), so two writing processes
  serialise instead of failing or corrupting it. The working copy is durable at once (a kill
  loses nothing written); the snapshot is republished after a write when due (at most ~10% of
  the time goes to publishing; always at the start and end of a run). ``.results.duckdb.work.base``
  records which snapshot the working copy continues: if ``results.duckdb`` is deleted or
  replaced, the working copy is discarded and rebuilt from it.
- repscope's own readers (:func:`load_results`, the report, resume) read the working copy
  under a shared lock when it is current, so they see every written row.

Every failure to open, read or write the database (not a DuckDB file, damaged, a full disk, a
read-only directory) is a one-line :class:`ResultsDBError` naming the file. In
``repscope analyze`` the driver is the only writer; workers only compute.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from repscope.analysis.tidy import TIDY_COLUMNS, tidy_results  # noqa: F401 (public here too)
from repscope.errors import UserError

__all__ = [
    "RESULT_COLUMNS",
    "ResultsDB",
    "ResultsDBError",
    "decode_json_columns",
    "export_results",
    "load_findings",
    "load_results",
    "load_runs",
    "tidy_results",
]

log = logging.getLogger(__name__)

DB_NAME = "results.duckdb"


class ResultsDBError(UserError):
    """The results database cannot be opened, read or written; the message names the file."""

#: column name -> DuckDB type, in table order.
RESULT_COLUMNS: dict[str, str] = {
    "key": "VARCHAR PRIMARY KEY",  # deterministic task key: hash(source, layers, measure, params, rows)
    "run_id": "VARCHAR",  # the run that computed the row
    "source": "VARCHAR",  # store path the rows were read from
    "source_id": "VARCHAR",  # hash identifying the store's content
    "model": "VARCHAR",
    "model_hash": "VARCHAR",
    "data": "VARCHAR",
    "data_hash": "VARCHAR",
    "checkpoint": "VARCHAR",
    "checkpoint_step": "BIGINT",  # training step of the checkpoint (NULL: none, or not known)
    "layer": "VARCHAR",
    "layer_index": "INTEGER",  # position of ``layer`` in the store (for ordering plots)
    "layer_b": "VARCHAR",  # second layer of a pair measure, NULL for single measures
    "layer_b_index": "INTEGER",
    "measure": "VARCHAR",  # registered name
    "family": "VARCHAR",
    "kind": "VARCHAR",  # 'single' or 'pair'
    "variant": "VARCHAR",  # user-set parameters, e.g. 'k=20' ('' = defaults)
    "params": "JSON",  # every resolved parameter
    "value": "DOUBLE",
    "stderr": "DOUBLE",
    "ci_low": "DOUBLE",
    "ci_high": "DOUBLE",
    "n": "BIGINT",  # rows the estimate was computed from
    "seed": "BIGINT",
    "rows_hash": "VARCHAR",  # hash of the selected row indices
    "repscope_version": "VARCHAR",
    "started_at": "TIMESTAMP",
    "finished_at": "TIMESTAMP",
    "seconds": "DOUBLE",
    "status": "VARCHAR",  # 'ok' or 'error'
    "error": "VARCHAR",
    "diagnostics": "JSON",  # the Estimate's diagnostics (arrays as tagged lists)
    "result_type": "VARCHAR",  # Estimate subclass name
    "extra": "JSON",  # typed fields of Estimate subclasses
}

RUN_COLUMNS: dict[str, str] = {
    "run_id": "VARCHAR PRIMARY KEY",
    "started_at": "TIMESTAMP",
    "finished_at": "TIMESTAMP",
    "status": "VARCHAR",  # 'running', 'done', 'failed'
    "n_tasks": "BIGINT",
    "n_done": "BIGINT",
    "n_failed": "BIGINT",
    "plan": "JSON",  # the resolved plan
    "provenance": "JSON",  # model, data, hashes, versions, machine
}


FINDING_COLUMNS: dict[str, str] = {
    "key": "VARCHAR PRIMARY KEY",  # hash(source_id, rows_hash, layer, check_name)
    "run_id": "VARCHAR",  # the run that made the check
    "source_id": "VARCHAR",
    "rows_hash": "VARCHAR",
    "checkpoint": "VARCHAR",
    "layer": "VARCHAR",
    "layer_index": "INTEGER",
    "check_name": "VARCHAR",  # 'massive_activations'
    "warn": "BOOLEAN",  # whether the check warns
    "coordinate": "INTEGER",  # the coordinate with the largest variance share
    "variance_share": "DOUBLE",  # its share of the layer's total variance
    "max_abs": "DOUBLE",  # largest |x| among the flagged coordinates
    "n_massive_rows": "BIGINT",
    "n": "BIGINT",  # rows checked
    "exclude_positions": "VARCHAR",  # suggested positions, comma-separated ('' = none)
    "message": "VARCHAR",  # one line for people
    "detail": "JSON",  # the full finding (every flagged coordinate, positions, token ids)
}
"""One row per (layer, check) of the data checks made before measuring (``findings`` table)."""


@dataclass(frozen=True)
class ResultsDB:
    """A results database at ``path`` (a ``.duckdb`` file); created on first write.

    ``path`` is the published snapshot; see the module docstring for the working copy.
    """

    path: Path
    _publish: dict[str, float] = field(default_factory=dict, compare=False, repr=False,
                                       hash=False)

    @classmethod
    def at(cls, path: str | Path) -> ResultsDB:
        """The database ``path``, or ``path/results.duckdb`` when ``path`` is a directory."""
        path = Path(path)
        if path.is_dir() or (not path.suffix and not path.exists()):
            path = path / DB_NAME
        return cls(path)

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @property
    def work_path(self) -> Path:
        """The private working copy every write goes to."""
        return self.path.with_name(f".{self.path.name}.work")

    @property
    def _base_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.work.base")

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        try:
            lock = open(self.lock_path, "a+b")  # noqa: SIM115 (closed below)
        except OSError:
            if exclusive:
                raise
            lock = None  # a read-only directory: no writer can be there, read without the lock
        if lock is None:
            yield
            return
        with lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    @contextlib.contextmanager
    def connect(self, *, write: bool, publish: Literal["always", "due", "never"] = "always",
                ) -> Iterator[Any]:
        """A short-lived connection under the file lock (exclusive when ``write``).

        Writes go to the working copy; after the block, the snapshot ``path`` is republished
        (``publish="always"``), when due (``"due"``: at most ~10% of the time spent
        publishing), or not (``"never"``). Reads see the newest rows.
        """
        if not write and not self.path.exists() and not self.work_path.exists():
            raise FileNotFoundError(
                f"No results database at {str(self.path)!r}. Run 'repscope analyze' first, "
                "or pass the directory or .duckdb file it wrote."
            )
        with contextlib.ExitStack() as stack:
            try:
                if write:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                stack.enter_context(self._locked(write))
                if write:
                    self._remove_stale_snapshots()
                source = self._current_work() if write else (
                    self.work_path if self._work_is_current() else self.path)
            except OSError as exc:
                raise self._error("write" if write else "read", exc) from None
            if not write and not source.exists():
                raise FileNotFoundError(f"No results database at {str(self.path)!r}.")
            con = self._open(source, write=write)
            try:
                if write:
                    _ensure_schema(con)
                yield con
                if write:
                    con.execute("CHECKPOINT")  # the working file alone holds every row
            except _duckdb_errors() as exc:
                raise self._error("read" if not write else "write", exc) from None
            finally:
                con.close()
            if write and publish != "never":
                self._publish_snapshot(force=publish == "always")

    # -- the working copy and the published snapshot -------------------------------------------

    def _stat(self) -> list[int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return [st.st_ino, st.st_size, st.st_mtime_ns]

    def _work_is_current(self) -> bool:
        """The working copy continues the current snapshot (or none was published yet)."""
        if not self.work_path.exists():
            return False
        try:
            base = json.loads(self._base_path.read_text())
        except (OSError, ValueError):
            return False
        return base.get("snapshot") == self._stat()

    def _current_work(self) -> Path:
        """The working copy, rebuilt from the snapshot when it does not continue it."""
        if not self._work_is_current():
            self._reset_work()
        return self.work_path

    def _reset_work(self) -> None:
        import shutil

        from repscope._io import atomic_write_text

        for p in (self.work_path, self.work_path.with_name(self.work_path.name + ".wal")):
            p.unlink(missing_ok=True)
        if self.path.exists():
            shutil.copyfile(self.path, self.work_path)
            wal = self.path.with_name(self.path.name + ".wal")  # left by an in-place writer
            if wal.exists():
                shutil.copyfile(wal, self.work_path.with_name(self.work_path.name + ".wal"))
        atomic_write_text(self._base_path, json.dumps({"snapshot": self._stat()}))

    def _publish_snapshot(self, force: bool) -> None:
        """Copy the working file over ``path`` atomically (readers keep what they opened)."""
        import shutil

        from repscope._io import atomic_write, atomic_write_text

        state = self._publish
        now = time.monotonic()
        if not force and now - state.get("at", -math.inf) < 10 * state.get("cost", 0.0):
            return
        if self.work_path.with_name(self.work_path.name + ".wal").exists():
            log.debug("not publishing %s: its working copy has a WAL", self.path)
            return
        try:
            with open(self.work_path, "rb") as src:
                atomic_write(self.path, lambda f: shutil.copyfileobj(src, f, 1 << 22))
            atomic_write_text(self._base_path, json.dumps({"snapshot": self._stat()}))
        except OSError as exc:
            raise self._error("write", exc) from None
        state["at"], state["cost"] = time.monotonic(), time.monotonic() - now

    def publish(self) -> None:
        """Publish the snapshot now (every written row becomes visible to plain readers)."""
        with self._locked(True):
            if self.work_path.exists():
                self._publish_snapshot(force=True)

    def _remove_stale_snapshots(self) -> None:
        """Temporary snapshot files of a killed writer (we hold the exclusive lock)."""
        from repscope._io import remove_stale_temporaries

        remove_stale_temporaries(self.path.parent, lambda n: n == self.path.name)

    def _open(self, source: Path, *, write: bool) -> Any:
        import duckdb

        try:
            return duckdb.connect(str(source), read_only=not write)
        except _duckdb_errors() as exc:
            if write and source == self.work_path and self.path.exists():
                log.warning("the working copy %s is unreadable (%s); rebuilding it from %s",
                            source, exc, self.path)
                self.work_path.unlink(missing_ok=True)
                self._reset_work()
                try:
                    return duckdb.connect(str(source))
                except _duckdb_errors() as again:
                    raise self._error("open", again) from None
            raise self._error("open", exc) from None

    def _error(self, what: str, exc: BaseException) -> ResultsDBError:
        from repscope.errors import one_line

        reason = one_line(getattr(exc, "strerror", None) or str(exc))
        if what == "write":
            return ResultsDBError(
                f"Cannot write the results database {str(self.path)!r}: {reason}. The results "
                f"written before are kept; fix the cause (e.g. free disk space) and rerun the "
                f"same command to resume.")
        if isinstance(exc, OSError):
            return ResultsDBError(f"Cannot {what} the results database {str(self.path)!r}: "
                                  f"{reason}.")
        return ResultsDBError(
            f"Cannot {what} the results database {str(self.path)!r}: it is not a DuckDB "
            f"database, or it is damaged ({reason}). Move it away to start a new one.")

    # -- writes -------------------------------------------------------------------------------

    def write_results(self, rows: Sequence[Mapping[str, Any]], *,
                      publish: Literal["always", "due", "never"] = "always") -> int:
        """Insert or replace ``rows`` (dicts keyed by column) in one transaction; return count.

        A row whose key is already present with ``status='ok'`` is kept, not overwritten:
        a result once computed never changes, whichever process wrote it first. ``publish``:
        when the snapshot ``path`` is republished (see :meth:`connect`).
        """
        if not rows:
            return 0
        cols = list(RESULT_COLUMNS)
        bad = sorted({c for r in rows for c in r} - set(cols))
        if bad:
            raise ValueError(f"Unknown result column(s) {bad}; known: {cols}.")
        values = [tuple(_to_db(r.get(c)) for c in cols) for r in rows]
        marks = ", ".join("?" for _ in cols)
        with self.connect(write=True, publish=publish) as con:
            con.execute("BEGIN TRANSACTION")
            keys = [v[0] for v in values]
            done = self._ok_keys(con, keys)
            fresh = [v for v in values if v[0] not in done]
            if fresh:
                con.executemany(
                    f"INSERT OR REPLACE INTO results ({', '.join(cols)}) VALUES ({marks})",
                    fresh,
                )
            con.execute("COMMIT")
        return len(fresh)

    def start_run(self, run_id: str, plan: Mapping[str, Any], provenance: Mapping[str, Any],
                  n_tasks: int, started_at: Any) -> None:
        """Record the start of a run."""
        with self.connect(write=True) as con:
            con.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, NULL, 'running', ?, 0, 0, ?, ?)",
                [run_id, started_at, n_tasks, json.dumps(plan), json.dumps(provenance)],
            )

    def finish_run(self, run_id: str, *, status: str, n_done: int, n_failed: int,
                   finished_at: Any) -> None:
        """Record the end of a run."""
        with self.connect(write=True) as con:
            con.execute(
                "UPDATE runs SET finished_at = ?, status = ?, n_done = ?, n_failed = ? "
                "WHERE run_id = ?",
                [finished_at, status, n_done, n_failed, run_id],
            )

    def write_findings(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert or replace data-check rows (see :data:`FINDING_COLUMNS`); return count."""
        if not rows:
            return 0
        cols = list(FINDING_COLUMNS)
        bad = sorted({c for r in rows for c in r} - set(cols))
        if bad:
            raise ValueError(f"Unknown finding column(s) {bad}; known: {cols}.")
        marks = ", ".join("?" for _ in cols)
        with self.connect(write=True) as con:
            con.executemany(f"INSERT OR REPLACE INTO findings ({', '.join(cols)}) "
                            f"VALUES ({marks})", [tuple(_to_db(r.get(c)) for c in cols)
                                                  for r in rows])
        return len(rows)

    # -- reads --------------------------------------------------------------------------------

    def done_keys(self, keys: Iterable[str] | None = None) -> set[str]:
        """Keys (of ``keys``, or all) already present with ``status='ok'``."""
        if not self.path.exists() and not self._work_is_current():
            return set()
        with self.connect(write=False) as con:
            if not _has_table(con, "results"):
                return set()
            return self._ok_keys(con, None if keys is None else list(keys))

    @staticmethod
    def _ok_keys(con: Any, keys: list[str] | None) -> set[str]:
        if keys is None:
            rows = con.execute("SELECT key FROM results WHERE status = 'ok'").fetchall()
        else:
            if not keys:
                return set()
            rows = con.execute(
                "SELECT key FROM results WHERE status = 'ok' AND key IN "
                "(SELECT unnest(?::VARCHAR[]))", [keys]
            ).fetchall()
        return {r[0] for r in rows}

    def query(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        """Run a read-only SQL query; return a pandas DataFrame."""
        with self.connect(write=False) as con:
            return con.execute(sql, params or []).df()


def _duckdb_errors() -> tuple[type[BaseException], ...]:
    import duckdb

    return (duckdb.Error, OSError)


def _has_table(con: Any, name: str) -> bool:
    rows = con.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchall()
    return bool(rows)


def _ensure_schema(con: Any) -> None:
    for table, columns in (("results", RESULT_COLUMNS), ("runs", RUN_COLUMNS),
                           ("findings", FINDING_COLUMNS)):
        body = ", ".join(f"{c} {t}" for c, t in columns.items())
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({body})")
        have = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
        for c, t in columns.items():  # databases written before a column was added
            if c not in have:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {c} {t}")


def _to_db(value: Any) -> Any:
    """Python values for DuckDB: JSON text for mappings, None for NaN."""
    if isinstance(value, Mapping):
        from repscope.results import to_jsonable

        return json.dumps(to_jsonable(value), allow_nan=True)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def load_results(path: str | Path, *, status: str | None = "ok",
                 measure: str | None = None, layer: str | None = None) -> Any:
    """The results as a pandas DataFrame, one row per result (see :data:`RESULT_COLUMNS`).

    ``path`` is a ``.duckdb`` file or the directory ``repscope analyze`` wrote. Filter by
    ``status`` ('ok', 'error' or None for all), ``measure`` and ``layer``. Rows are sorted by
    measure, variant and layer order. ``params``, ``diagnostics`` and ``extra`` stay JSON text;
    :func:`decode_json_columns` turns them into Python objects.

    Parameters
    ----------
    path : path
        A ``.duckdb`` file or the directory ``repscope analyze`` wrote.
    status : {'ok', 'error'} or None, default 'ok'
    measure, layer : str, optional

    Returns
    -------
    pandas.DataFrame
        One row per result, columns :data:`RESULT_COLUMNS` (:func:`tidy_results` for a tidy
        frame with p-values as columns).
    """
    db = ResultsDB.at(path)
    where, args = [], []
    for col, val in (("status", status), ("measure", measure), ("layer", layer)):
        if val is not None:
            where.append(f"{col} = ?")
            args.append(val)
    sql = "SELECT * FROM results"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY measure, variant, layer_index, layer_b_index NULLS FIRST"
    with db.connect(write=False) as con:
        if not _has_table(con, "results"):
            import pandas as pd

            return pd.DataFrame(columns=list(RESULT_COLUMNS))
        return con.execute(sql, args).df()


def load_runs(path: str | Path) -> Any:
    """The ``runs`` table (one row per ``repscope analyze`` invocation) as a DataFrame."""
    db = ResultsDB.at(path)
    with db.connect(write=False) as con:
        if not _has_table(con, "runs"):
            import pandas as pd

            return pd.DataFrame(columns=list(RUN_COLUMNS))
        return con.execute("SELECT * FROM runs ORDER BY started_at").df()


def load_findings(path: str | Path, *, warn_only: bool = False) -> Any:
    """The ``findings`` table (data checks such as massive activations) as a DataFrame.

    One row per (store, rows, layer, check), ordered by layer; ``detail`` stays JSON text.
    ``warn_only`` keeps the rows that warn.

    Parameters
    ----------
    path : path
        A ``.duckdb`` file or the directory ``repscope analyze`` wrote.
    warn_only : bool, default False

    Returns
    -------
    pandas.DataFrame
        Columns :data:`FINDING_COLUMNS`.
    """
    db = ResultsDB.at(path)
    with db.connect(write=False) as con:
        if not _has_table(con, "findings"):
            import pandas as pd

            return pd.DataFrame(columns=list(FINDING_COLUMNS))
        where = " WHERE warn" if warn_only else ""
        return con.execute(f"SELECT * FROM findings{where} "
                           f"ORDER BY checkpoint NULLS FIRST, layer_index, check_name").df()


def decode_json_columns(df: Any, columns: Sequence[str] = ("params", "diagnostics", "extra")) -> Any:
    """Return a copy of ``df`` with JSON text columns decoded (numpy arrays restored)."""
    from repscope.results import _from_jsonable

    out = df.copy()
    for col in columns:
        if col in out:
            out[col] = [
                _from_jsonable(json.loads(v)) if isinstance(v, str) else v for v in out[col]
            ]
    return out


def export_results(path: str | Path, out: str | Path, *, status: str | None = None,
                   measure: str | None = None, layer: str | None = None) -> Path:
    """Export results (filtered as in :func:`load_results`) to ``out``, ``.parquet`` or ``.csv``.

    JSON columns (params, diagnostics, extra) are written as JSON text, so
    ``load_results`` and a Parquet/CSV reader give the same table.
    """
    out = Path(out)
    if out.suffix not in (".parquet", ".csv"):
        raise ValueError(
            f"Export file {str(out)!r} must end in .parquet or .csv; got suffix {out.suffix!r}."
        )
    df = load_results(path, status=status, measure=measure, layer=layer)
    from repscope._io import atomic_write

    if out.suffix == ".parquet":
        atomic_write(out, lambda f: df.to_parquet(f, index=False))
    else:
        atomic_write(out, lambda f: f.write(df.to_csv(index=False).encode("utf-8")))
    return out
