"""``fedra simulate JOB.toml``: run a job on virtual clients and keep everything it produced.

A run directory ``<output_dir>/<job name>-<YYYYmmdd-HHMMSS>`` receives::

    job.toml            the spec as run: defaults filled in, overrides applied, paths made absolute
    checkpoint/         the latest checkpoint, written after every round (what --run-dir resumes from)
    metrics.jsonl       one JSON line per round
    model.safetensors   the final global model; metadata fedra.digest, fedra.round, fedra.job, fedra.version
    summary.json        with [attack] or [quarantine]: the attackers and the quarantine report (true and
                        false quarantines against the known attackers; of this process's rounds)
    plot.png            accuracy and loss per round

``--run-dir DIR`` runs in ``DIR`` exactly; if it holds a checkpoint, the run resumes after its round.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import tomli_w
import typer
from rich.console import Console

from fedra import __version__
from fedra.cli import exit_codes, print_error, stderr
from fedra.errors import AggregationError, ConfigError, FedraError, StateError
from fedra.job import JobSpec, load_job, parse_job
from fedra.observe import ConsoleObserver, JsonlObserver, read_jsonl, write_plot
from fedra.records import encode_arrays
from fedra.runtime import CheckpointStore, RunResult

__all__ = ["apply_overrides", "new_run_dir", "simulate", "spec_toml"]

#: Exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def _drop_none(value: Any) -> Any:
    """``value`` without ``None`` entries in any table (TOML has no null)."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def read_spec(job_file: Path) -> JobSpec:
    """Load the job spec at ``job_file`` (a directory means its ``job.toml``)."""
    path = job_file / "job.toml" if job_file.is_dir() else job_file
    try:
        return load_job(path)
    except OSError as exc:
        raise ConfigError(f"job spec {path}: cannot read it: {exc.strerror or exc}") from exc


def apply_overrides(job: JobSpec, *, rounds: int | None = None, output: Path | None = None,
                    workers: int | None = None, source: str = "<job>") -> JobSpec:
    """``job`` with the command line's overrides applied, validated again like the file was.

    ``output`` is taken relative to the current directory (not to the job file, as ``job.output_dir``
    is), which is what a path typed on the command line means.
    """
    job_updates: dict[str, Any] = {}
    if rounds is not None:
        job_updates["rounds"] = rounds
    if output is not None:
        job_updates["output_dir"] = str(output.resolve())
    updates: dict[str, Any] = {}
    if job_updates:
        updates["job"] = job.job.model_copy(update=job_updates)
    if workers is not None:
        updates["simulation"] = job.simulation.model_copy(update={"workers": workers})
    if not updates:
        return job
    # model_copy does not validate: parse the result again so a bad override fails like a bad file.
    changed = job.model_copy(update=updates)
    return parse_job(changed.model_dump(), source=f"{source} (with command-line options)",
                     base_dir=changed.base_dir)


def spec_toml(job: JobSpec) -> str:
    """The resolved spec as TOML, its file paths absolute so it runs from any directory."""
    spec = job.resolved()
    spec["job"]["module"] = job.module_path()
    spec["job"]["output_dir"] = str(job.output_path())
    if job.data.path is not None:
        spec["data"]["path"] = str((Path(job.base_dir) / job.data.path).resolve())
    return tomli_w.dumps(_drop_none(spec))


def new_run_dir(job: JobSpec) -> Path:
    """Create ``<output_dir>/<name>-<YYYYmmdd-HHMMSS>`` (with a ``-2``, ``-3``... suffix if taken)."""
    parent = job.output_path()
    stem = f"{job.job.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 1000):
        candidate = parent / (stem if n == 1 else f"{stem}-{n}")
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError as exc:
            raise ConfigError(f"output directory {parent}: cannot create a run directory in it: "
                              f"{exc.strerror or exc}") from exc
        return candidate
    raise ConfigError(f"output directory {parent}: every run directory name {stem}-N is taken")


def _check_resumable(job: JobSpec, run_dir: Path) -> None:
    """Fail early (before workers start) if ``run_dir``'s checkpoint is unreadable or past ``job.rounds``."""
    ckpt = CheckpointStore(run_dir / "checkpoint").load()
    if ckpt is not None and ckpt.round > job.job.rounds:
        raise ConfigError(f"run directory {run_dir} holds a checkpoint after round {ckpt.round}, "
                          f"beyond job.rounds = {job.job.rounds}; pass --rounds {ckpt.round} or more "
                          "to continue it, or choose another run directory")


