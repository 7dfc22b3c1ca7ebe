"""The SQL state store: exact round trips, keep-N, corruption, jobs apart, the client registry, resume
through the driver, and kill -9 during a save, on SQLite and (when FEDRA_TEST_POSTGRES_URL is set, as
.ci/run does) on PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from fedra.errors import ConfigError, StateError
from fedra.records import Message, decode_message, encode_arrays, encode_message
from fedra.runtime import (
    Checkpoint,
    CheckpointStore,
    ClientRecord,
    DriverConfig,
    RoundDriver,
    SqlStateStore,
    model_digest,
)
from fedra.strategy import FractionSampler, ServerOptimizer, Strategy, StrategyState
from fedra.transport import FunctionTransport, Task, TaskBatch

PG_ENV = "FEDRA_TEST_POSTGRES_URL"
INITIAL = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float64), "n": np.zeros((), np.int64)}
CLIENTS = [f"c{i}" for i in range(6)]


def honest(batch: TaskBatch, task: Task) -> bytearray:
    """A deterministic fake client (as in test_driver.py): pulls the model toward its own target."""
    params = decode_message(batch.payload).arrays
    k = int(task.client_id[1:]) + 1
    out = {"w": (params["w"] + np.float32(0.1 * k * batch.round)).astype(np.float32),
           "b": params["b"] - 0.01 * k, "n": params["n"] + 1}
    return encode_message(Message(arrays=out, metrics={"loss": 1.0 / k},
                                  meta={"task_id": task.task_id, "nonce": task.nonce, "num_examples": 10 * k}))


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    pg = os.environ.get(PG_ENV)
    if not pg:
        pytest.skip(f"{PG_ENV} is not set: no PostgreSQL server to test against (.ci/run starts one)")
    return pg


@pytest.fixture
def job(url: str) -> Iterator[str]:
    """A job name of its own for each test, and its rows deleted afterwards (PostgreSQL is shared)."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    SqlStateStore(url, job=name).delete_job()


