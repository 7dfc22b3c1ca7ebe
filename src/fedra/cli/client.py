"""``fedra client``: connect out to a server, pull tasks, train on local data, push updates.

Training runs in a sandbox by default (``--sandbox auto``): a warm worker process that sees only the
user's module, this client's data (read-only) and a work directory, has no network, and runs under
memory, CPU and process limits (see :mod:`fedra.linux`). This process keeps the server connection and
hands the worker tasks over a socket. The worker is this module again: :func:`sandbox_worker`. A task
that runs past ``--task-timeout`` is killed with its worker and reported as that task's failure.

``--monitor`` runs the traffic monitor (:class:`fedra.linux.Monitor`) here, on the server connection and
on the sandbox's cgroup v2 label, so training code that tries the network is a ``sandbox_connect`` event.
Events and one ``round`` line per round go to ``--traffic-jsonl`` (outside the work directory, which the
training code could rewrite) and to the log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer

from fedra.cli import exit_codes
from fedra.cli._npz import load_xy
from fedra.cli.simulate import read_spec
from fedra.errors import ConfigError
from fedra.job import JobSpec

if TYPE_CHECKING:
    from fedra.data import Dataset
    from fedra.linux import Monitor
    from fedra.runtime import ClientApp, SandboxedRunner, TaskRunner
    from fedra.transport.base import Buffer, Task

__all__ = ["client", "sandbox_worker"]

log = logging.getLogger("fedra.client")


def client(
    server: Annotated[str, typer.Option("--server", help="The server's HOST:PORT.", show_default=False)],
    job_file: Annotated[Path, typer.Option("--job", help="The job spec (for the model module).",
                                           show_default=False)],
    name: Annotated[str, typer.Option("--name", help="This client's name (its identity).",
                                      show_default=False)],
    data: Annotated[Path | None, typer.Option(
        "--data", help="This client's data: an .npz with arrays x and y.", show_default=False)] = None,
    partition: Annotated[int | None, typer.Option(
        "--partition", help="Use partition N of the job's dataset instead of --data (demos, tests).",
        show_default=False)] = None,
    certs: Annotated[Path | None, typer.Option(
        "--certs", show_default=False,
        help="A directory with ca/ca.crt and issued/NAME.crt + .key (from `fedra certs`): mutual TLS.")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Plain text (trusted test networks only).")] = False,
    sandbox: Annotated[str | None, typer.Option(
        "--sandbox", show_default=False, metavar="auto|on|off",
        help="Train in a sandbox: auto (where the host allows it, else warn; the default), on (or fail), "
             "off. Overrides the job's sandbox.enabled.")] = None,
    memory_mib: Annotated[int | None, typer.Option(
        "--memory-mib", min=32, show_default=False, help="Memory limit of training, MiB (job: sandbox.memory_mib).")] = None,
    cpu: Annotated[float | None, typer.Option(
        "--cpu", min=0.001, show_default=False, help="CPU limit of training, in CPUs (job: sandbox.cpu).")] = None,
    pids: Annotated[int | None, typer.Option(
        "--pids", min=8, show_default=False, help="Process and thread limit of training (job: sandbox.pids).")] = None,
    work_dir: Annotated[Path | None, typer.Option(
        "--work-dir", show_default=False,
        help="Training's only writable directory (job: sandbox.work_dir; default: a temporary one).")] = None,
    task_timeout: Annotated[float | None, typer.Option(
        "--task-timeout", min=0.001, show_default=False,
        help="Seconds one sandboxed task may run before its worker is killed (job: sandbox.task_timeout).")] = None,
    monitor: Annotated[bool, typer.Option(
        "--monitor", help="Account this client's traffic to the server (eBPF, else ss) and report anomalies, "
                          "e.g. training that tries the network; events and per-round counters go to "
                          "--traffic-jsonl and the log.")] = False,
    traffic_jsonl: Annotated[Path | None, typer.Option(
        "--traffic-jsonl", show_default=False,
        help="With --monitor: the JSON lines file for events and counters (default: traffic-NAME.jsonl "
             "in the current directory; never inside the sandbox's work directory).")] = None,
) -> None:
    """Serve tasks from a fedra server until it says the job is finished."""
    with exit_codes():
        if insecure == (certs is not None):
            raise ConfigError("expected exactly one of --certs DIR (mutual TLS with the certificate issued "
                              "to --name) or --insecure (plain text, trusted test networks only)")
        if insecure:
            logging.getLogger("fedra").warning("--insecure: plain text; the server cannot verify who you are")
        job = read_spec(job_file)
        from fedra.app import UserApp
        from fedra.data import Dataset
        from fedra.runtime import serve
        from fedra.simulation import load_data
        from fedra.transport.grpc import GrpcConnector, check_address

        check_address(server, what="--server", listen=False)  # grpc would dial port 443 for a missing one
        if (data is None) == (partition is None):
            raise ConfigError("expected exactly one of --data FILE.npz or --partition N")
        if data is not None:
            x, y = load_xy(data, option="--data")
            ds = Dataset(x=x, y=y, num_classes=int(y.max()) + 1 if y.size else 0, name=data.stem)
        else:
            parts = load_data(job).partitions
            if partition is None or not 0 <= partition < len(parts):
                raise ConfigError(f"--partition: expected 0 <= N < {len(parts)}, got {partition}")
            ds = parts[partition]
        if sandbox is not None and sandbox not in ("auto", "on", "off"):
            raise ConfigError(f"--sandbox: expected auto, on or off, got {sandbox!r}")
        mode = sandbox or job.sandbox.enabled
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        with contextlib.ExitStack() as stack:
            # the sandboxed worker starts before the first connection: a broken module fails here, at once
            runner = _sandboxed_runner(stack, job, mode, data=data, ds=ds, memory_mib=memory_mib, cpu=cpu,
                                       pids=pids, work_dir=work_dir, task_timeout=task_timeout, label=monitor)
            app: ClientApp | TaskRunner = runner if runner is not None else UserApp(
                job.module_path(), framework=job.job.framework, partitions=lambda _cid: ds)
            if monitor:
                app = _monitored(stack, app, server=server, runner=runner,
                                 jsonl=traffic_jsonl or Path(f"traffic-{name}.jsonl"))
            connector = (GrpcConnector.mutual_tls(server, certs, name) if certs is not None
                         else GrpcConnector(server, client_id=name))
            from fedra.deploy import Notifier, WatchedConnection

            # systemd (Type=notify, fedra deploy systemd): ready once training's sandbox is up; each pull
            # renews the watchdog's heartbeat for one round, so a task hung past that gets us restarted.
            # A no-op when no service manager started us.
            sd = stack.enter_context(Notifier())
            round_s = (job.strategy.round_timeout or 600.0) + 120.0
            sd.ready(f"client {name} of {server}: starting", within=round_s)
            try:
                done = serve(WatchedConnection(connector, sd, within=round_s), app, stop=stop, wait=5.0)
            finally:
                connector.close()
        typer.echo(f"{name}: served {done} tasks")


def _sandboxed_runner(stack: contextlib.ExitStack, job: JobSpec, mode: str, *, data: Path | None,
                      ds: Dataset, memory_mib: int | None, cpu: float | None, pids: int | None,
                      work_dir: Path | None, task_timeout: float | None = None,
                      label: bool = False) -> SandboxedRunner | None:
    """The sandboxed worker that runs this client's tasks, or ``None`` when training runs unsandboxed."""
    from fedra.linux import (
        Limits,
        SandboxConfig,
        SandboxError,
        cgroup_unavailable_reason,
        sandbox_unavailable_reason,
    )
    from fedra.runtime import SandboxedRunner, TaskFailed

    timeout = task_timeout if task_timeout is not None else job.sandbox.task_timeout
    if mode == "off":
        if timeout is not None:
            log.warning("--sandbox off: tasks run in this process and cannot be stopped; the task timeout "
                        "(%g s) applies only to sandboxed training", timeout)
        return None
    hint = "--sandbox off runs training unsandboxed on purpose; --sandbox on makes this an error"
    reason = sandbox_unavailable_reason()
    if reason is not None:
        if mode == "on":
            raise SandboxError(f"--sandbox on: expected a host that can sandbox training, but {reason}")
        log.warning("training runs WITHOUT a sandbox (it can reach the network and this machine's files): "
                    "%s; %s", reason, hint)
        return None
    spec = job.sandbox
    limits = Limits(memory_mib=memory_mib if memory_mib is not None else spec.memory_mib,
                    cpu=cpu if cpu is not None else spec.cpu,
                    pids=pids if pids is not None else spec.pids)
    reason = cgroup_unavailable_reason(limits)
    if reason is not None:
        if mode == "on":
            raise SandboxError(f"--sandbox on: expected to apply the limits {limits}, but {reason}")
        log.warning("training is sandboxed WITHOUT resource limits: %s; %s", reason, hint)
        limits = Limits()
    # Every path the worker sees is named here: the user's module directory and this client's data.
    read_only: list[Path] = []
    module = job.module_path()
    if module.endswith(".py"):
        read_only.append(Path(module).parent)
    scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fedra-client-")))
    if data is not None:
        data_file = data.resolve()
    else:
        # a partition of the job's dataset exists only in this process: the worker gets just that partition
        (scratch / "data").mkdir()
        data_file = scratch / "data" / "partition.npz"
        np.savez(data_file, x=ds.x, y=ds.y)
    read_only.append(data_file)
    if work_dir is None and spec.work_dir is not None:
        work_dir = Path(job.base_dir) / spec.work_dir
    work = (work_dir or scratch / "work").resolve()
    worker = {"module": module, "framework": job.job.framework, "data": str(data_file),
              "num_classes": ds.num_classes, "name": ds.name}
    command = [sys.executable, "-P", "-c", "from fedra.cli.client import sandbox_worker; "
               "raise SystemExit(sandbox_worker())", json.dumps(worker)]
    runner = stack.enter_context(SandboxedRunner(
        command, SandboxConfig(work_dir=work, read_only=tuple(read_only), limits=limits), task_timeout=timeout,
        label=label))
    try:
        runner.start()
    except TaskFailed as exc:
        raise SandboxError(f"the sandboxed training worker did not start: {exc}") from exc
    log.info("training in a sandbox (work directory %s, limits %s)", work, limits)
    return runner


