"""``fedra server JOB.toml``: the aggregation server over gRPC, driven by the same round driver as simulate."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from fedra.cli import exit_codes
from fedra.cli._npz import load_xy
from fedra.cli.simulate import (
    apply_overrides,
    new_run_dir,
    read_spec,
    save_outputs,
    spec_toml,
    write_atomic,
)
from fedra.errors import AggregationError, ConfigError, DatasetError
from fedra.observe import ConsoleObserver, JsonlObserver

if TYPE_CHECKING:
    from fedra.data import FederatedData
    from fedra.job import JobSpec
    from fedra.runtime import RootTrainer

__all__ = ["server"]

log = logging.getLogger("fedra.server")


def server(
    job_file: Annotated[Path, typer.Argument(metavar="JOB.toml", show_default=False, help="The job spec.")],
    bind: Annotated[str, typer.Option("--bind", help="Address to listen on.")] = "0.0.0.0:7788",
    certs: Annotated[Path | None, typer.Option(
        "--certs", show_default=False,
        help="The federation directory (fedra certs): mutual TLS, clients admitted by certificate.")] = None,
    cert_name: Annotated[str, typer.Option(
        "--cert-name", help="The server certificate's name in the federation directory.")] = "server",
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="Plain text, no client authentication. For trusted test networks only.")] = False,
    wait_clients: Annotated[float, typer.Option(
        "--wait-clients", help="Seconds to wait for strategy.min_clients clients before each round.")] = 300.0,
    rounds: Annotated[int | None, typer.Option("--rounds", "-r", show_default=False,
                                               help="Overrides job.rounds.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", show_default=False,
                                                help="Create the run directory in DIR.")] = None,
    run_dir: Annotated[Path | None, typer.Option(
        "--run-dir", show_default=False,
        help="Run in DIR exactly; a restarted server resumes from the state it holds.")] = None,
    state: Annotated[str | None, typer.Option(
        "--state", show_default=False,
        help="Database URL for the server's state (default: SQLite file state.db in the run directory; "
             "postgresql+psycopg://user:password@host/db for PostgreSQL).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    monitor: Annotated[bool, typer.Option(
        "--monitor",
        help="Account the federation's traffic (eBPF, else ss) and report anomalies into traffic.jsonl "
             "in the run directory.")] = False,
    root_data: Annotated[Path | None, typer.Option(
        "--root-data", show_default=False,
        help="fltrust: the server's own clean data, an .npz with arrays x and y; strategy.root_size "
             "examples are drawn from it with the job's seed (default: from the job dataset's "
             "training split, as fedra simulate does).")] = None,
) -> None:
    """Serve a job to clients that connect over gRPC, and aggregate their updates."""
    console = Console()
    with exit_codes():
        from fedra.linux import fix_mmap_threshold, limit_arenas, set_trim_threshold
        from fedra.transport.grpc import (
            MMAP_THRESHOLD,
            GrpcTransport,
            check_address,
            read_buffer_cap_for,
            trim_threshold_for,
        )

        # the heap of a server that moves payload chunks on many threads (see fedra/linux/_malloc.py):
        # before the imports and the gRPC server start the threads that would each take an arena
        limit_arenas(1)
        fix_mmap_threshold(MMAP_THRESHOLD)
        check_address(bind, what="--bind", listen=True)  # before any work: grpc would wrap a bad port
        if insecure == (certs is not None):
            raise ConfigError("expected exactly one of --certs DIR (mutual TLS, the default way; make DIR "
                              "with `fedra certs init` and `fedra certs issue server NAME --san HOST`) or "
                              "--insecure (plain text, trusted test networks only)")
        if insecure:
            logging.getLogger("fedra").warning(
                "--insecure: plain text, and any client can claim any name; use only on a trusted test network")
        job = apply_overrides(read_spec(job_file), rounds=rounds, output=output, workers=None,
                              source=str(job_file))
        # Imported here so `fedra --help` stays fast and free of grpc.
        from fedra.app import UserApp
        from fedra.runtime import RoundDriver
        from fedra.simulation import (
            build_privacy,
            build_quarantine,
            build_secure,
            build_strategy,
            driver_config,
            load_data,
            noise_seed,
        )

        if job.attack is not None:
            raise ConfigError("attack: expected no [attack] section for `fedra server`: attacks are simulated "
                              "by `fedra simulate` only; remove the section to deploy this job")
        privacy = build_privacy(job)  # before listening: a bad [privacy] fails before clients connect
        data = load_data(job)
        evaluator_app = UserApp(job.module_path(), framework=job.job.framework,
                                partitions=lambda _cid: data.test)
        root_trainer = _root_trainer(job, data, root_data)  # before listening too: no root data, no start
        initial = evaluator_app.init_arrays(job.job.seed)
        model_bytes = sum(a.nbytes for a in initial.values())
        set_trim_threshold(trim_threshold_for(model_bytes))
        test_data = evaluator_app.data("__test__", data.test)
        config = job.client.as_config()

        def evaluate(params: object) -> dict[str, float]:
            evaluator_app.set_arrays(params)  # type: ignore[arg-type]
            out = evaluator_app.evaluate_on(test_data, config, job.job.seed)
            return {k: float(v) for k, v in out.items() if isinstance(v, int | float)}

        if run_dir is None:
            run_dir = new_run_dir(job)
        else:
            run_dir = run_dir.resolve()
            run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / "job.toml", spec_toml(job))
        from fedra.runtime import SqlStateStore

        store = SqlStateStore(state or f"sqlite:///{run_dir / 'state.db'}", job=job.job.name)
        read_buffer = read_buffer_cap_for(model_bytes)
        if certs is not None:
            from fedra.pki import Authority
            from fedra.transport.grpc import server_credentials

            transport = GrpcTransport(bind, credentials=server_credentials(certs, cert_name),
                                      authority=Authority(certs), read_buffer=read_buffer)
        else:
            transport = GrpcTransport(bind, read_buffer=read_buffer)
        traffic = None
        from fedra.deploy import Notifier, NotifyObserver, heartbeat_window

        # systemd (Type=notify, fedra deploy systemd): readiness, a status per round, and a watchdog fed
        # only while each round keeps its deadlines; a no-op when no service manager started us
        sd = Notifier()
        window = heartbeat_window(job, wait_clients)
        try:
            if monitor:
                from fedra.linux import Monitor, MonitorRules

                # the expected update size is the model's, learnt when the run starts (Monitor.on_run_start)
                traffic = Monitor(MonitorRules(ports=(transport.port,)), jsonl=run_dir / "traffic.jsonl").start()
                console.print(f"traffic monitor: {traffic.backend}"
                              + (f" (eBPF not available: {traffic.fallback_reason})"
                                 if traffic.fallback_reason else ""), soft_wrap=True, highlight=False)
            host = bind.rsplit(":", 1)[0]
            console.print(f"listening on {host}:{transport.port}; run directory {run_dir}", highlight=False)
            sd.ready(f"listening on {host}:{transport.port}; waiting for clients", within=window)
            need = job.strategy.min_clients
            found = transport.wait_for_clients(need, timeout=wait_clients)
            if len(found) < need:
                raise AggregationError(f"expected at least {need} clients within {wait_clients:.0f} s, "
                                       f"got {len(found)}; start more clients or lower strategy.min_clients")
            driver = RoundDriver(strategy=build_strategy(job), transport=transport, initial_params=initial,
                                 config=replace(driver_config(job), client_wait=wait_clients,
                                                round_timeout=job.strategy.round_timeout or 600.0),
                                 evaluator=evaluate,
                                 observers=[ConsoleObserver(console, quiet=quiet),
                                            JsonlObserver(run_dir / "metrics.jsonl"),
                                            *([] if traffic is None else [traffic]),
                                            NotifyObserver(sd, within=window)],
                                 checkpoints=store, privacy=privacy, noise_seed=noise_seed(job),
                                 quarantine=build_quarantine(job), root_trainer=root_trainer,
                                 secure=build_secure(job))
            result = driver.run()
            save_outputs(job, run_dir, result)
            transport.finish(linger=3.0)
        finally:
            transport.close()
            if traffic is not None:
                traffic.stop()
            sd.close()
        if result.stop_reason is not None:
            console.print(f"stopped early: {result.stop_reason}", soft_wrap=True, highlight=False, markup=False)
        console.print(f"model digest {result.digest}", highlight=False)
        console.print(f"saved model, metrics and plot in {run_dir}", soft_wrap=True, highlight=False)


def _root_trainer(job: JobSpec, data: FederatedData, root_data: Path | None) -> RootTrainer | None:
    """FLTrust's server training on ``strategy.root_size`` examples, drawn with the job's seed from
    ``--root-data`` when given, else from the job dataset's training split (as ``fedra simulate`` does)."""
    if job.strategy.aggregator != "fltrust":
        if root_data is not None:
            raise ConfigError(f"--root-data: only strategy.aggregator = 'fltrust' trains on root data, "
                              f"got aggregator {job.strategy.aggregator!r}; remove --root-data")
        return None
    from fedra.app import UserApp
    from fedra.data import Dataset
    from fedra.runtime import RootTrainer, root_dataset

    if root_data is None:
        parts, source = data.partitions, f"the training split of dataset {job.data.dataset!r}"
    else:
        x, y = load_xy(root_data, option="--root-data", purpose="the server's root data for fltrust")
        test = data.test
        if x.shape[1:] != test.x.shape[1:]:
            raise DatasetError(f"--root-data {root_data}: expected features of shape (N, "
                               f"{', '.join(map(str, test.x.shape[1:]))}) like dataset {job.data.dataset!r}, "
                               f"got {x.shape}")
        parts, source = [Dataset(x, y, test.num_classes, root_data.stem)], f"--root-data {root_data}"
    root = root_dataset(parts, job.strategy.root_size, job.job.seed, source=source)
    app = UserApp(job.module_path(), framework=job.job.framework, partitions=lambda _cid: root)
    return RootTrainer(app, seed=job.job.seed, client_config=job.client.as_config())
