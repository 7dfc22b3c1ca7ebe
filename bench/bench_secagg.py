"""Benchmark: one round of SecAgg+ against plain aggregation of the same updates.

Drives the client and server state machines of :mod:`fedra.secagg` in one process (no transport, no
encoding), one stage at a time, and times each party's work separately:

- ``quantize``: clipping and fixed-point quantization of one client's update (mean per client);
- ``keys``: a client's stage-1 work, Shamir shares of its two secrets encrypted to each holder (mean);
- ``mask``: a client's stage-2 work, y = x + PRG(b) + sum of +-PRG(s_uv) over its k neighbours (mean);
- ``fold``: the server adding all n masked inputs into its running sum (total);
- ``unmask``: the server reconstructing the secrets and removing the masks at the end (total);
- ``server``: everything the server does in the round (total);
- ``plain``: ``np.sum`` over the ``(clients, params)`` float32 stack of the same updates, the reference.

``--dropouts d`` makes d clients drop just before sending their masked input, so that the server has to
rebuild their mask keys and remove the pairwise masks they share with their neighbours (the costliest
case of unmasking). Medians of ``--repeats`` runs are printed, with the ratio ``server / plain``.

Usage::

    .venv/bin/python bench/bench_secagg.py                                # 100 x 1M, and smaller
    .venv/bin/python bench/bench_secagg.py --clients 20 --params 100000 --repeats 2   # quick
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections import defaultdict

import cryptography
import numpy as np

from fedra.secagg import (
    SERVER_ID,
    ClientProtocol,
    MaskedInput,
    Message,
    SecAggConfig,
    ServerProtocol,
    Stage,
)


def one_round(stack: np.ndarray, *, dropouts: int, seed: int) -> dict[str, float]:
    """Time one round of SecAgg+ over the rows of ``stack``; return seconds per phase."""
    n, size = stack.shape
    clients = [f"c{i:04d}" for i in range(n)]
    config = SecAggConfig.create(round_id=f"bench-{seed}", clients=clients, size=size, clip=1.0,
                                 graph_seed=np.random.default_rng(seed).bytes(32))
    dropped = set(clients[:: max(1, n // dropouts)][:dropouts]) if dropouts else set()
    times: dict[str, float] = defaultdict(float)

    def timed(key: str, fn: object, *args: object) -> list[Message]:
        start = time.perf_counter()
        out = fn(*args)  # type: ignore[operator]
        times[key] += time.perf_counter() - start
        return out  # type: ignore[no-any-return]

    start = time.perf_counter()
    parties = {}
    for i, c in enumerate(clients):
        t0 = time.perf_counter()
        parties[c] = ClientProtocol(config, c, stack[i])
        times["quantize"] += time.perf_counter() - t0
    server = ServerProtocol(config)
    inbox: list[Message] = [m for c in clients for m in parties[c].start()]
    while not server.done:
        if not inbox:
            inbox = timed("server", server.close_stage)
            continue
        message = inbox.pop(0)
        h = message.header
        if h.recipient == SERVER_ID:
            if h.sender in dropped and h.stage >= Stage.MASKED_INPUT:
                continue
            key = "fold" if isinstance(message, MaskedInput) else \
                "unmask" if h.stage is Stage.UNMASK else "server-other"
            inbox += timed(key, server.receive, message)
        else:
            key = {Stage.SHARE_KEYS: "keys", Stage.MASKED_INPUT: "mask"}.get(h.stage, "client-other")
            # deliver a masked input as soon as it is made, as a network would: the server folds it then
            inbox[:0] = timed(key, parties[h.recipient].receive, message)
    times["round"] = time.perf_counter() - start
    times["server"] += times["fold"] + times["unmask"] + times["server-other"]
    for key in ("quantize", "keys", "mask"):
        times[key] /= n
    assert server.result is not None and len(server.result.survivors) == n - len(dropped)
    return dict(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="*", default=[10, 100, 100])
    parser.add_argument("--params", type=int, nargs="*", default=[100_000, 100_000, 1_000_000])
    parser.add_argument("--dropouts", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if len(args.clients) != len(args.params):
        parser.error("--clients and --params need the same number of values")
    print(f"python {platform.python_version()}, numpy {np.__version__}, cryptography "
          f"{cryptography.__version__}, {os.cpu_count()} CPUs")
    for n, size in zip(args.clients, args.params, strict=True):
        stack = np.random.default_rng(0).normal(scale=0.1, size=(n, size)).astype(np.float32)
        config = SecAggConfig.create(round_id="probe", clients=[str(i) for i in range(n)], size=size, clip=1.0)
        print(f"\n{n} clients x {size:,} params (k = {config.degree}, t = {config.threshold}, "
              f"{args.dropouts} dropouts), median of {args.repeats}:")
        runs, plain = [], []
        for rep in range(args.repeats):
            start = time.perf_counter()
            total = np.sum(stack, axis=0)
            plain.append(time.perf_counter() - start)
            del total
            runs.append(one_round(stack, dropouts=args.dropouts, seed=rep))
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        med_plain = statistics.median(plain)
        print(f"  per client: quantize {med['quantize'] * 1e3:8.2f} ms   keys {med['keys'] * 1e3:8.2f} ms   "
              f"mask {med['mask'] * 1e3:8.2f} ms")
        print(f"  server:     fold {med['fold']:8.4f} s   unmask {med['unmask']:8.4f} s   "
              f"total {med['server']:8.4f} s")
        print(f"  plain np.sum {med_plain:8.4f} s   whole round (all parties, one process) "
              f"{med['round']:8.3f} s")
        print(f"  ratio server / plain = {med['server'] / med_plain:6.1f}   "
              f"client mask / plain-per-client = {med['mask'] / (med_plain / n):6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
