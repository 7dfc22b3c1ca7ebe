"""What sandboxing training costs: per task with a warm worker, to start a worker, and per training step.

    python bench/bench_sandbox.py                    # 200 tiny tasks, 5 cold starts, 5 x 200 MLP steps
    python bench/bench_sandbox.py --tasks 500 --steps 400 --blocks 7

Three measurements, each against a baseline measured in the same run, alternating sandboxed and
unsandboxed so that load from elsewhere on the machine hits both alike:

1. **Per task, warm sandbox.** A tiny task (``bench/tiny_task.py``: one softmax-regression step on 32
   digits-sized rows, 650 parameters) through ``SandboxedRunner.run_task`` (socket to the warm worker,
   decode, train, encode, socket back) against ``run_task`` on the same app in this process. The
   difference of the medians is the sandbox's cost per task. Goal (issue 4): under 50 ms.
2. **Cold start.** ``SandboxedRunner.start()``: cgroup, bubblewrap, a fresh interpreter importing fedra
   and numpy, the seccomp filter, loading the module and the data, up to the worker's ``ready``.
   Reported apart: it is paid once per client (and after a worker dies), not per task.
3. **Per step.** A real training step, an MLP 64-512-10 (float32 numpy, SGD, batch 128) on rows of the
   digits' shape, timed *inside* the training code, in the sandbox (seccomp filter, namespaces, the
   cgroup with memory, CPU and process limits) and in this process. Median step time of each block of
   ``--steps`` steps, median over ``--blocks`` blocks. Goal: under 3% slower. What could slow a step:
   the seccomp filter runs on every system call (a step makes almost none), and the CFS quota of the
   cpu cgroup throttles a worker that uses more than its ``--cpu`` within a 100 ms period.

BLAS runs single-threaded on both sides by default (``--threads``), so the CPU limit and the machine's
other load do not decide the ratio. This file is also the MLP's user module (``model``/``train``/
``evaluate`` below): the sandboxed worker imports it, read-only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
TINY = HERE.parent / "tiny_task.py"

if __name__ == "__main__":  # before numpy loads: the BLAS thread count is read once, at import
    _threads = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--threads"), "1")
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _threads  # passed into the sandbox too (fedra.linux._sandbox._ENV_PASSED)

import numpy as np  # noqa: E402

HIDDEN = 512
BATCH = 128


# -- the MLP as a user module ---------------------------------------------------------------------------


def model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"w1": (rng.standard_normal((64, HIDDEN)) * 0.05).astype(np.float32),
            "b1": np.zeros(HIDDEN, np.float32),
            "w2": (rng.standard_normal((HIDDEN, 10)) * 0.05).astype(np.float32),
            "b2": np.zeros(10, np.float32)}


def _step(m: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, lr: np.float32) -> None:
    h = np.maximum(x @ m["w1"] + m["b1"], 0)
    z = h @ m["w2"] + m["b2"]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    p /= len(y)
    dh = (p @ m["w2"].T) * (h > 0)
    m["w2"] -= lr * (h.T @ p)
    m["b2"] -= lr * p.sum(axis=0)
    m["w1"] -= lr * (x.T @ dh)
    m["b1"] -= lr * dh.sum(axis=0)


def train(m: dict[str, np.ndarray], data: Any, config: dict[str, Any]) -> dict[str, float]:
    """``config["steps"]`` SGD steps, each timed here; returns the median and total step time."""
    x, y = np.asarray(data.x, np.float32), np.asarray(data.y)
    lr = np.float32(config.get("lr", 0.01))
    times = []
    for i in range(int(config["steps"])):
        lo = (i * BATCH) % (len(x) - BATCH)
        t0 = time.perf_counter()
        _step(m, x[lo:lo + BATCH], y[lo:lo + BATCH], lr)
        times.append(time.perf_counter() - t0)
    return {"step_median_s": statistics.median(times), "steps_total_s": sum(times)}


def evaluate(m: dict[str, np.ndarray], data: Any) -> dict[str, float]:
    h = np.maximum(data.x @ m["w1"] + m["b1"], 0)
    return {"accuracy": float(((h @ m["w2"] + m["b2"]).argmax(1) == data.y).mean())}


# -- the benchmark -------------------------------------------------------------------------------------


def _payload(arrays: dict[str, np.ndarray], config: dict[str, Any]) -> bytearray:
    from fedra.records import Message, encode_message

    return encode_message(Message(arrays=arrays, config=config, meta={"kind": "train", "round": 1}))


def _worker_command(module: Path, data: Path) -> list[str]:
    spec = {"module": str(module), "framework": "numpy", "data": str(data), "num_classes": 10, "name": "bench"}
    return [sys.executable, "-P", "-c",
            "from fedra.cli.client import sandbox_worker; raise SystemExit(sandbox_worker())", json.dumps(spec)]


def _ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200, help="tiny tasks per side")
    parser.add_argument("--starts", type=int, default=5, help="cold starts")
    parser.add_argument("--steps", type=int, default=200, help="MLP steps per block")
    parser.add_argument("--blocks", type=int, default=5, help="blocks of steps per side")
    parser.add_argument("--memory-mib", type=int, default=1024)
    parser.add_argument("--cpu", type=float, default=1.0)
    parser.add_argument("--pids", type=int, default=512)
    parser.add_argument("--threads", default="1", help="BLAS threads, both sides")
    args = parser.parse_args()

    from fedra.app import UserApp
    from fedra.data import Dataset
    from fedra.linux import (
        Limits,
        SandboxConfig,
        cgroup_unavailable_reason,
        sandbox_unavailable_reason,
    )
    from fedra.records import decode_message
    from fedra.runtime import RoundPayload, SandboxedRunner, run_task
    from fedra.transport.base import Task

    print(f"# {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    why = sandbox_unavailable_reason()
    if why is not None:
        raise SystemExit(f"cannot sandbox here: {why}")
    limits = Limits(memory_mib=args.memory_mib, cpu=args.cpu, pids=args.pids)
    why = cgroup_unavailable_reason(limits)
    if why is not None:
        print(f"# limits {limits} cannot be applied ({why}); measuring without them")
        limits = Limits()
    print(f"# limits: {limits}; BLAS threads {args.threads}; {os.cpu_count()} CPUs")

    rng = np.random.default_rng(1)
    ds = Dataset(x=rng.random((1797, 64), dtype=np.float32) * 16, y=rng.integers(0, 10, 1797).astype(np.int64),
                 num_classes=10, name="bench")
    task = Task("t", "bench", "n")
    with tempfile.TemporaryDirectory(prefix="fedra-bench-sandbox-") as tmp:
        root = Path(tmp)
        data = root / "data" / "bench.npz"
        data.parent.mkdir()
        np.savez(data, x=ds.x, y=ds.y)

        def sandboxed(module: Path) -> SandboxedRunner:
            config = SandboxConfig(work_dir=root / "work", read_only=(module.parent, data), limits=limits)
            return SandboxedRunner(_worker_command(module, data), config)

        # 1. per task, warm
        tiny = UserApp(str(TINY), framework="numpy", partitions=lambda _cid: ds)
        tiny_payload = _payload(tiny.init_arrays(0), {"batch_size": 32, "lr": 0.1})
        plain, boxed = [], []
        with sandboxed(TINY) as runner:
            runner.start()
            for _ in range(10):  # warm both paths (first-call costs, page faults)
                runner.run_task(tiny_payload, task)
                run_task(tiny, RoundPayload.decode(tiny_payload), task)
            for _ in range(args.tasks):
                t0 = time.perf_counter()
                run_task(tiny, RoundPayload.decode(tiny_payload), task)
                t1 = time.perf_counter()
                runner.run_task(tiny_payload, task)
                t2 = time.perf_counter()
                plain.append(t1 - t0)
                boxed.append(t2 - t1)
        extra = statistics.median(boxed) - statistics.median(plain)
        print(f"\n1. tiny task ({args.tasks} each, alternating): in process {_ms(plain)}, sandboxed {_ms(boxed)}; "
              f"sandbox cost per task {extra * 1e3:.3f} ms (goal < 50 ms: {'met' if extra < 0.05 else 'NOT met'})")
        print(f"   sandboxed p90 {np.percentile(boxed, 90) * 1e3:.3f} ms, in process p90 "
              f"{np.percentile(plain, 90) * 1e3:.3f} ms")

        # 2. cold start
        starts = []
        for _ in range(args.starts):
            with sandboxed(TINY) as runner:
                t0 = time.perf_counter()
                runner.start()
                starts.append(time.perf_counter() - t0)
        print(f"\n2. cold start (worker to 'ready', {args.starts} runs): median {_ms(starts)} "
              f"({', '.join(f'{s * 1e3:.0f}' for s in starts)} ms)")

        # 3. per step
        mlp = UserApp(str(HERE), framework="numpy", partitions=lambda _cid: ds)
        step_payload = _payload(mlp.init_arrays(0), {"steps": args.steps, "lr": 0.01})
        inside: list[float] = []
        outside: list[float] = []
        with sandboxed(HERE) as runner:
            runner.start()
            runner.run_task(step_payload, task)  # warm-up block on each side
            run_task(mlp, RoundPayload.decode(step_payload), task)
            for _ in range(args.blocks):
                got = decode_message(run_task(mlp, RoundPayload.decode(step_payload), task)).metrics
                outside.append(float(got["step_median_s"]))
                got = decode_message(runner.run_task(step_payload, task)).metrics
                inside.append(float(got["step_median_s"]))
        ratio = statistics.median(inside) / statistics.median(outside)
        print(f"\n3. MLP 64-{HIDDEN}-10 step, batch {BATCH} ({args.blocks} blocks x {args.steps} steps, "
              f"alternating): in process {_ms(outside)}, sandboxed {_ms(inside)}")
        print(f"   per block: in process {', '.join(f'{t * 1e3:.3f}' for t in outside)} ms; "
              f"sandboxed {', '.join(f'{t * 1e3:.3f}' for t in inside)} ms")
        print(f"   slowdown {100 * (ratio - 1):+.2f}% (goal < 3%: {'met' if ratio < 1.03 else 'NOT met'})")


if __name__ == "__main__":
    main()