def backends(url: str, application_name: str) -> int:
    """How many PostgreSQL server processes serve connections named ``application_name``."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :n"),
                                   {"n": application_name}) or 0)
    finally:
        engine.dispose()


def sql(url: str, statement: str, **params: object) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement), params)
    finally:
        engine.dispose()


def params_for(rnd: int, size: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rnd)
    return {"w": rng.standard_normal((size, 2)).astype(np.float32), "b": rng.standard_normal(2),
            "n": np.array(rnd, np.int64), "h": rng.standard_normal(3).astype(np.float16)}


def state_for(rnd: int) -> StrategyState:
    state = StrategyState.initial(seed=rnd, moments={"m/w": np.full((6, 2), 0.5, np.float32)})
    gen = state.generator()
    gen.random(rnd)
    return state.advanced(rng=gen, round=rnd)


def assert_same(ckpt: Checkpoint | None, rnd: int) -> None:
    assert ckpt is not None and ckpt.round == rnd
    want = params_for(rnd)
    assert list(ckpt.params) == list(want)
    for k, v in want.items():
        assert ckpt.params[k].dtype == v.dtype and ckpt.params[k].shape == v.shape
        assert ckpt.params[k].tobytes() == v.tobytes()
    assert ckpt.state == state_for(rnd)


def test_round_trip_is_exact(url: str, job: str) -> None:
    store = SqlStateStore(url, job=job)
    assert store.load() is None
    store.save(3, params_for(3), state_for(3))
    assert_same(store.load(), 3)
    assert_same(SqlStateStore(url, job=job).load(), 3)  # a new store object, as after a restart
    assert model_digest(store.load().params) == model_digest(params_for(3))  # type: ignore[union-attr]


def test_only_the_latest_n_checkpoints_are_kept(url: str, job: str) -> None:
    store = SqlStateStore(url, job=job)
    for rnd in range(1, 6):
        store.save(rnd, params_for(rnd), state_for(rnd))
    assert store.rounds() == [4, 5]
    assert_same(store.load(), 5)
    three = SqlStateStore(url, job=job, keep=3)
    three.save(6, params_for(6), state_for(6))
    three.save(6, params_for(6), state_for(6))  # saving a round again replaces it
    assert three.rounds() == [4, 5, 6]
    assert_same(three.load(), 6)


@pytest.mark.parametrize("column", ["model", "state"])
def test_a_corrupted_blob_is_detected(url: str, job: str, column: str) -> None:
    store = SqlStateStore(url, job=job)
    store.save(1, params_for(1), state_for(1))
    store.save(2, params_for(2), state_for(2))
    blob = state_for(2).to_bytes() if column == "state" else encode_arrays(params_for(2), {"fedra.round": "2"})
    blob[-1] ^= 0x01  # one bit flipped in the last array's bytes
    sql(url, f"UPDATE checkpoints SET {column} = :blob WHERE round = 2 "
             "AND job_id = (SELECT id FROM jobs WHERE name = :job)", blob=bytes(blob), job=job)
    with pytest.raises(StateError, match="round 2") as info:
        store.load()
    assert "sha256" in str(info.value) and job in str(info.value)


def test_two_jobs_in_one_database_do_not_mix(url: str, job: str) -> None:
    other = SqlStateStore(url, job=job + "-other")
    try:
        mine = SqlStateStore(url, job=job)
        mine.save(2, params_for(2), state_for(2))
        other.save(7, params_for(7), state_for(7))
        other.register_client("only-in-other", first_seen=7)
        mine.save(3, params_for(3), state_for(3), clients=[ClientRecord("c0", 1, 3, 2)])
        assert_same(mine.load(), 3)
        assert_same(other.load(), 7)
        assert mine.rounds() == [2, 3] and other.rounds() == [7]
        assert [c.name for c in mine.clients()] == ["c0"]
        assert [c.name for c in other.clients()] == ["only-in-other"]
        other.delete_job()
        assert other.load() is None and other.clients() == []
        assert_same(mine.load(), 3)
    finally:
        other.delete_job()


def test_client_registry_survives_reopen(url: str, job: str) -> None:
    store = SqlStateStore(url, job=job)
    assert store.clients() == []
    assert store.register_client("alice", first_seen=1) == ClientRecord("alice", 1, 1, 0, False)
    assert store.register_client("alice", first_seen=9).first_seen == 1  # known: unchanged
    store.register_client("bob", first_seen=2, quarantined=True)
    store.touch_client("alice", 2)
    store.touch_client("alice", 3)
    store.touch_client("carol", 3)  # unknown: registered on first contact
    store.set_quarantined("bob", False)
    store.save(3, params_for(3), state_for(3),
               clients=[ClientRecord("dave", first_seen=3, last_seen=3, rounds_participated=1,
                                     quarantined=True)])
    reopened = SqlStateStore(url, job=job)
    assert reopened.clients() == [
        ClientRecord("alice", first_seen=1, last_seen=3, rounds_participated=2, quarantined=False),
        ClientRecord("bob", first_seen=2, last_seen=2, rounds_participated=0, quarantined=False),
        ClientRecord("carol", first_seen=3, last_seen=3, rounds_participated=1, quarantined=False),
        ClientRecord("dave", first_seen=3, last_seen=3, rounds_participated=1, quarantined=True),
    ]
    with pytest.raises(StateError, match="'nobody'"):
        reopened.set_quarantined("nobody")


def test_clients_are_saved_with_the_checkpoint_or_not_at_all(url: str, job: str) -> None:
    store = SqlStateStore(url, job=job)
    store.save(1, params_for(1), state_for(1), clients=[ClientRecord("a", 1, 1, 1)])
    nameless = ClientRecord(None, 2, 2)  # type: ignore[arg-type]
    with pytest.raises(StateError, match="round 2"):
        # the second record violates NOT NULL inside the transaction: nothing of round 2 may land
        store.save(2, params_for(2), state_for(2), clients=[ClientRecord("a", 1, 2, 2), nameless])
    assert store.rounds() == [1]
    assert store.clients() == [ClientRecord("a", 1, 1, 1)]
    assert_same(store.load(), 1)


def sampled_fedadam() -> Strategy:
    return Strategy(sampler=FractionSampler(fraction=0.5), optimizer=ServerOptimizer("fedadam", lr=0.05))


def make_driver(rounds: int, store: object = None) -> RoundDriver:
    return RoundDriver(strategy=sampled_fedadam(), transport=FunctionTransport(CLIENTS, honest),
                       initial_params=INITIAL, config=DriverConfig(rounds=rounds, seed=7),
                       checkpoints=store)  # type: ignore[arg-type]


def test_driver_resumes_from_the_sql_store_as_from_the_file_store(url: str, job: str, tmp_path: Path
                                                                   ) -> None:
    full = make_driver(5).run()
    file_store = CheckpointStore(tmp_path / "ckpt")
    make_driver(3, file_store).run()
    from_file = make_driver(5, file_store).run()

    first = make_driver(3, SqlStateStore(url, job=job)).run()
    assert [r.round for r in first.records] == [1, 2, 3]
    resumed = make_driver(5, SqlStateStore(url, job=job))  # new driver, new store object
    assert resumed.state.round == 3
    second = resumed.run()
    assert [r.round for r in second.records] == [4, 5]
    assert model_digest(second.params) == model_digest(full.params) == model_digest(from_file.params)
    assert second.state == full.state == from_file.state
    ckpt = SqlStateStore(url, job=job).load()
    assert ckpt is not None and ckpt.round == 5 and model_digest(ckpt.params) == model_digest(full.params)


SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    from fedra.runtime import ClientRecord, SqlStateStore
    from fedra.strategy import StrategyState

    url, job = sys.argv[1], sys.argv[2]
    store = SqlStateStore(url, job=job)
    rnd = (store.load().round if store.load() is not None else 0)
    while True:
        rnd += 1
        params = {"w": np.full((512, 1024), rnd, np.float32), "n": np.array(rnd, np.int64)}
        state = StrategyState.initial(seed=0).advanced(round=rnd)
        store.save(rnd, params, state, clients=[ClientRecord(f"c{i}", 1, rnd, rnd) for i in range(20)])
        print(rnd, flush=True)
""")