@dataclass(frozen=True)
class _ModelSize:
    """What :meth:`fedra.linux.Monitor.on_run_start` reads: the size of one update."""

    model_bytes: int


class _Monitored:
    """Runs each task on ``inner`` and tells the traffic monitor where rounds start and what an update weighs.

    A client sees no round end: the first task of round N ends round N - 1 for the monitor (its
    exfiltration window and its ``round`` line). So a client's round N counts round N's update going up
    and round N + 1's model coming down (round 0: the first model). The first task's arrays give the
    expected update size.
    """

    def __init__(self, inner: ClientApp | TaskRunner, monitor: Monitor) -> None:
        self.inner = inner
        self.monitor = monitor
        self.round: int | None = None

    def run_task(self, payload: Buffer, task: Task) -> Buffer:
        from fedra.errors import FedraError
        from fedra.records import decode_message
        from fedra.runtime import RoundPayload, TaskRunner, run_task

        try:
            msg = decode_message(payload)  # zero-copy: reads the header, not the arrays
        except FedraError:
            msg = None  # the task itself fails below, with the decoder's message
        rnd = msg.meta.get("round") if msg is not None else None
        if msg is not None and isinstance(rnd, int) and rnd != self.round:
            if self.round is None:
                self.monitor.on_run_start(_ModelSize(sum(a.nbytes for a in msg.arrays.values())))
            self.monitor.new_round(rnd - 1)
            self.round = rnd
        if isinstance(self.inner, TaskRunner):
            return self.inner.run_task(payload, task)
        return run_task(self.inner, RoundPayload.decode(payload), task)