def write_atomic(path: Path, data: bytes | bytearray | memoryview | str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc


def save_outputs(job: JobSpec, run_dir: Path, result: RunResult) -> None:
    """Write the final model and the plot of every round (before a resume too) into ``run_dir``."""
    metadata = {"fedra.digest": result.digest, "fedra.round": str(result.state.round),
                "fedra.job": job.job.name, "fedra.version": __version__}
    write_atomic(run_dir / "model.safetensors", encode_arrays(result.params, metadata))
    if result.summary:
        write_atomic(run_dir / "summary.json", json.dumps(dict(result.summary), indent=1).encode())
    metrics = run_dir / "metrics.jsonl"
    records = read_jsonl(metrics) if metrics.exists() else result.records
    try:
        write_plot(records, run_dir / "plot.png", title=job.job.name)
    except (OSError, ValueError) as exc:
        raise StateError(f"plot {run_dir / 'plot.png'}: cannot write it: {exc}") from exc


def simulate(
    job_file: Annotated[Path, typer.Argument(
        metavar="JOB.toml", show_default=False,
        help="The job spec (a directory means its job.toml).")],
    rounds: Annotated[int | None, typer.Option(
        "--rounds", "-r", show_default=False, help="Run this many rounds (overrides job.rounds).")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", show_default=False,
        help="Create the run directory in DIR (overrides job.output_dir).")] = None,
    run_dir: Annotated[Path | None, typer.Option(
        "--run-dir", show_default=False,
        help="Run in DIR exactly; resumes from the checkpoint it holds.")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", "-w", show_default=False,
        help="Worker processes; 0 = one per CPU core (overrides simulation.workers).")] = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Print only the final accuracy and the run directory.")] = False,
) -> None:
    """Run a job on virtual clients on this machine."""
    console = Console()
    with exit_codes():
        job = read_spec(job_file)
        job = apply_overrides(job, rounds=rounds, output=output, workers=workers, source=str(job_file))
        fresh = run_dir is None
        if run_dir is None:
            run_dir = new_run_dir(job)
        else:
            run_dir = run_dir.resolve()
            _check_resumable(job, run_dir)
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"--run-dir {run_dir}: expected a directory or a path to create one "
                                  f"at, got an error: {exc.strerror or exc}") from exc
        write_atomic(run_dir / "job.toml", spec_toml(job))
        if not quiet:
            console.print(f"run directory: {run_dir}", soft_wrap=True, highlight=False)
        result = _run(job, run_dir, console, quiet=quiet, job_file=job_file, fresh=fresh)
        save_outputs(job, run_dir, result)
        if result.stop_reason is not None:
            # a normal end (exit 0): the job did all the privacy budget allows
            console.print(f"stopped early: {result.stop_reason}", soft_wrap=True, highlight=False, markup=False)
        if result.records and not any(r.completed for r in result.records):
            raise AggregationError(_no_round_completed(result))
    console.print(f"run directory: {run_dir}" if quiet else f"saved model, metrics and plot in {run_dir}",
                  soft_wrap=True, highlight=False)


def _no_round_completed(result: RunResult) -> str:
    reasons: dict[str, int] = {}
    for rec in result.records:
        for reason, count in rec.failures.items():
            reasons[reason] = reasons.get(reason, 0) + count
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
    listed = "; ".join(f"{reason} (x{count})" for reason, count in top) or "no replies at all"
    return (f"no round completed: expected at least job.strategy.min_replies accepted updates per round, "
            f"got fewer in all {len(result.records)} rounds. Most frequent failures: {listed}. "
            "The global model is unchanged; fix the client code or data and run again")


def _run(job: JobSpec, run_dir: Path, console: Console, *, quiet: bool, job_file: Path,
         fresh: bool) -> RunResult:
    # Imported here: the engine is needed only once a run starts, so --help and bad specs answer fast.
    from fedra.simulation import simulate as run_simulation

    progress = ConsoleObserver(console, quiet=quiet)
    metrics = JsonlObserver(run_dir / "metrics.jsonl")
    try:
        return run_simulation(job, observers=[progress, metrics], run_dir=run_dir)
    except KeyboardInterrupt:
        progress.close()
        metrics.close()
        _stopped("interrupted", job, run_dir, job_file, fresh=fresh)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except FedraError as exc:
        progress.close()
        metrics.close()
        print_error(str(exc))
        _stopped("stopped", job, run_dir, job_file, fresh=fresh)
        raise typer.Exit(exc.exit_code) from None
    finally:
        progress.close()
        metrics.close()


def _stopped(why: str, job: JobSpec, run_dir: Path, job_file: Path, *, fresh: bool) -> None:
    """Say how to resume the run; a run directory made for this run that holds no checkpoint goes."""
    if (run_dir / "checkpoint").exists():
        text = (f"{why}; the run can be resumed from its last checkpoint with:\n"
                f"  fedra simulate {job_file} --rounds {job.job.rounds} --run-dir {run_dir}")
    elif fresh:
        shutil.rmtree(run_dir, ignore_errors=True)
        text = f"{why} before a round completed; removed the run directory {run_dir}"
    else:
        text = f"{why} before a round completed; there is no checkpoint to resume from"
    stderr().print(text, soft_wrap=True, highlight=False, markup=False)
