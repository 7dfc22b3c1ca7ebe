"""The robustness evaluation matrix (issue 7): attacks x defences on Fashion-MNIST, 100 clients, 20% malicious.

Every cell is a real simulation (``fedra.simulation.simulate``: the real round driver, the real worker pool)
of a numpy softmax regression (784x10 + 10 = 7,850 parameters) on Fashion-MNIST split across 100 clients
(Dirichlet alpha = 0.5 and IID), every client sampled every round, 20% of them malicious (chosen from the
seed), for a fixed number of rounds; the figure is the final accuracy on the 10,000 test images. The
"+quarantine" defences also score every update and quarantine repeat offenders; their precision and recall
(over clients: quarantined at least once) are reported per attack.

The task module the simulation loads is bench/softmax_fmnist_task.py.

Usage::

    .venv/bin/python bench/bench_robustness.py                          # the whole matrix, both partitions
    .venv/bin/python bench/bench_robustness.py --row sign_flip          # one attack, every defence
    .venv/bin/python bench/bench_robustness.py --cell sign_flip median  # one cell
    .venv/bin/python bench/bench_robustness.py --row sign_flip --results r.json --write BENCHMARKS.md
    .venv/bin/python bench/bench_robustness.py --no-run --results r.json --write BENCHMARKS.md

``--results FILE`` keeps the cells measured (JSON), so rows run at different times make one table;
``--write FILE`` replaces the section between the robustness markers in FILE with the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

# -- the matrix -------------------------------------------------------------------------------------------

NUM_CLIENTS = 100
FRACTION = 0.2
F = int(NUM_CLIENTS * FRACTION)  # attackers per round (every client takes part in every round)

#: attack name -> the job spec's [attack] table (None: no attack)
ATTACK_SPECS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "sign_flip": {"kind": "sign_flip", "params": {"magnitude": 10.0}},
    "gaussian_noise": {"kind": "gaussian_noise", "params": {"sigma": 10.0}},
    "label_flip": {"kind": "label_flip"},
    "ipm": {"kind": "ipm", "params": {"epsilon": 0.1}},
    "alie": {"kind": "alie"},
    "min_max": {"kind": "min_max"},
    "min_sum": {"kind": "min_sum"},
}

#: defence name -> ([strategy] fields, whether [quarantine] is on)
DEFENCES: dict[str, tuple[dict[str, Any], bool]] = {
    "mean": ({"aggregator": "mean"}, False),
    "median": ({"aggregator": "median"}, False),
    "trimmed_mean": ({"aggregator": "trimmed_mean", "trim_fraction": 0.2}, False),
    "krum": ({"aggregator": "krum", "num_byzantine": F}, False),
    "multi_krum": ({"aggregator": "multi_krum", "num_byzantine": F}, False),
    "bulyan": ({"aggregator": "bulyan", "num_byzantine": F}, False),
    "centered_clip": ({"aggregator": "centered_clip", "clip_tau": 0.1, "clip_iterations": 3}, False),
    "norm_bound": ({"aggregator": "norm_bound", "max_norm": 0.3}, False),
    "fltrust": ({"aggregator": "fltrust", "root_size": 100}, False),
    "mean+quarantine": ({"aggregator": "mean"}, True),
    "median+quarantine": ({"aggregator": "median"}, True),
}

PARTITIONS = ("dirichlet", "iid")
MARK_BEGIN = "<!-- bench_robustness:begin -->"
MARK_END = "<!-- bench_robustness:end -->"


def job_spec(partition: str, attack: str, defence: str, *, rounds: int, seed: int) -> Any:
    from fedra.job import parse_job

    strategy, quarantine = DEFENCES[defence]
    spec: dict[str, Any] = {
        "job": {"name": "robustness", "module": str(Path(__file__).resolve().parent / "softmax_fmnist_task.py"), "framework": "numpy",
                "rounds": rounds, "seed": seed},
        "data": {"dataset": "fashion_mnist", "partition": partition, "num_clients": NUM_CLIENTS,
                 **({"alpha": 0.5} if partition == "dirichlet" else {})},
        "strategy": {"fraction": 1.0, "evaluate_every": 0, **strategy},
        "client": {"epochs": 1, "batch_size": 32, "lr": 0.05},
        "simulation": {"workers": 2},
    }
    if (table := ATTACK_SPECS[attack]) is not None:
        spec["attack"] = {**table, "fraction": FRACTION}
    if quarantine:
        spec["quarantine"] = {}
    return parse_job(spec)


_DATA: dict[tuple[str, int], Any] = {}


def run_cell(partition: str, attack: str, defence: str, *, rounds: int, seed: int) -> dict[str, Any]:
    from fedra.simulation import load_data, simulate

    job = job_spec(partition, attack, defence, rounds=rounds, seed=seed)
    key = (partition, seed)
    if key not in _DATA:
        _DATA[key] = load_data(job)
    t0 = time.perf_counter()
    result = simulate(job, data=_DATA[key])
    cell: dict[str, Any] = {"accuracy": result.records[-1].eval_metrics["accuracy"], "rounds": rounds,
                            "seed": seed, "seconds": round(time.perf_counter() - t0, 1)}
    if (q := result.summary.get("quarantine")) is not None:
        caught, false = len(q["quarantined_malicious"]), len(q["falsely_quarantined"])
        malicious = len(result.summary.get("attack", {}).get("malicious", []))
        cell["precision"] = caught / (caught + false) if caught + false else None
        cell["recall"] = caught / malicious if malicious else None
        cell["false_quarantines"] = q["false_quarantines"]
    return cell


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def table(results: dict[str, dict[str, Any]], *, rounds: int, seed: int) -> str:
    """The markdown tables of the cells in ``results`` (keys ``partition/attack/defence``)."""
    lines = [f"Final test accuracy (%) after {rounds} rounds, seed {seed}; Fashion-MNIST, {NUM_CLIENTS} "
             f"clients, all sampled every round, {int(FRACTION * 100)}% malicious; numpy softmax regression. "
             "`–`: not run.", ""]
    for partition in PARTITIONS:
        if not any(k.startswith(partition + "/") for k in results):
            continue
        name = "Dirichlet α = 0.5" if partition == "dirichlet" else "IID"
        lines += [f"**{name}**", "", "| attack | " + " | ".join(DEFENCES) + " |",
                  "|---|" + "---:|" * len(DEFENCES)]
        for attack in ATTACK_SPECS:
            cells = [results.get(f"{partition}/{attack}/{d}") for d in DEFENCES]
            if all(c is None for c in cells):
                continue
            lines.append(f"| {attack} | " + " | ".join("–" if c is None else _pct(c["accuracy"]) for c in cells)
                         + " |")
        lines.append("")
        detect = [(a, d, results[k]) for a in ATTACK_SPECS for d in DEFENCES
                  if (k := f"{partition}/{a}/{d}") in results and "precision" in results[k] and a != "none"]
        if detect:
            lines += [f"Quarantine ({name}): precision / recall over clients, false quarantines of honest clients",
                      "", "| attack | defence | precision | recall | false quarantines |", "|---|---|---:|---:|---:|"]
            lines += [f"| {a} | {d} | {_pct(c['precision'])} | {_pct(c['recall'])} | {c['false_quarantines']} |"
                      for a, d, c in detect]
            lines.append("")
        clean = [(d, c) for d in DEFENCES if "false_quarantines" in (c := results.get(f"{partition}/none/{d}", {}))]
        if clean:
            lines += ["False quarantines of honest clients without an attack: "
                      + ", ".join(f"{d} {c['false_quarantines']}" for d, c in clean) + ".", ""]
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    text = path.read_text(encoding="utf-8")
    block = f"{MARK_BEGIN}\n{body}\n{MARK_END}"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Robustness (issue 7)\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    pick = ap.add_mutually_exclusive_group()
    pick.add_argument("--cell", nargs=2, metavar=("ATTACK", "DEFENCE"))
    pick.add_argument("--row", metavar="ATTACK")
    ap.add_argument("--defences", help="comma-separated subset of the defences (with --row or the matrix)")
    ap.add_argument("--partition", choices=(*PARTITIONS, "both"), default="both")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, help="JSON file of measured cells, read and extended")
    ap.add_argument("--write", type=Path, help="replace the robustness section of this markdown file")
    ap.add_argument("--no-run", action="store_true", help="run nothing: print (and write) the --results table")
    args = ap.parse_args(argv)
    defences = list(DEFENCES) if not args.defences else args.defences.split(",")
    attacks = list(ATTACK_SPECS)
    if args.cell:
        attacks, defences = [args.cell[0]], [args.cell[1]]
    elif args.row:
        attacks = [args.row]
    bad = [a for a in attacks if a not in ATTACK_SPECS] + [d for d in defences if d not in DEFENCES]
    if bad:
        print(f"unknown attack or defence: {', '.join(bad)}; expected attacks {', '.join(ATTACK_SPECS)} "
              f"and defences {', '.join(DEFENCES)}", file=sys.stderr)
        return 2
    partitions = PARTITIONS if args.partition == "both" else (args.partition,)
    results: dict[str, dict[str, Any]] = {}
    if args.results is not None and args.results.exists():
        results = json.loads(args.results.read_text())
    for partition in () if args.no_run else partitions:
        for attack in attacks:
            for defence in defences:
                cell = run_cell(partition, attack, defence, rounds=args.rounds, seed=args.seed)
                results[f"{partition}/{attack}/{defence}"] = cell
                extra = "" if "precision" not in cell else (
                    f"  quarantine precision {_pct(cell['precision'])} recall {_pct(cell['recall'])}")
                print(f"{partition:9s} {attack:15s} {defence:18s} accuracy {_pct(cell['accuracy'])}%  "
                      f"({cell['seconds']} s){extra}", flush=True)
                if args.results is not None:
                    args.results.write_text(json.dumps(results, indent=1, sort_keys=True))
    body = table(results, rounds=args.rounds, seed=args.seed)
    print()
    print(body)
    if args.write is not None:
        write_section(args.write, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
