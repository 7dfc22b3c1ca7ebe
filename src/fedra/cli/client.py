"""``fedra client``: connect out to a server, pull tasks, train on local data, push updates."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from fedra.cli import exit_codes
from fedra.cli.simulate import read_spec
from fedra.errors import ConfigError, DatasetError

__all__ = ["client"]


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
        app = UserApp(job.module_path(), framework=job.job.framework, partitions=lambda _cid: ds)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        connector = (GrpcConnector.mutual_tls(server, certs, name) if certs is not None
                     else GrpcConnector(server, client_id=name))
        try:
            done = serve(connector, app, stop=stop, wait=5.0)
        finally:
            connector.close()
        typer.echo(f"{name}: served {done} tasks")