def test_kill_9_during_save_leaves_the_previous_checkpoint_loadable(url: str, job: str) -> None:
    rand = random.Random(20261128)
    store = SqlStateStore(url, job=job)
    last_acknowledged = 0
    for _trial in range(10):
        name = f"fedra-saver-{uuid.uuid4().hex[:8]}"
        child_url = url if url.startswith("sqlite") else f"{url}{'&' if '?' in url else '?'}application_name={name}"
        child = subprocess.Popen([sys.executable, "-c", SAVER, child_url, job], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        line = child.stdout.readline()  # at least one save has committed
        assert line.strip(), "the saving child died before its first save"
        with contextlib.suppress(subprocess.TimeoutExpired):  # it should still be saving
            child.wait(timeout=rand.uniform(0.0, 0.4))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        assert child.returncode == -signal.SIGKILL
        acknowledged = [int(x) for x in (line + out).split()]
        last_acknowledged = acknowledged[-1]
        if not url.startswith("sqlite"):
            # PostgreSQL finishes a dead client's transaction on its own time: a COMMIT it had received
            # may land after the kill. Wait until the child's server process is gone, so the state
            # read below is final (the store's load reads one snapshot whatever happens).
            gone_by = time.monotonic() + 30
            while backends(url, name) and time.monotonic() < gone_by:
                time.sleep(0.05)
            assert not backends(url, name), "the killed client's PostgreSQL backend outlived 30 s"
        ckpt = store.load()  # hash-valid, or it raises
        assert ckpt is not None
        # every save the child reported has committed; at most one more (killed after commit, before print)
        assert ckpt.round in (last_acknowledged, last_acknowledged + 1)
        assert ckpt.state.round == ckpt.round and int(ckpt.params["n"]) == ckpt.round
        assert ckpt.params["w"].shape == (512, 1024) and np.all(ckpt.params["w"] == ckpt.round)
        # keep=2: the previous checkpoint too, unless this is the job's first (a kill before the second
        # save committed, which a loaded machine makes possible in the first trial)
        assert store.rounds() == [r for r in (ckpt.round - 1, ckpt.round) if r >= 1]
        clients = store.clients()
        assert len(clients) == 20 and {c.last_seen for c in clients} == {ckpt.round}
        assert list(ckpt.clients) == clients, "the checkpoint comes with the registry of its own save"


def test_a_blob_over_the_limit_is_refused_with_advice(url: str, job: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import fedra.runtime._store as store_module

    monkeypatch.setattr(store_module, "SQL_MAX_BLOB_BYTES", 1000)
    store = SqlStateStore(url, job=job)
    with pytest.raises(StateError, match="CheckpointStore"):
        store.save(1, {"w": np.zeros(1000, np.float32)}, state_for(1))
    assert store.load() is None


def test_unreachable_database_is_a_state_error_without_the_password() -> None:
    store = SqlStateStore("postgresql+psycopg://fedra:s3cret@127.0.0.1:1/nothing")
    with pytest.raises(StateError) as info:
        store.load()
    message = str(info.value)
    assert "s3cret" not in message and "127.0.0.1:1" in message and "running" in message


def test_a_plain_path_means_sqlite_and_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    store = SqlStateStore(tmp_path / "deep" / "dir" / "state.db")
    store.save(1, params_for(1), state_for(1))
    assert (tmp_path / "deep" / "dir" / "state.db").is_file()
    assert_same(SqlStateStore(f"sqlite:///{tmp_path}/deep/dir/state.db").load(), 1)
    with SqlStateStore("sqlite://") as memory:  # in-memory: one connection, kept until closed
        memory.save(1, params_for(1), state_for(1))
        assert_same(memory.load(), 1)
    with pytest.raises(ConfigError, match="keep"):
        SqlStateStore(tmp_path / "x.db", keep=0)
    with pytest.raises(ConfigError, match="job"):
        SqlStateStore(tmp_path / "x.db", job="")
    with pytest.raises(StateError, match="nosuchdialect"):
        SqlStateStore("nosuchdialect://x/y").load()


# -- extra state: other components' JSON state by name (the privacy accountant, ...) ---------------------

EXTRA = {"privacy": b'{"epsilon":1.5,"steps":[1,2]}', "quarantine": b"[]"}


def count_rows(url: str, table: str) -> int:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"select count(*) from {table}")).scalar_one())
    finally:
        engine.dispose()


