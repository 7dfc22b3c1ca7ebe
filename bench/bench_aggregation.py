"""Benchmark: FedAvg of many float32 client models against numpy's streaming limit.

Weighted averaging reads every byte of every update once and does two flops per element, so it is bound by
memory bandwidth. The reference is the fastest way numpy has to stream those bytes: a BLAS
matrix-vector product ``w @ M`` over the ``(clients, params)`` float32 stack ``M``. Each repetition times,
on the same bytes:

- ``limit``: ``w @ M`` (BLAS, with however many threads it uses);
- ``stream``: updates arriving one at a time into a :class:`~fedra.aggregation.WeightedMeanAccumulator`,
  folded with ``add_many`` over batches of ``--batch`` in-flight updates, then ``take()``;
- ``batch``: :func:`~fedra.aggregation.weighted_mean` over all updates at once.

The stack is allocated once and each client's update is a set of row views into it, so memory is one
copy of the data (100 x 10M float32 = 4 GB). The ratio printed is ``limit_time / our_time``: the fraction
of the streaming limit reached.

Usage::

    .venv/bin/python bench/bench_aggregation.py                     # 100 clients x 10M params, 5 repeats
    .venv/bin/python bench/bench_aggregation.py --clients 8 --params 1000000 --repeats 2   # quick
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fedra.aggregation import WeightedMeanAccumulator, _mean, weighted_mean


def blas_summary() -> str:
    """Which BLAS numpy uses, and with how many threads."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        info = np.show_config(mode="dicts")
        blas = info.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name', '?')} {blas.get('version', '?')} (threads: unknown, no threadpoolctl)"
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    if not pools:
        return "no BLAS thread pool found"
    return "; ".join(
        f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture', '?')}), "
        f"{p.get('num_threads')} threads"
        for p in pools
    )


def split_sizes(params: int, arrays: int) -> list[int]:
    """``params`` split into ``arrays`` nearly equal parts."""
    base, extra = divmod(params, arrays)
    return [base + (1 if i < extra else 0) for i in range(arrays)]


