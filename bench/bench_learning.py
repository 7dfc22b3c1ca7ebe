"""Benchmark: what the example jobs learn, round by round, through the simulation engine.

Two experiments, each one or more job specs under ``examples/`` run with :func:`fedra.simulation.simulate`
exactly as written (no run directory, so no checkpoints):

- ``fashion-mnist``: ``examples/fashion_mnist/job.toml``: Fashion-MNIST over 100 clients with Dirichlet
  (alpha = 0.5) label skew, 10 clients per round, a small CNN, FedAvg, 50 rounds. Prints the test accuracy
  and loss after every round.
- ``fedprox``: ``examples/fedprox_synthetic/job_fedavg.toml`` and ``job_fedprox.toml``: FedProx's
  synthetic(1, 1) with 30 users, multinomial logistic regression, 10 clients per round, 200 rounds,
  ``proximal_mu`` 0 against 1 (Li et al. 2020, "Federated Optimization in Heterogeneous Networks").
  Prints both runs side by side every 10th round and after the last.

Accuracy and loss are measured by the server on the held-out test set (Fashion-MNIST's official 10,000
images; the union of the synthetic users' 10 % held-out samples). The output is markdown: the command that
produced it, the date and machine, a table per experiment, the final accuracies and the wall time (which
includes loading the data and starting the worker processes).

Usage::

    .venv/bin/python bench/bench_learning.py all                       # both experiments, as specified
    .venv/bin/python bench/bench_learning.py fashion-mnist --rounds 3  # a quick check
    .venv/bin/python bench/bench_learning.py fedprox --workers 2
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedra.job import JobSpec, load_job, parse_job
from fedra.runtime import RoundRecord
from fedra.simulation import simulate

ROOT = Path(__file__).resolve().parent.parent
FASHION_MNIST_JOB = ROOT / "examples" / "fashion_mnist" / "job.toml"
FEDPROX_JOBS = {
    "FedAvg": ROOT / "examples" / "fedprox_synthetic" / "job_fedavg.toml",
    "FedProx": ROOT / "examples" / "fedprox_synthetic" / "job_fedprox.toml",
}
#: The FedProx table shows every this many rounds, plus the last.
FEDPROX_EVERY = 10


@dataclass(frozen=True, slots=True)
class Run:
    """One job as run: its spec, its per-round records and its wall time in seconds."""

    job: JobSpec
    records: list[RoundRecord]
    wall: float

    def accuracy(self, rnd: int) -> float | None:
        return _metric(self.records[rnd - 1], "accuracy")

    def loss(self, rnd: int) -> float | None:
        return _metric(self.records[rnd - 1], "loss")

    @property
    def final_accuracy(self) -> float | None:
        return self.accuracy(len(self.records))


def _metric(record: RoundRecord, name: str) -> float | None:
    value = record.eval_metrics.get(name)
    return None if value is None else float(value)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def with_overrides(job: JobSpec, *, rounds: int | None, workers: int | None) -> JobSpec:
    """``job`` with ``job.rounds`` and ``simulation.workers`` replaced where given, validated again."""
    spec = job.model_dump()
    if rounds is not None:
        spec["job"]["rounds"] = rounds
    if workers is not None:
        spec["simulation"]["workers"] = workers
    return parse_job(spec, source=f"{job.job.name} (with overrides)", base_dir=job.base_dir)


def run_job(path: Path, *, rounds: int | None, workers: int | None) -> Run:
    job = with_overrides(load_job(path), rounds=rounds, workers=workers)
    print(f"running {path.relative_to(ROOT)} ({job.job.rounds} rounds) ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    result = simulate(job)
    wall = time.perf_counter() - t0
    run = Run(job=job, records=result.records, wall=wall)
    print(f"  final accuracy {_fmt(run.final_accuracy)}, {wall:.1f} s", file=sys.stderr, flush=True)
    return run


def _describe(job: JobSpec) -> str:
    d, s, c = job.data, job.strategy, job.client
    split = f"dirichlet α={d.alpha}" if d.partition == "dirichlet" else d.partition
    return (f"{d.dataset}, {d.num_clients} clients ({split}), fraction {s.fraction:.4g}, "
            f"{s.aggregator}/{s.optimizer}, {job.job.rounds} rounds, seed {job.job.seed}; client: "
            f"epochs {c.epochs}, batch {c.batch_size}, lr {c.lr}, proximal_mu {c.proximal_mu}")


def fashion_mnist(*, rounds: int | None, workers: int | None) -> list[str]:
    run = run_job(FASHION_MNIST_JOB, rounds=rounds, workers=workers)
    lines = ["## Fashion-MNIST, 100 clients, Dirichlet α = 0.5, 10 per round, small CNN, FedAvg", "",
             f"Job: `{FASHION_MNIST_JOB.relative_to(ROOT)}`: {_describe(run.job)}.", "",
             "| round | test accuracy | test loss | train loss | round seconds |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for rec in run.records:
        lines.append(f"| {rec.round} | {_fmt(run.accuracy(rec.round))} | {_fmt(run.loss(rec.round))} | "
                     f"{_fmt(rec.train_metrics.get('loss'))} | {rec.seconds.get('total', 0.0):.2f} |")
    lines += ["", f"Final test accuracy after {len(run.records)} rounds: **{_fmt(run.final_accuracy)}**; "
              f"best {_fmt(_best(run))}. Wall time {run.wall:.1f} s.", ""]
    return lines


def _best(run: Run) -> float | None:
    values = [a for r in range(1, len(run.records) + 1) if (a := run.accuracy(r)) is not None]
    return max(values) if values else None


def fedprox(*, rounds: int | None, workers: int | None) -> list[str]:
    runs = {label: run_job(path, rounds=rounds, workers=workers) for label, path in FEDPROX_JOBS.items()}
    labels = list(runs)
    first = runs[labels[0]]
    total = len(first.records)
    shown = sorted({r for r in range(FEDPROX_EVERY, total + 1, FEDPROX_EVERY)} | {1, total})
    jobs = ", ".join(f"`{p.relative_to(ROOT)}`" for p in FEDPROX_JOBS.values())
    lines = ["## FedProx synthetic(1, 1), 30 clients, 10 per round: FedAvg vs FedProx", "",
             f"Jobs: {jobs}: {_describe(first.job)} (FedProx: proximal_mu "
             f"{runs[labels[-1]].job.client.proximal_mu}).", "",
             "| round | " + " | ".join(f"{label} accuracy" for label in labels) + " | "
             + " | ".join(f"{label} test loss" for label in labels) + " |",
             "| ---: |" + " ---: |" * (2 * len(labels))]
    for rnd in shown:
        accs = " | ".join(_fmt(runs[label].accuracy(rnd)) for label in labels)
        losses = " | ".join(_fmt(runs[label].loss(rnd)) for label in labels)
        lines.append(f"| {rnd} | {accs} | {losses} |")
    lines += ["", "| | " + " | ".join(labels) + " |", "| --- |" + " ---: |" * len(labels),
              f"| final accuracy (round {total}) | "
              + " | ".join(_fmt(runs[label].final_accuracy) for label in labels) + " |",
              "| best accuracy | " + " | ".join(_fmt(_best(runs[label])) for label in labels) + " |",
              f"| mean accuracy, last {min(FEDPROX_EVERY, total)} rounds | "
              + " | ".join(_fmt(_mean_last(runs[label], FEDPROX_EVERY)) for label in labels) + " |",
              "| wall time (s) | " + " | ".join(f"{runs[label].wall:.1f}" for label in labels) + " |", ""]
    return lines


def _mean_last(run: Run, n: int) -> float | None:
    total = len(run.records)
    values = [a for r in range(max(1, total - n + 1), total + 1) if (a := run.accuracy(r)) is not None]
    return sum(values) / len(values) if values else None


EXPERIMENTS = {"fashion-mnist": fashion_mnist, "fedprox": fedprox}


def machine() -> str:
    import torch

    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, no GPU used; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("experiment", choices=[*EXPERIMENTS, "all"], help="which experiment to run")
    parser.add_argument("--rounds", type=int, default=None,
                        help="run this many rounds instead of each job's own (for a quick check)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (overrides simulation.workers; 0 = one per core)")
    args = parser.parse_args(argv)
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    command = " ".join([".venv/bin/python", "bench/bench_learning.py",
                        *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.perf_counter()
    sections = [line for name in names for line in EXPERIMENTS[name](rounds=args.rounds, workers=args.workers)]
    wall = time.perf_counter() - t0
    header = [f"Command: `{command}`", "", f"Date: {started}. Machine: {machine()}.", "",
              f"Total wall time: {wall:.1f} s.", ""]
    print("\n".join(header + sections))


if __name__ == "__main__":
    main()