def test_extra_state_round_trips_and_goes_with_its_checkpoint(url: str, job: str) -> None:
    store = SqlStateStore(url, job=job, keep=1)
    store.save(1, params_for(1), state_for(1))
    loaded = store.load()
    assert loaded is not None and loaded.extra == {}
    store.save(2, params_for(2), state_for(2), extra=EXTRA)
    loaded = SqlStateStore(url, job=job).load()
    assert loaded is not None and loaded.extra == EXTRA
    assert_same(loaded, 2)
    store.save(3, params_for(3), state_for(3), extra={"privacy": b"{}"})
    loaded = store.load()
    assert loaded is not None and loaded.extra == {"privacy": b"{}"}
    if url.startswith("sqlite"):  # PostgreSQL is shared with other jobs: count only in a file of our own
        assert count_rows(url, "checkpoint_extra") == 1  # round 2's rows left with round 2
    with pytest.raises(StateError, match="expected a JSON document"):
        store.save(4, params_for(4), state_for(4), extra={"privacy": b"\x80not json"})


def test_corrupt_extra_state_is_detected(url: str, job: str) -> None:
    store = SqlStateStore(url, job=job)
    store.save(1, params_for(1), state_for(1), extra=EXTRA)
    sql(url, "update checkpoint_extra set data = :d where name = 'privacy' and checkpoint_id in "
             "(select c.id from checkpoints c join jobs j on j.id = c.job_id where j.name = :job)",
        d=b'{"epsilon":0.0}', job=job)
    with pytest.raises(StateError, match=r"extra state 'privacy'.*sha256"):
        store.load()


def test_a_database_from_before_the_extra_state_still_loads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    SqlStateStore(url, job="j").save(1, params_for(1), state_for(1))
    sql(url, "drop table checkpoint_extra")  # the schema before this table existed
    old = SqlStateStore(url, job="j")
    loaded = old.load()
    assert loaded is not None and loaded.extra == {}
    assert_same(loaded, 1)
    old.save(2, params_for(2), state_for(2), extra=EXTRA)  # the table was added on first use
    loaded = SqlStateStore(url, job="j").load()
    assert loaded is not None and loaded.extra == EXTRA


def test_the_file_store_keeps_extra_state_and_loads_manifests_without_it(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(1, params_for(1), state_for(1))
    manifest = json.loads((tmp_path / "checkpoint.json").read_text())
    assert "extra" not in manifest  # what every older checkpoint looks like
    loaded = store.load()
    assert loaded is not None and loaded.extra == {}
    store.save(2, params_for(2), state_for(2), extra=EXTRA)
    loaded = CheckpointStore(tmp_path).load()
    assert loaded is not None and loaded.extra == EXTRA
    store.save(3, params_for(3), state_for(3), extra={"privacy": b"{}"})
    assert sorted(p.name for p in tmp_path.glob("extra-*")) == ["extra-r000003.json"]
    (tmp_path / "extra-r000003.json").write_text('{"privacy": "{\\"epsilon\\": 0}"}')
    with pytest.raises(StateError, match="sha256"):
        store.load()