def timed(fn: Callable[[], Any], settle: float = 0.0) -> tuple[float, Any]:
    """Wall time of one call, and its result, after ``settle`` seconds of sleep.

    The sleep lets OpenBLAS's worker threads, which spin for a while after each call, go idle, so they do
    not steal a core from whatever is timed next.
    """
    time.sleep(settle)
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100, help="number of client updates")
    parser.add_argument("--params", type=int, default=10_000_000, help="float32 parameters per update")
    parser.add_argument("--arrays", type=int, default=1, help="arrays per update (the params split)")
    parser.add_argument("--batch", type=int, default=16, help="updates per add_many (in flight)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settle", type=float, default=0.5,
                        help="seconds to sleep before each timed call (lets BLAS threads stop spinning)")
    parser.add_argument(
        "--anatomy", action="store_true",
        help="also time the two passes of the fold apart: the DRAM read (multiply into a cached scratch) "
        "and the in-cache add, with the same blocks and threads as fedra",
    )
    args = parser.parse_args(argv)
    if min(args.clients, args.params, args.arrays, args.batch, args.repeats) < 1:
        parser.error("--clients, --params, --arrays, --batch and --repeats must be >= 1")

    n, d = args.clients, args.params
    nbytes = n * d * 4
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs")
    print(f"BLAS: {blas_summary()}")
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}")
    print(f"{n} clients x {d:,} float32 params in {args.arrays} array(s) = {nbytes / 1e9:.2f} GB; "
          f"add_many batch {args.batch}")

    rng = np.random.default_rng(args.seed)
    stack = np.empty((n, d), dtype=np.float32)
    for row in stack:  # row by row: no 2x temporary
        row[...] = rng.standard_normal(d, dtype=np.float32)
    weights = rng.integers(100, 1000, size=n).astype(np.float64)
    w_norm = (weights / weights.sum()).astype(np.float32)

    bounds = np.cumsum([0, *split_sizes(d, args.arrays)])
    names = [f"layer{k}" for k in range(args.arrays)]

    def update(i: int) -> dict[str, np.ndarray]:
        return {names[k]: stack[i, bounds[k] : bounds[k + 1]] for k in range(args.arrays)}

    updates = [update(i) for i in range(n)]
    template = updates[0]

    def limit() -> np.ndarray:
        return w_norm @ stack

    def streamed() -> dict[str, np.ndarray]:
        acc = WeightedMeanAccumulator(template)
        pending: list[tuple[dict[str, np.ndarray], float]] = []
        for i in range(n):  # updates arrive one at a time; fold each full batch of in-flight ones
            pending.append((updates[i], float(weights[i])))
            if len(pending) == args.batch:
                acc.add_many(pending)
                pending = []
        if pending:
            acc.add_many(pending)
        return acc.take()  # as the server finishes a round: the mean computed in the running sum's memory

    def batch() -> dict[str, np.ndarray]:
        return weighted_mean(updates, [float(w) for w in weights])

    def one_pass(op: str) -> None:
        """One of the fold's two passes alone, split across threads as fedra splits it."""
        block = _mean._BLOCK_BYTES // 4
        parts = _mean._MAX_THREADS

        def run(lo: int, hi: int) -> None:
            scratch = np.zeros(block, np.float32)  # zeros: the add pass alone must not overflow
            acc = np.zeros(block, np.float32)
            for b0 in range(lo, hi, block):
                b1 = min(b0 + block, hi)
                t, a = scratch[: b1 - b0], acc[: b1 - b0]
                for i in range(n):
                    if op == "read":
                        np.multiply(stack[i, b0:b1], w_norm[i], out=t)
                    else:
                        np.add(a, t, out=a)

        edges = [d * k // parts for k in range(parts + 1)]
        workers = [threading.Thread(target=run, args=(edges[k], edges[k + 1])) for k in range(1, parts)]
        for worker in workers:
            worker.start()
        run(edges[0], edges[1])
        for worker in workers:
            worker.join()

    # Warm-up (page faults, thread start) and a correctness check against BLAS.
    reference = limit()
    for label, fn in (("stream", streamed), ("batch", batch)):
        got = np.concatenate([fn()[name] for name in names])
        err = float(np.max(np.abs(got - reference)))
        print(f"check {label}: max |ours - blas| = {err:.2e}")
        if not err < 1e-4:
            print(f"FAIL: {label} differs from the BLAS reference", file=sys.stderr)
            return 1

    print(f"{'rep':>3} {'limit s':>9} {'stream s':>9} {'batch s':>9} "
          f"{'stream/lim':>10} {'batch/lim':>9} {'limit GB/s':>10} {'stream GB/s':>11} {'batch GB/s':>10}")
    rows: list[tuple[float, float, float]] = []
    for rep in range(args.repeats):
        t_limit, _ = timed(limit, args.settle)
        t_stream, _ = timed(streamed, args.settle)
        t_batch, _ = timed(batch, args.settle)
        rows.append((t_limit, t_stream, t_batch))
        print(f"{rep:>3} {t_limit:>9.4f} {t_stream:>9.4f} {t_batch:>9.4f} "
              f"{t_limit / t_stream:>10.2f} {t_limit / t_batch:>9.2f} {nbytes / t_limit / 1e9:>10.1f} "
              f"{nbytes / t_stream / 1e9:>11.1f} {nbytes / t_batch / 1e9:>10.1f}")

    if args.anatomy:
        reads = [timed(lambda: one_pass("read"), args.settle)[0] for _ in range(args.repeats)]
        adds = [timed(lambda: one_pass("add"), args.settle)[0] for _ in range(args.repeats)]
        print(f"anatomy ({_mean._MAX_THREADS} threads, blocks of {_mean._BLOCK_BYTES >> 10} KiB): "
              f"read pass alone {statistics.median(reads):.4f} s "
              f"({nbytes / statistics.median(reads) / 1e9:.1f} GB/s, numpy's one-stream ufunc limit), "
              f"in-cache add pass alone {statistics.median(adds):.4f} s")

    med_limit = statistics.median(r[0] for r in rows)
    med_stream = statistics.median(r[1] for r in rows)
    med_batch = statistics.median(r[2] for r in rows)
    ratio_stream = statistics.median(r[0] / r[1] for r in rows)
    ratio_batch = statistics.median(r[0] / r[2] for r in rows)
    print(f"median limit  {med_limit:.4f} s  {nbytes / med_limit / 1e9:5.1f} GB/s")
    print(f"median stream {med_stream:.4f} s  {nbytes / med_stream / 1e9:5.1f} GB/s  "
          f"ratio {ratio_stream:.2f} of the BLAS limit (add_many, batch {args.batch})")
    print(f"median batch  {med_batch:.4f} s  {nbytes / med_batch / 1e9:5.1f} GB/s  "
          f"ratio {ratio_batch:.2f} of the BLAS limit (weighted_mean)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
