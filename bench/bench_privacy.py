"""Benchmark: what client-level DP costs per round in the round driver, against plain FedAvg.

One round of ``--clients`` clients and a float32 model of ``--params`` parameters (in ``--arrays`` arrays),
run by the real :class:`~fedra.runtime.RoundDriver` on the in-memory
:class:`~fedra.transport.FunctionTransport`: encode the round's payload, validate and decode every reply,
fold it in task order, aggregate, step the strategy. The plain run folds the example-weighted mean (BLAS
``axpy``); the DP run (server mode, fixed cohort, noise multiplier 1) takes each reply's delta against the
global model in float64, clips it, sums it, then draws the Gaussian noise for every parameter and charges
the RDP accountant. The fake clients send precomputed updates (``--distinct`` of them, reused), so the
client side costs one encode per reply in both runs.

Each repetition times one round of each, alternating, and prints the medians of the driver's round time
(``total``) and of its parts, the process's CPU time for the round (``cpu``: steadier than wall time on
a shared machine; run with ``OPENBLAS_NUM_THREADS=1`` so that it is the round's whole cost), and the
ratios DP / plain.

Usage::

    .venv/bin/python bench/bench_privacy.py                          # 100 clients x 1M params, 5 repeats
    .venv/bin/python bench/bench_privacy.py --clients 10 --repeats 2  # quick
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from fedra.privacy import DPConfig, DPFedAvg
from fedra.records import Message, encode_message
from fedra.runtime import DriverConfig, RoundDriver, RoundRecord
from fedra.strategy import Strategy
from fedra.transport import FunctionTransport, Task, TaskBatch


def make_model(params: int, arrays: int) -> dict[str, np.ndarray]:
    base, extra = divmod(params, arrays)
    rng = np.random.default_rng(0)
    return {f"layer{i}": (rng.standard_normal(base + (i < extra)) * 0.1).astype(np.float32)
            for i in range(arrays)}


def make_handler(model: dict[str, np.ndarray], distinct: int) -> Callable[[TaskBatch, Task], bytearray]:
    """Clients that each send ``model + a fixed small step`` (one of ``distinct`` precomputed updates)."""
    rng = np.random.default_rng(1)
    updates = [{k: (v + rng.standard_normal(v.shape).astype(np.float32) * 1e-3) for k, v in model.items()}
               for _ in range(distinct)]

    def handler(batch: TaskBatch, task: Task) -> bytearray:
        i = int(task.client_id[1:])
        return encode_message(Message(arrays=updates[i % distinct], metrics={"loss": 0.5},
                                      meta={"task_id": task.task_id, "nonce": task.nonce, "num_examples": 10}))

    return handler


def one_round(model: dict[str, np.ndarray], clients: list[str], handler: Callable[[TaskBatch, Task], bytearray],
              private: bool) -> RoundRecord:
    privacy = (DPFedAvg(DPConfig(clip_norm=1.0, noise_multiplier=1.0, delta=1e-5, sampling="fixed"),
                        rounds=1, population=len(clients), clients_per_round=len(clients))
               if private else None)
    driver = RoundDriver(strategy=Strategy(), transport=FunctionTransport(clients, handler), initial_params=model,
                         config=DriverConfig(rounds=1, seed=0, evaluate_every=0), privacy=privacy, noise_seed=0)
    return driver.run().records[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--arrays", type=int, default=8)
    parser.add_argument("--distinct", type=int, default=8, help="distinct client updates (memory)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model = make_model(args.params, args.arrays)
    clients = [f"c{i}" for i in range(args.clients)]
    handler = make_handler(model, args.distinct)
    print(f"{args.clients} clients x {args.params:,} float32 parameters in {args.arrays} arrays; "
          f"{args.repeats} repeats; python {platform.python_version()}, numpy {np.__version__}, "
          f"{platform.machine()}")
    one_round(model, clients[:2], handler, private=True)  # warm up: imports, the accountant's first curve
    times: dict[bool, dict[str, list[float]]] = {False: {}, True: {}}
    for _ in range(args.repeats):
        for private in (False, True):
            start, cpu = time.perf_counter(), time.process_time()
            rec = one_round(model, clients, handler, private)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            assert rec.completed and rec.accepted == args.clients
            for key, value in {**rec.seconds, "wall": wall, "cpu": cpu}.items():
                times[private].setdefault(key, []).append(value)
    parts = ("train", "aggregate", "total", "wall", "cpu")
    print(f"{'median seconds':<16}" + "".join(f"{p:>11}" for p in parts))
    medians = {private: {p: statistics.median(times[private][p]) for p in parts} for private in (False, True)}
    for private in (False, True):
        print(f"{'DP-FedAvg' if private else 'FedAvg':<16}" + "".join(f"{medians[private][p]:>11.3f}" for p in parts))
    for part in ("total", "cpu"):
        plain, dp = medians[False][part], medians[True][part]
        print(f"DP / plain per round ({part}): {dp / plain:.2f}x  "
              f"({(dp - plain) / args.clients * 1e3:+.2f} ms per client)")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    print("'train' is the exchange: validating, decoding and folding the replies as they arrive; "
          "'aggregate' is the noise, the accountant and the strategy step.")


if __name__ == "__main__":
    main()
