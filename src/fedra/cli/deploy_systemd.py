"""``fedra deploy systemd JOB.toml``: hardened systemd units for the job's server and clients."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from fedra.cli import exit_codes
from fedra.cli.simulate import read_spec
from fedra.errors import ConfigError

__all__ = ["systemd"]


def _default_fedra() -> Path:
    # the fedra beside this interpreter (not resolved: a virtual environment's python is a link out of it)
    return Path(sys.executable).parent / "fedra"


def systemd(
    job_file: Annotated[Path, typer.Argument(metavar="JOB.toml", show_default=False, help="The job spec.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Write the files into DIR.")] = Path("systemd"),
    certs: Annotated[Path, typer.Option(
        "--certs", help="The federation directory (fedra certs) on the target host; the service user "
                        "must be able to read it.")] = Path("/etc/fedra/federation"),
    cert_name: Annotated[str, typer.Option("--cert-name", help="The server certificate's name.")] = "server",
    bind: Annotated[str, typer.Option("--bind", help="The server's listening address.")] = "0.0.0.0:7788",
    server: Annotated[str, typer.Option(
        "--server", help="HOST:PORT the clients connect to (a name in the server's certificate).")
    ] = "localhost:7788",
    client: Annotated[list[str] | None, typer.Option(
        "--client", show_default=False,
        help="A client's environment file: NAME=/path/data.npz or NAME=partition:N (repeatable).")] = None,
    fedra: Annotated[Path | None, typer.Option(
        "--fedra", show_default=False,
        help="The fedra executable on the target host (default: the one running this command).")] = None,
    job_path: Annotated[Path | None, typer.Option(
        "--job-path", show_default=False,
        help="Where the job spec is on the target host (default: JOB.toml's absolute path).")] = None,
    config_dir: Annotated[Path, typer.Option(
        "--config-dir", help="Where the environment files are installed.")] = Path("/etc/fedra"),
    run_dir: Annotated[Path | None, typer.Option(
        "--run-dir", show_default=False,
        help="The server's run directory, under /var/lib/fedra (default: /var/lib/fedra/JOBNAME).")] = None,
    wait_clients: Annotated[float, typer.Option(
        "--wait-clients", help="Seconds the server waits for strategy.min_clients clients.")] = 300.0,
    watchdog: Annotated[int, typer.Option("--watchdog", help="WatchdogSec= of both units.")] = 30,
) -> None:
    """Write systemd units (server, client template), their environment files and the service user."""
    from fedra.deploy import (
        ClientData,
        SystemdOptions,
        home_paths,
        interpreter_paths,
        render_systemd,
        write_units,
    )

    with exit_codes():
        job = read_spec(job_file)
        exe = (fedra or _default_fedra()).absolute()
        if not exe.is_file():
            raise ConfigError(f"--fedra: expected the fedra executable, found nothing at {exe}")
        clients = tuple(ClientData.parse(c) for c in client or ())
        target_job = str((job_path or job_file.resolve()).absolute())
        # everything the services read: what sits under a home directory is bound back read-only
        reads = [*interpreter_paths(exe), str(Path(target_job).parent), str(certs.absolute()),
                 *(c.data for c in clients if c.data is not None)]
        module = job.module_path()
        if Path(module).is_absolute():
            reads.append(str(Path(module).parent))
        options = SystemdOptions(
            fedra=str(exe), job=target_job, certs=str(certs.absolute()), bind=bind, server=server,
            cert_name=cert_name, config_dir=str(config_dir.absolute()),
            run_dir=None if run_dir is None else str(run_dir.absolute()), wait_clients=wait_clients,
            clients=clients, read_only_paths=home_paths(reads), watchdog_sec=watchdog)
        written = write_units(out, render_systemd(job, options))
        for path in written:
            typer.echo(str(path))
        typer.echo(f"install: cp {out}/*.service /etc/systemd/system/; cp {out}/*.env {config_dir}/; "
                   f"cp {out}/fedra.sysusers.conf /etc/sysusers.d/fedra.conf; systemd-sysusers; "
                   f"systemctl daemon-reload", err=True)