def _monitored(stack: contextlib.ExitStack, app: ClientApp | TaskRunner, *, server: str,
               runner: SandboxedRunner | None, jsonl: Path) -> _Monitored:
    """Start the traffic monitor on the server connection (and the sandbox's label group) for ``app``."""
    from fedra.linux import Monitor, MonitorRules

    host, _, port = server.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--monitor: expected --server HOST:PORT, got {server!r}")
    jsonl = jsonl.resolve()
    work = runner.config.work_dir.resolve() if runner is not None else None
    if work is not None and (jsonl == work or work in jsonl.parents):
        raise ConfigError(f"--traffic-jsonl {jsonl}: expected a file outside the sandbox's work directory "
                          f"{work}, which the training code can rewrite")
    cgroup = runner.cgroup_id if runner is not None else None
    if cgroup is None:
        log.warning("--monitor: training is not in a labelled sandbox, so network use by training code "
                    "cannot be told apart; only the server connection is accounted")
    mon = Monitor(MonitorRules(ports=(int(port),), watch_cgroups=frozenset({cgroup} if cgroup else ())),
                  jsonl=jsonl).start()
    watched = _Monitored(app, mon)
    stack.callback(lambda: mon.stop(last_round=watched.round))
    log.info("traffic monitor (%s%s) on port %s, watching cgroup %s; events and counters in %s",
             mon.backend, f", eBPF not available: {mon.fallback_reason}" if mon.fallback_reason else "",
             port, cgroup or "-", jsonl)
    return watched


def sandbox_worker() -> int:
    """The sandboxed worker's entry point: ``python -c ... '{"module": ..., "data": ...}'``."""
    from fedra.app import UserApp
    from fedra.data import Dataset
    from fedra.runtime import serve_in_sandbox

    spec = json.loads(sys.argv[-1])

    def make_app() -> UserApp:
        x, y = load_xy(Path(spec["data"]), option="--data")
        ds = Dataset(x=x, y=y, num_classes=int(spec["num_classes"]), name=str(spec["name"]))
        return UserApp(spec["module"], framework=spec["framework"], partitions=lambda _cid: ds)

    return serve_in_sandbox(make_app)
