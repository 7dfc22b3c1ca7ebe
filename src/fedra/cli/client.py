"""``fedra client``: connect out to a server, pull tasks, train on local data, push updates.

Training runs in a sandbox by default (``--sandbox auto``): a warm worker process that sees only the
user's module, this client's data (read-only) and a work directory, has no network, and runs under
memory, CPU and process limits (see :mod:`fedra.linux`). This process keeps the server connection and
hands the worker tasks over a socket. The worker is this module again: :func:`sandbox_worker`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer

from fedra.cli import exit_codes
from fedra.cli.simulate import read_spec
from fedra.errors import ConfigError, DatasetError
from fedra.job import JobSpec

if TYPE_CHECKING:
    from fedra.data import Dataset
    from fedra.runtime import ClientApp, SandboxedRunner, TaskRunner

__all__ = ["client", "sandbox_worker"]

log = logging.getLogger("fedra.client")


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return np.asarray(f["x"]), np.asarray(f["y"]).astype(np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"--data {path}: expected an .npz file with arrays 'x' and 'y', got an error: "
                           f"{exc}") from exc


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
        from fedra.transport.grpc import GrpcConnector

        if (data is None) == (partition is None):
            raise ConfigError("expected exactly one of --data FILE.npz or --partition N")
        if data is not None:
            x, y = _load_npz(data)
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
                                       pids=pids, work_dir=work_dir)
            app: ClientApp | TaskRunner = runner if runner is not None else UserApp(
                job.module_path(), framework=job.job.framework, partitions=lambda _cid: ds)
            connector = (GrpcConnector.mutual_tls(server, certs, name) if certs is not None
                         else GrpcConnector(server, client_id=name))
            try:
                done = serve(connector, app, stop=stop, wait=5.0)
            finally:
                connector.close()
        typer.echo(f"{name}: served {done} tasks")


def _sandboxed_runner(stack: contextlib.ExitStack, job: JobSpec, mode: str, *, data: Path | None,
                      ds: Dataset, memory_mib: int | None, cpu: float | None, pids: int | None,
                      work_dir: Path | None) -> SandboxedRunner | None:
    """The sandboxed worker that runs this client's tasks, or ``None`` when training runs unsandboxed."""
    from fedra.linux import (
        Limits,
        SandboxConfig,
        SandboxError,
        cgroup_unavailable_reason,
        sandbox_unavailable_reason,
    )
    from fedra.runtime import SandboxedRunner, TaskFailed

    if mode == "off":
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
        command, SandboxConfig(work_dir=work, read_only=tuple(read_only), limits=limits)))
    try:
        runner.start()
    except TaskFailed as exc:
        raise SandboxError(f"the sandboxed training worker did not start: {exc}") from exc
    log.info("training in a sandbox (work directory %s, limits %s)", work, limits)
    return runner


def sandbox_worker() -> int:
    """The sandboxed worker's entry point: ``python -c ... '{"module": ..., "data": ...}'``."""
    from fedra.app import UserApp
    from fedra.data import Dataset
    from fedra.runtime import serve_in_sandbox

    spec = json.loads(sys.argv[-1])

    def make_app() -> UserApp:
        x, y = _load_npz(Path(spec["data"]))
        ds = Dataset(x=x, y=y, num_classes=int(spec["num_classes"]), name=str(spec["name"]))
        return UserApp(spec["module"], framework=spec["framework"], partitions=lambda _cid: ds)

    return serve_in_sandbox(make_app)
