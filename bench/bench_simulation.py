"""Simulation engine benchmark: throughput, fixed per-round overhead, start-up time and peak memory.

The model is bench/tiny_task.py (softmax regression, 650 parameters, one local step), so the numbers
measure fedra, not the model. Every measurement runs the real round driver over the real worker pool.

    python bench/bench_simulation.py all            # everything, medians of --repeats runs
    python bench/bench_simulation.py throughput --clients 100 1000
    python bench/bench_simulation.py overhead
    python bench/bench_simulation.py startup
    python bench/bench_simulation.py memory

Goals (issue 2): >= 5,000 updates/s at 1,000 clients on 2 cores; fixed per-round overhead < 5 ms;
start-up to the first round < 1 s; peak RSS of the whole process tree < 400 MB at 1,000 clients.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKERS = int(os.environ.get("BENCH_WORKERS", "0"))


def job_dict(clients: int, rounds: int, fraction: float = 1.0, workers: int = 0) -> dict[str, Any]:
    return {
        "job": {"name": "bench", "module": str(HERE / "tiny_task.py"), "framework": "numpy",
                "rounds": rounds, "seed": 0},
        "data": {"dataset": "digits", "partition": "iid", "num_clients": clients},
        "strategy": {"fraction": fraction, "evaluate_every": 0},
        "client": {"batch_size": 8, "lr": 0.5},
        "simulation": {"workers": WORKERS if workers == 0 else workers},
    }


def run_rounds(clients: int, rounds: int, fraction: float = 1.0, checkpoint: bool = False) -> list[dict[str, Any]]:
    from fedra.job import parse_job
    from fedra.simulation import simulate

    with tempfile.TemporaryDirectory(dir=HERE.parent) as tmp:
        run_dir = Path(tmp) if checkpoint else None
        result = simulate(parse_job(job_dict(clients, rounds, fraction)), run_dir=run_dir)
    return [{"n": r.accepted, "train": r.seconds["train"], "total": r.seconds["total"] - r.seconds["evaluate"]}
            for r in result.records]


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for clients in args.clients:
        rates = []
        for _ in range(args.repeats):
            recs = run_rounds(clients, args.rounds)[1:]  # round 1 warms caches (partitions prepared once)
            rates.append(statistics.median(r["n"] / r["total"] for r in recs))
        out[clients] = {"updates_per_s_median": statistics.median(rates), "runs": [round(x) for x in rates]}
        print(f"throughput, {clients} clients x {args.rounds} rounds: median {statistics.median(rates):,.0f} "
              f"updates/s (runs: {', '.join(f'{x:,.0f}' for x in rates)})", flush=True)
    return out


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    """Fit round time = a + b * clients over rounds of 1..1000 clients; ``a`` is the fixed overhead."""
    out = {}
    for checkpoint in (False, True):
        out["with_checkpoint" if checkpoint else "engine"] = _overhead(args, checkpoint)
    return out


def _overhead(args: argparse.Namespace, checkpoint: bool) -> dict[str, Any]:
    sizes = [1, 10, 100, 1000]
    medians: dict[int, float] = {}
    label = "overhead (with an fsynced checkpoint every round)" if checkpoint else "overhead"
    for n in sizes:
        times = []
        for _ in range(args.repeats):
            recs = run_rounds(1000, args.rounds, fraction=n / 1000, checkpoint=checkpoint)[1:]
            times.append(statistics.median(r["total"] for r in recs))
        medians[n] = statistics.median(times)
    xs, ys = list(medians), list(medians.values())
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    intercept = my - slope * mx
    for n, t in medians.items():
        print(f"{label}: round with {n:>4} of 1,000 clients: median {t * 1e3:8.2f} ms", flush=True)
    print(f"{label}: fit  round = {intercept * 1e3:.2f} ms + {slope * 1e6:.1f} us x clients   "
          f"(fixed per-round overhead {intercept * 1e3:.2f} ms; a 1-client round takes "
          f"{medians[1] * 1e3:.2f} ms)", flush=True)
    return {"round_ms": {n: t * 1e3 for n, t in medians.items()}, "fixed_ms": intercept * 1e3,
            "per_client_us": slope * 1e6}


_PROBE = """
import sys, time
from fedra.job import parse_job
from fedra.simulation import simulate
import json
class First:
    def on_run_start(self, info):
        print("FIRST_ROUND", time.time(), flush=True)
    def on_round_end(self, record): pass
    def on_run_end(self, records): pass
simulate(parse_job(json.loads(sys.argv[1])), observers=[First()])
"""


def startup(args: argparse.Namespace) -> dict[str, Any]:
    """Wall time from launching a fresh Python process to the driver starting round 1."""
    spec = json.dumps(job_dict(1000, 1))
    times = []
    for _ in range(args.repeats):
        t0 = time.time()
        out = subprocess.run([sys.executable, "-c", _PROBE, spec], capture_output=True, text=True, check=True)
        line = next(x for x in out.stdout.splitlines() if x.startswith("FIRST_ROUND"))
        times.append(float(line.split()[1]) - t0)
    print(f"startup: new process to first round, 1,000 clients: median {statistics.median(times) * 1e3:.0f} ms "
          f"(runs: {', '.join(f'{t * 1e3:.0f}' for t in times)})", flush=True)
    return {"startup_ms_median": statistics.median(times) * 1e3}


def _tree_memory(pid: int) -> tuple[int, int]:
    import psutil

    rss = pss = 0
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                full = p.memory_full_info()
                rss += full.rss
                pss += full.pss
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return rss, pss


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """Peak summed RSS (and PSS) of the simulation process and all its workers, sampled every 10 ms."""
    peaks = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory():
            proc = subprocess.Popen([sys.executable, __file__, "_run", "--clients", "1000",
                                     "--rounds", str(args.rounds)], stdout=subprocess.DEVNULL)
            peak_rss = peak_pss = 0
            while proc.poll() is None:
                rss, pss = _tree_memory(proc.pid)
                peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
                time.sleep(0.01)
            if proc.returncode:
                raise SystemExit(f"memory run failed with exit code {proc.returncode}")
        peaks.append((peak_rss, peak_pss))
    rss = statistics.median(p[0] for p in peaks) / 2**20
    pss = statistics.median(p[1] for p in peaks) / 2**20
    print(f"memory: 1,000 clients x {args.rounds} rounds, whole process tree: peak RSS {rss:.0f} MiB "
          f"(sum over processes; shared pages counted in each), peak PSS {pss:.0f} MiB", flush=True)
    return {"peak_rss_mib": rss, "peak_pss_mib": pss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["all", "throughput", "overhead", "startup", "memory", "_run"])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.what == "_run":
        run_rounds(args.clients[0], args.rounds)
        return
    print(f"# {' '.join([Path(sys.executable).name, *sys.argv])}   ({os.cpu_count()} CPUs)", flush=True)
    results = {}
    for name, fn in (("throughput", throughput), ("overhead", overhead), ("startup", startup),
                     ("memory", memory)):
        if args.what in (name, "all"):
            results[name] = fn(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
