"""The accuracy cost of client-level DP on Fashion-MNIST at epsilon = 1, 3, 8 (issue 6, point 7).

Every cell is a real simulation (``fedra.job.parse_job`` + ``fedra.simulation.simulate``: the real round
driver, the real worker pool, the real accountant) of a numpy softmax regression (784x10 + 10 = 7,850
parameters) on Fashion-MNIST split IID across 1,000 clients (60 training images each), each client taking
part in a round with probability 0.1 (Poisson sampling, about 100 per round), one local epoch, FedAvg
with server momentum 0.9, for a fixed number of rounds; the figure is the final accuracy on the 10,000
test images. Three modes:

- ``none``: no DP, same sampling and optimizer;
- ``central``: DP-FedAvg with ``[privacy]`` (server clipping to ``clip_norm``, Gaussian noise calibrated
  for ``target_epsilon`` over the whole job, RDP accountant, ``delta = 1e-5``, Poisson sampling);
- ``secagg``: the same targets under SecAgg+ (``[secagg]``) with distributed noise (``[privacy] mode =
  "client"``): each client clips and adds noise of std ``z C / sqrt(min_replies)``, so with more survivors
  than ``min_replies`` the sum carries more noise than the central mechanism's (and is accounted so).

The epsilon reported is the accountant's after the last round (``RunResult.records[-1].epsilon``).

The task module the simulation loads is bench/softmax_fmnist_task.py (the robustness matrix's).

Usage::

    .venv/bin/python bench/bench_dp_accuracy.py                               # every cell, 3 seeds
    .venv/bin/python bench/bench_dp_accuracy.py --epsilon 3 --mode central    # one cell
    .venv/bin/python bench/bench_dp_accuracy.py --mode none --seeds 0
    .venv/bin/python bench/bench_dp_accuracy.py --results r.json --write BENCHMARKS.md
    .venv/bin/python bench/bench_dp_accuracy.py --no-run --results r.json --write BENCHMARKS.md

``--results FILE`` keeps the runs measured (JSON), so cells run at different times make one table;
``--write FILE`` replaces the section between the bench_dp_accuracy markers in FILE with the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# -- the benchmark ----------------------------------------------------------------------------------------

NUM_CLIENTS = 1000
FRACTION = 0.1          # Poisson sampling rate: about 100 clients per round
ROUNDS = 50
CLIP_NORM = 0.25        # tuned once: best of 0.1-2.0 at epsilon 3, seed 0 (see BENCHMARKS.md)
DELTA = 1e-5
MIN_REPLIES = 80        # secagg: the fewest survivors unmasked; each client adds noise z C / sqrt(80)
CLIENT = {"epochs": 1, "batch_size": 10, "lr": 0.1}
#: server momentum, as DP-FedAvg uses it (McMahan et al. 2018): it averages the noise over rounds
SERVER_OPTIMIZER = {"optimizer": "fedavgm", "server_lr": 1.0, "momentum": 0.9}
EPSILONS = (1.0, 3.0, 8.0)
MODES = ("none", "central", "secagg")
SEEDS = (0, 1, 2)
MARK_BEGIN = "<!-- bench_dp_accuracy:begin -->"
MARK_END = "<!-- bench_dp_accuracy:end -->"


def job_spec(mode: str, epsilon: float | None, *, rounds: int, seed: int, clip_norm: float,
             min_replies: int) -> Any:
    from fedra.job import parse_job

    spec: dict[str, Any] = {
        "job": {"name": f"dp-accuracy-{mode}", "module": str(Path(__file__).resolve().parent / "softmax_fmnist_task.py"), "framework": "numpy",
                "rounds": rounds, "seed": seed},
        "data": {"dataset": "fashion_mnist", "partition": "iid", "num_clients": NUM_CLIENTS},
        "strategy": {"fraction": FRACTION, "evaluate_every": 0, "min_clients": 3, **SERVER_OPTIMIZER},
        "client": dict(CLIENT),
        "simulation": {"workers": 2},
    }
    if mode != "none":
        if epsilon is None:
            raise ValueError(f"mode {mode!r} needs an epsilon")
        spec["privacy"] = {"clip_norm": clip_norm, "target_epsilon": epsilon, "delta": DELTA,
                           "sampling": "poisson", "accountant": "rdp", "noise_seed": "job",
                           "mode": "server" if mode == "central" else "client"}
    if mode == "secagg":
        spec["secagg"] = {}
        spec["strategy"]["min_replies"] = min_replies
    return parse_job(spec)


_DATA: dict[int, Any] = {}


def run_cell(mode: str, epsilon: float | None, *, rounds: int, seed: int, clip_norm: float,
             min_replies: int) -> dict[str, Any]:
    from fedra.simulation import build_privacy, load_data, simulate

    job = job_spec(mode, epsilon, rounds=rounds, seed=seed, clip_norm=clip_norm, min_replies=min_replies)
    if seed not in _DATA:
        _DATA[seed] = load_data(job)
    privacy = build_privacy(job)
    t0 = time.perf_counter()
    result = simulate(job, data=_DATA[seed])
    last = result.records[-1]
    cell: dict[str, Any] = {
        "accuracy": last.eval_metrics["accuracy"], "rounds": len(result.records), "seed": seed,
        "seconds": round(time.perf_counter() - t0, 1), "epsilon": last.epsilon,
        "noise_multiplier": None if privacy is None else privacy.noise_multiplier,
        "clip_norm": None if mode == "none" else clip_norm,
        "mean_cohort": round(statistics.fmean(r.sampled for r in result.records), 1),
        "incomplete_rounds": sum(not r.completed for r in result.records),
        "stop_reason": last.stop_reason,
    }
    if mode == "secagg":
        charged = [r.secagg.get("noise_multiplier") for r in result.records if r.secagg]
        charged = [z for z in charged if z is not None]
        cell["charged_noise_multiplier"] = round(statistics.fmean(charged), 4) if charged else None
        cell["min_replies"] = min_replies
        cell["dropped"] = sum(int(r.secagg.get("dropped", 0)) for r in result.records if r.secagg)
        clipped = [r.train_metrics["secagg_clipped"] for r in result.records if "secagg_clipped" in r.train_metrics]
        cell["max_secagg_clipped"] = max(clipped) if clipped else None
    return cell


def _key(mode: str, epsilon: float | None) -> str:
    return "none" if mode == "none" else f"{mode}/{epsilon:g}"


def _median(runs: list[dict[str, Any]], field: str) -> float | None:
    values = [r[field] for r in runs if r.get(field) is not None]
    return statistics.median(values) if values else None


def _acc(runs: list[dict[str, Any]] | None) -> str:
    if not runs:
        return "–"
    acc = [r["accuracy"] for r in runs]
    spread = f" ({100 * min(acc):.1f}–{100 * max(acc):.1f})" if len(acc) > 1 else ""
    return f"{100 * statistics.median(acc):.1f}{spread}"


def _eps(runs: list[dict[str, Any]] | None) -> str:
    e = _median(runs or [], "epsilon")
    return "–" if e is None else f"{e:.3f}"


def _z(runs: list[dict[str, Any]] | None, field: str = "noise_multiplier") -> str:
    z = _median(runs or [], field)
    return "–" if z is None else f"{z:.3f}"


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    """The markdown table of the runs in ``results`` (keys ``none`` and ``mode/epsilon``)."""
    runs = [r for v in results.values() for r in v]
    seeds = sorted({r["seed"] for r in runs})
    rounds = sorted({r["rounds"] for r in runs})
    base = results.get("none")
    base_acc = _median(base or [], "accuracy")
    lines = [f"Final test accuracy (%), median over seeds {', '.join(map(str, seeds))} (min–max in brackets), "
             f"after {'/'.join(map(str, rounds))} rounds; ε after the last round (median), δ = {DELTA:g}; "
             "z: the noise multiplier calibrated for the target (secagg: mean effective z charged). "
             "`–`: not run.", "",
             "| target ε | no DP | DP-FedAvg, server (acc.) | cost (pts) | ε spent | z "
             "| SecAgg+ & distributed DP (acc.) | cost (pts) | ε spent | z charged |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def cost(r: list[dict[str, Any]] | None) -> str:
        a = _median(r or [], "accuracy")
        return "–" if a is None or base_acc is None else f"{100 * (base_acc - a):.1f}"

    for eps in EPSILONS:
        c, s = results.get(_key("central", eps)), results.get(_key("secagg", eps))
        if not c and not s:
            continue
        lines.append(f"| {eps:g} | {_acc(base)} | {_acc(c)} | {cost(c)} | {_eps(c)} | {_z(c)} "
                     f"| {_acc(s)} | {cost(s)} | {_eps(s)} | {_z(s, 'charged_noise_multiplier')} |")
    if len(lines) == 4 and base:
        lines.append(f"| ∞ | {_acc(base)} | – | – | – | – | – | – | – | – |")
    sec = [r for k, v in results.items() if k.startswith("secagg/") for r in v]
    if sec:
        lines += ["", f"SecAgg+ runs (min_replies = {'/'.join(str(m) for m in sorted({r['min_replies'] for r in sec}))}):"
                  f" {sum(r['incomplete_rounds'] for r in sec)} of {sum(r['rounds'] for r in sec)} rounds abandoned "
                  "(fewer masked inputs than min_replies: nothing unmasked, model unchanged, charged at the nominal z), "
                  f"{sum(r['dropped'] for r in sec)} clients dropped, largest share of coordinates clipped by the "
                  f"ring {max((r['max_secagg_clipped'] or 0.0) for r in sec):g}."]
    walls = []
    for mode in MODES:
        secs = [r["seconds"] for k, v in results.items() if k.split("/")[0] == mode for r in v]
        if secs:
            walls.append(f"{mode} {min(secs):.0f}–{max(secs):.0f} s")
    if walls:
        lines += ["", f"Wall per simulation (shared 2-core machine): {', '.join(walls)}."]
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    text = path.read_text(encoding="utf-8")
    if MARK_BEGIN not in text or MARK_END not in text:
        raise SystemExit(f"{path}: expected the markers {MARK_BEGIN} and {MARK_END}; add them where the "
                         "table belongs")
    head, rest = text.split(MARK_BEGIN, 1)
    path.write_text(head + f"{MARK_BEGIN}\n{body}\n{MARK_END}" + rest.split(MARK_END, 1)[1], encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epsilon", type=float, action="append",
                    help=f"target epsilon (repeatable; default {', '.join(f'{e:g}' for e in EPSILONS)})")
    ap.add_argument("--mode", choices=MODES, action="append", help="repeatable; default all three")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated seeds")
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--clip-norm", type=float, default=CLIP_NORM)
    ap.add_argument("--min-replies", type=int, default=MIN_REPLIES, help="secagg: strategy.min_replies")
    ap.add_argument("--results", type=Path, help="JSON file of measured runs, read and extended")
    ap.add_argument("--write", type=Path, help="replace the bench_dp_accuracy section of this markdown file")
    ap.add_argument("--no-run", action="store_true", help="run nothing: print (and write) the --results table")
    args = ap.parse_args(argv)
    # dp-accounting warns when one RDP order fails to converge and is left out of the epsilon (harmless)
    logging.getLogger("absl").setLevel(logging.ERROR)
    epsilons = args.epsilon or list(EPSILONS)
    modes = args.mode or list(MODES)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    results: dict[str, list[dict[str, Any]]] = {}
    if args.results is not None and args.results.exists():
        results = json.loads(args.results.read_text())
    cells = [(m, None if m == "none" else e) for m in modes for e in ([None] if m == "none" else epsilons)]
    started = time.perf_counter()
    for mode, eps in () if args.no_run else cells:
        for seed in seeds:
            try:
                cell = run_cell(mode, eps, rounds=args.rounds, seed=seed, clip_norm=args.clip_norm,
                                min_replies=args.min_replies)
            except Exception as exc:  # report the failure of a cell, keep the others
                print(f"{mode:8s} eps={eps}  seed {seed}: FAILED {type(exc).__name__}: {exc}", file=sys.stderr,
                      flush=True)
                continue
            key = _key(mode, eps)
            results[key] = [r for r in results.get(key, []) if r["seed"] != seed] + [cell]
            eps_s = "–" if cell["epsilon"] is None else f"{cell['epsilon']:.3f}"
            z_s = "" if cell["noise_multiplier"] is None else f"  z {cell['noise_multiplier']:.3f}"
            extra = "" if mode != "secagg" else f"  z charged {cell['charged_noise_multiplier']}"
            print(f"{mode:8s} target {'–' if eps is None else f'{eps:g}':3s} seed {seed}  accuracy "
                  f"{100 * cell['accuracy']:.1f}%  eps spent {eps_s}{z_s}{extra}  cohort {cell['mean_cohort']}  "
                  f"incomplete {cell['incomplete_rounds']}  ({cell['seconds']} s)", flush=True)
            if args.results is not None:
                args.results.write_text(json.dumps(results, indent=1, sort_keys=True))
    if not args.no_run:
        print(f"total {time.perf_counter() - started:.0f} s", flush=True)
    body = table(results)
    print()
    print(body)
    if args.write is not None:
        write_section(args.write, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
