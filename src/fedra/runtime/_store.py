"""Server state in a database through SQLAlchemy: SQLite by default, PostgreSQL by URL.

One database can hold several jobs. Four tables, created with ``metadata.create_all`` on first use
(there are no migrations yet: no Alembic; a later schema change will need one)::

    jobs              id, name (unique), created_at
    checkpoints       id, job_id, round, model (safetensors bytes), state (StrategyState bytes),
                      model_sha256, state_sha256, created_at          unique (job_id, round)
    checkpoint_extra  checkpoint_id, name, data (a JSON document), sha256      key (checkpoint_id, name)
    clients           job_id, name, first_seen, last_seen, rounds_participated, quarantined

``checkpoint_extra`` holds other components' state by name (the privacy accountant as ``"privacy"``;
later e.g. a quarantine reputation), the same generic map as the file store's ``extra-r*.json``. It is a
table of its own rather than a column so that a database written before it existed needs no ALTER:
``create_all`` adds the missing table, and its older checkpoints load with an empty map.

A checkpoint holds what :class:`~fedra.runtime.CheckpointStore` holds, the global model (the same
safetensors bytes as its ``model-r*.safetensors`` file) and the strategy state (round, RNG, optimizer
moments), plus optionally the client registry, all written in **one transaction**: a crash at any moment
(``kill -9`` included) leaves the previous checkpoint or the new one, never a mix. Only the latest ``keep``
checkpoints of a job are kept; older ones are deleted in the same transaction.

Every call opens its own connection and returns it at once (no pool is held), so a store can be used
across ``fork`` and needs no closing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, final

import numpy as np
from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import NullPool, StaticPool

from fedra.errors import ConfigError, RecordError, StateError
from fedra.records import decode_arrays, encode_arrays
from fedra.runtime._checkpoint import Checkpoint, ClientRecord, check_extra
from fedra.strategy import StrategyState

__all__ = ["SQL_MAX_BLOB_BYTES", "ClientRecord", "SqlStateStore"]

#: Largest model or state blob a database checkpoint accepts: PostgreSQL's ``bytea`` holds at most 1 GB
#: and SQLite's default maximum string/blob length is 1,000,000,000 bytes.
SQL_MAX_BLOB_BYTES = 1_000_000_000

_metadata = MetaData()

_jobs = Table(
    "jobs", _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

_checkpoints = Table(
    "checkpoints", _metadata,
    # ``id`` orders saves: the latest checkpoint is the last one saved, as with the file store's manifest
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("round", Integer, nullable=False),
    Column("model", LargeBinary, nullable=False),
    Column("state", LargeBinary, nullable=False),
    Column("model_sha256", String(64), nullable=False),
    Column("state_sha256", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("job_id", "round"),
)

_extra = Table(
    "checkpoint_extra", _metadata,
    Column("checkpoint_id", Integer, ForeignKey("checkpoints.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("sha256", String(64), nullable=False),
)

_clients = Table(
    "clients", _metadata,
    Column("job_id", Integer, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("first_seen", Integer, nullable=False),
    Column("last_seen", Integer, nullable=False),
    Column("rounds_participated", Integer, nullable=False),
    Column("quarantined", Boolean, nullable=False),
)


def _redacted(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _normalise_url(url: str | os.PathLike[str]) -> URL:
    """A URL, or a plain path meaning an SQLite file there."""
    if isinstance(url, os.PathLike) or "://" not in url:
        return URL.create("sqlite", database=str(Path(url).absolute()))
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"state store URL: expected a database URL such as sqlite:///state.db or "
                          f"postgresql+psycopg://user:password@host/db, got {url!r}") from exc


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    """Foreign keys on; and the sqlite3 module's own transaction handling off (see ``_sqlite_begin``)."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """Begin every transaction ourselves, taking the write lock at once.

    Left to itself, Python's sqlite3 begins a transaction only at the first write, so a read-then-write
    (a client's update) could interleave with another process; ``IMMEDIATE`` also waits for the lock
    (the busy timeout) instead of failing when two writers meet.
    """
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sha256(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


@final
class SqlStateStore:
    """Checkpoints and the client registry of one job, in an SQL database.

    Takes the place of :class:`~fedra.runtime.CheckpointStore` (same ``save``/``load``), so the driver
    can use either.

    Parameters
    ----------
    url
        A SQLAlchemy URL: ``sqlite:///path/state.db`` (the default kind; a plain path means an SQLite
        file there, and its directory is created) or ``postgresql+psycopg://user:password@host/db``.
    job
        The job's name: one database holds any number of jobs, each with its own checkpoints and clients.
    keep
        How many of the job's latest checkpoints to keep (at least 1).

    Notes
    -----
    Blobs are stored as ``LargeBinary`` (PostgreSQL ``bytea``, SQLite ``BLOB``): a model or state larger
    than :data:`SQL_MAX_BLOB_BYTES` (1 GB, a limit of both databases) is refused with a
    :class:`~fedra.errors.StateError`; use the file-based ``CheckpointStore`` for such models. A whole
    checkpoint passes through memory a few times on save and load.

    The schema is created with ``metadata.create_all`` on first use; there are no migrations (no Alembic)
    yet. Every database failure, a connection refused included, is raised as a
    :class:`~fedra.errors.StateError` naming the URL with its password hidden.
    """

    def __init__(self, url: str | os.PathLike[str], *, job: str = "default", keep: int = 2) -> None:
        if keep < 1:
            raise ConfigError(f"keep: expected at least 1 checkpoint, got {keep}")
        if not job or len(job) > 255:
            raise ConfigError(f"job: expected a name of 1 to 255 characters, got {job!r}")
        self.url = _normalise_url(url)
        self.job = job
        self.keep = keep
        self._engine: Engine | None = None
        self._job_id: int | None = None

    def __repr__(self) -> str:
        return f"SqlStateStore({_redacted(self.url)!r}, job={self.job!r}, keep={self.keep})"

    @property
    def directory(self) -> str:
        """Where the checkpoints live, for messages: the URL (password hidden) and the job.

        Named like ``CheckpointStore.directory`` so the driver's messages work with either store.
        """
        return f"{_redacted(self.url)} (job {self.job!r})"

    # -- connections -----------------------------------------------------------------------------
    def _make_engine(self) -> Engine:
        url = self.url
        if url.get_backend_name() == "sqlite":
            if url.database in (None, "", ":memory:"):
                # one shared connection, or each call would see a new, empty in-memory database
                engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
            else:
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, poolclass=NullPool)
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_begin)
            return engine
        return create_engine(url, poolclass=NullPool)

    def _fail(self, doing: str, exc: Exception) -> StateError:
        # the DBAPI's own message: SQLAlchemy's would quote the statement's parameters (the blobs)
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return StateError(
            f"cannot {doing} in {self.directory}: {detail[0] if detail else type(exc).__name__}; "
            "check that the database server is running and reachable, and the URL, user and password"
        )

    @contextmanager
    def _transaction(self, doing: str, *, snapshot: bool = False) -> Iterator[Connection]:
        """One transaction (committed on success, rolled back on error), with errors mapped to StateError.

        ``snapshot``: every statement reads the same snapshot (PostgreSQL's REPEATABLE READ; SQLite's
        transactions always do), so what is read together is consistent even while another process
        commits: under READ COMMITTED each statement would see the latest commit, and a checkpoint read
        before a concurrent save could come with the client registry of the save after it.
        """
        try:
            if self._engine is None:
                engine = self._make_engine()
                _metadata.create_all(engine)
                self._engine = engine
            if self._job_id is None:
                with self._engine.begin() as conn:
                    self._job_id = self._ensure_job(conn)
            if snapshot and self.url.get_backend_name() != "sqlite":
                with self._engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, \
                        conn.begin():
                    yield conn
            else:
                with self._engine.begin() as conn:
                    yield conn
        except (SQLAlchemyError, ImportError, OSError) as exc:
            raise self._fail(doing, exc) from exc

    def _ensure_job(self, conn: Connection) -> int:
        found = conn.scalar(select(_jobs.c.id).where(_jobs.c.name == self.job))
        if found is not None:
            return int(found)
        try:
            with conn.begin_nested():  # another process may create the same job at the same moment
                conn.execute(insert(_jobs).values(name=self.job, created_at=datetime.now(UTC)))
        except IntegrityError:
            pass
        return int(conn.execute(select(_jobs.c.id).where(_jobs.c.name == self.job)).scalar_one())

    def close(self) -> None:
        """Release the engine (only an in-memory SQLite database holds a connection between calls)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
            self._job_id = None

    def __enter__(self) -> SqlStateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checkpoints -----------------------------------------------------------------------------
    def save(self, round: int, params: Mapping[str, np.ndarray], state: StrategyState, *,
             clients: Iterable[ClientRecord] | None = None, extra: Mapping[str, bytes] | None = None
             ) -> None:
        """Save the checkpoint after ``round`` (and the given client records) in one transaction.

        ``extra``: other components' state by name, each a JSON document (UTF-8 bytes). A checkpoint
        already saved for ``round`` is replaced; all but the latest ``keep`` are deleted.
        """
        model = encode_arrays(params, {"fedra.round": str(round)})
        state_bytes = state.to_bytes()
        extras = check_extra(extra)
        for what, blob in (("model", model), ("strategy state", state_bytes),
                           *((f"extra state {k!r}", v) for k, v in extras.items())):
            if len(blob) > SQL_MAX_BLOB_BYTES:
                raise StateError(
                    f"cannot checkpoint round {round} in {self.directory}: the {what} is {len(blob):,} "
                    f"bytes, expected at most {SQL_MAX_BLOB_BYTES:,} (the database's blob limit); "
                    "use the file-based CheckpointStore for models this large"
                )
        records = list(clients or ())
        with self._transaction(f"save the checkpoint of round {round}") as conn:
            job_id = self._job_id
            ckpts = _checkpoints.c
            gone = select(ckpts.id).where(ckpts.job_id == job_id, ckpts.round == round)
            conn.execute(delete(_extra).where(_extra.c.checkpoint_id.in_(gone)))
            conn.execute(delete(_checkpoints).where(ckpts.job_id == job_id, ckpts.round == round))
            inserted = conn.execute(insert(_checkpoints).values(
                job_id=job_id, round=round, model=model, state=state_bytes, model_sha256=_sha256(model),
                state_sha256=_sha256(state_bytes), created_at=datetime.now(UTC),
            ))
            key = inserted.inserted_primary_key
            assert key is not None  # a single-row insert always reports its primary key
            checkpoint_id = key[0]
            for name, data in extras.items():
                conn.execute(insert(_extra).values(checkpoint_id=checkpoint_id, name=name, data=data,
                                                   sha256=_sha256(data)))
            oldest_kept = conn.scalar(select(ckpts.id).where(ckpts.job_id == job_id)
                                      .order_by(ckpts.id.desc()).offset(self.keep - 1).limit(1))
            if oldest_kept is not None:
                # explicit, not only ON DELETE CASCADE: a database whose foreign keys are off keeps no orphans
                old = select(ckpts.id).where(ckpts.job_id == job_id, ckpts.id < oldest_kept)
                conn.execute(delete(_extra).where(_extra.c.checkpoint_id.in_(old)))
                conn.execute(delete(_checkpoints).where(ckpts.job_id == job_id, ckpts.id < oldest_kept))
            for rec in records:
                self._upsert_client(conn, rec)

    def load(self) -> Checkpoint | None:
        """The job's latest checkpoint, or ``None`` when it has none.

        Raises
        ------
        StateError
            The checkpoint's bytes do not match their sha256 (naming the round), cannot be decoded, or
            the database cannot be reached.
        """
        ckpts = _checkpoints.c
        with self._transaction("load the latest checkpoint", snapshot=True) as conn:
            row = conn.execute(
                select(ckpts.id, ckpts.round, ckpts.model, ckpts.state, ckpts.model_sha256, ckpts.state_sha256)
                .where(ckpts.job_id == self._job_id).order_by(ckpts.id.desc()).limit(1)
            ).first()
            extra_rows = [] if row is None else conn.execute(
                select(_extra.c.name, _extra.c.data, _extra.c.sha256)
                .where(_extra.c.checkpoint_id == row.id).order_by(_extra.c.name)
            ).all()
            clients = self._read_clients(conn)  # in the same snapshot as the checkpoint
        if row is None:
            return None
        rnd = int(row.round)
        for what, blob, digest in (("model", row.model, row.model_sha256),
                                   ("strategy state", row.state, row.state_sha256),
                                   *((f"extra state {r.name!r}", r.data, r.sha256) for r in extra_rows)):
            if _sha256(blob) != digest:
                raise StateError(
                    f"checkpoint of round {rnd} in {self.directory}: the {what}'s sha256 does not match "
                    "the one saved with it; the row is corrupt: restore the database from a backup or "
                    "delete this job's checkpoints to start over"
                )
        try:
            arrays, _ = decode_arrays(row.model)
            state = StrategyState.from_bytes(row.state)
        except RecordError as exc:
            raise StateError(f"cannot load the checkpoint of round {rnd} from {self.directory}: {exc}"
                             ) from exc
        return Checkpoint(round=rnd, params={k: np.array(v) for k, v in arrays.items()}, state=state,
                          clients=tuple(clients), extra={r.name: bytes(r.data) for r in extra_rows})

    def rounds(self) -> list[int]:
        """The rounds of the job's kept checkpoints, oldest first."""
        ckpts = _checkpoints.c
        with self._transaction("list checkpoints") as conn:
            found = conn.scalars(select(ckpts.round).where(ckpts.job_id == self._job_id)
                                 .order_by(ckpts.id)).all()
        return [int(r) for r in found]

    def delete_job(self) -> None:
        """Delete the job: its checkpoints, its client registry and its row."""
        with self._transaction(f"delete job {self.job!r}") as conn:
            mine = select(_checkpoints.c.id).where(_checkpoints.c.job_id == self._job_id)
            conn.execute(delete(_extra).where(_extra.c.checkpoint_id.in_(mine)))
            conn.execute(delete(_checkpoints).where(_checkpoints.c.job_id == self._job_id))
            conn.execute(delete(_clients).where(_clients.c.job_id == self._job_id))
            conn.execute(delete(_jobs).where(_jobs.c.id == self._job_id))
        self._job_id = None

    # -- client registry -------------------------------------------------------------------------
    def _client_row(self, conn: Connection, name: str) -> ClientRecord | None:
        c = _clients.c
        row = conn.execute(select(c.name, c.first_seen, c.last_seen, c.rounds_participated, c.quarantined)
                           .where(c.job_id == self._job_id, c.name == name)).first()
        return None if row is None else ClientRecord(row.name, int(row.first_seen), int(row.last_seen),
                                                     int(row.rounds_participated), bool(row.quarantined))

    def _upsert_client(self, conn: Connection, rec: ClientRecord) -> None:
        values = {"first_seen": rec.first_seen, "last_seen": rec.last_seen,
                  "rounds_participated": rec.rounds_participated, "quarantined": rec.quarantined}
        c = _clients.c
        done = conn.execute(update(_clients).where(c.job_id == self._job_id, c.name == rec.name)
                            .values(**values))
        if done.rowcount == 0:
            conn.execute(insert(_clients).values(job_id=self._job_id, name=rec.name, **values))

    def register_client(self, name: str, *, first_seen: int, quarantined: bool = False) -> ClientRecord:
        """Add a client first seen in round ``first_seen``; a known client is returned unchanged."""
        with self._transaction(f"register client {name!r}") as conn:
            known = self._client_row(conn, name)
            if known is not None:
                return known
            rec = ClientRecord(name, first_seen=first_seen, last_seen=first_seen, quarantined=quarantined)
            self._upsert_client(conn, rec)
        return rec

    def touch_client(self, name: str, round: int) -> ClientRecord:
        """Record that the client took part in ``round`` (registering it if it is new)."""
        with self._transaction(f"update client {name!r}") as conn:
            known = self._client_row(conn, name) or ClientRecord(name, first_seen=round, last_seen=round)
            rec = ClientRecord(name, first_seen=known.first_seen, last_seen=max(known.last_seen, round),
                               rounds_participated=known.rounds_participated + 1,
                               quarantined=known.quarantined)
            self._upsert_client(conn, rec)
        return rec

    def set_quarantined(self, name: str, quarantined: bool = True) -> ClientRecord:
        """Quarantine a known client (or release it with ``quarantined=False``)."""
        with self._transaction(f"update client {name!r}") as conn:
            known = self._client_row(conn, name)
            if known is None:
                raise StateError(f"client {name!r}: expected a registered client of job {self.job!r}, "
                                 "found none; register it first")
            rec = ClientRecord(name, known.first_seen, known.last_seen, known.rounds_participated,
                               quarantined)
            self._upsert_client(conn, rec)
        return rec

    def clients(self) -> list[ClientRecord]:
        """The job's client registry, by name."""
        with self._transaction("read the client registry") as conn:
            return self._read_clients(conn)

    def _read_clients(self, conn: Connection) -> list[ClientRecord]:
        c = _clients.c
        rows = conn.execute(select(c.name, c.first_seen, c.last_seen, c.rounds_participated,
                                   c.quarantined).where(c.job_id == self._job_id).order_by(c.name)).all()
        return [ClientRecord(r.name, int(r.first_seen), int(r.last_seen), int(r.rounds_participated),
                             bool(r.quarantined)) for r in rows]
