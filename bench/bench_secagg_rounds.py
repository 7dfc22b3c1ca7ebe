"""Round time and bytes with and without secure aggregation, in simulation and over gRPC (issue 6, point 7).

    python bench/bench_secagg_rounds.py --clients 100 --hidden 128     # 100 clients x 101,770 parameters
    python bench/bench_secagg_rounds.py --clients 10 --hidden 1250     # 10 clients x 993,760 parameters

The same job twice, without and with ``[secagg]``: Fashion-MNIST split IID across 100 clients, ``--clients``
of them sampled per round (the same ones in both runs: same seed), each doing one local epoch of the MLP
in bench/mlp_task.py (batch 32). In simulation (``fedra simulate``'s engine, 2 workers) and over gRPC on
loopback (the server in this process; the clients in 4 processes, one thread per client, each with the
real GrpcConnector and task loop). Reported per round, as medians over the rounds after the first (and the round time's median
over ``--repeats`` runs of each variant, alternating):
round time; bytes the server sent and received (task and reply payloads: the protocol's messages, the
same in both modes); with secure aggregation, each client's protocol CPU time (quantizing, key
agreement, sharing, encryption, masking: `SecureClient.cpu_seconds`, measured in the gRPC clients) and
the server's protocol time and unmasking time (``RoundRecord.secagg``).
Goal (issue 6): at 100 clients, at most 3x the round time and 2x the bytes of plain aggregation.
"""

from __future__ import annotations

import os

# one BLAS thread per process: 2 workers (or 4 client processes) with a multi-threaded BLAS each on 2
# cores made round times jump between 3 s and 20 s from run to run
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
POPULATION = 100
PROCESSES = 4


def make_spec(clients: int, rounds: int, secure: bool) -> Any:
    from fedra.job import parse_job

    table: dict[str, Any] = {
        "job": {"name": "bench-secagg", "module": "mlp_task.py", "framework": "numpy", "rounds": rounds, "seed": 0},
        "data": {"dataset": "fashion_mnist", "partition": "iid", "num_clients": POPULATION},
        "strategy": {"fraction": clients / POPULATION, "min_clients": clients, "min_replies": 2,
                     "round_timeout": 600.0},
        "client": {"epochs": 1, "batch_size": 32, "lr": 0.05},
        "simulation": {"workers": 2},
    }
    if secure:
        table["secagg"] = {"clip": 1.0, "stage_timeout": 600.0}
    return parse_job(table, base_dir=HERE.parent)


class Counting:
    """Wraps a transport; counts the payload bytes of every task sent and every reply received."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = 0
        self.up = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def exchange(self, batch: Any, *, timeout: float | None) -> Iterator[Any]:
        self.down += sum(memoryview(batch.payload_of(t)).nbytes for t in batch.tasks)
        for reply in self.inner.exchange(batch, timeout=timeout):
            if reply.payload is not None:
                self.up += memoryview(reply.payload).nbytes
            yield reply


def summarize(records: Sequence[Any]) -> dict[str, Any]:
    later = records[1:] or records
    out: dict[str, Any] = {"round_s": statistics.median(r.seconds["total"] for r in later),
                           "completed": all(r.completed for r in records),
                           "accuracy": records[-1].eval_metrics.get("accuracy")}
    if records[0].secagg is not None:
        out["server_s"] = statistics.median(r.secagg["server_seconds"] for r in later)
        out["unmask_s"] = statistics.median(r.secagg["unmask_seconds"] for r in later)
        out["survivors"] = min(r.secagg["survivors"] for r in records)
    return out


def run_sim(clients: int, rounds: int, secure: bool) -> dict[str, Any]:
    from fedra.simulation import simulate

    return summarize(simulate(make_spec(clients, rounds, secure)).records)


def clients_main(port: int, ids: list[str], indices: list[int], hidden: int) -> None:
    import os

    os.environ["FEDRA_BENCH_HIDDEN"] = str(hidden)
    from fedra.app import UserApp
    from fedra.runtime import SecureClient, serve
    from fedra.simulation import load_data
    from fedra.transport.grpc import GrpcConnector

    spec = make_spec(len(ids), 1, False)
    fed = load_data(spec)
    secures = [SecureClient() for _ in ids]
    threads = []
    for cid, i, sc in zip(ids, indices, secures, strict=True):
        app = UserApp(spec.module_path(), framework="numpy", partitions=lambda _c, i=i: fed.partitions[i])
        conn = GrpcConnector(f"127.0.0.1:{port}", client_id=cid)
        th = threading.Thread(target=serve, args=(conn, app), kwargs={"wait": 0.5, "secure": sc}, daemon=True)
        th.start()
        threads.append(th)
    for th in threads:
        th.join()
    print(json.dumps({"cpu_seconds": sum(s.cpu_seconds for s in secures)}), flush=True)


def run_grpc(clients: int, rounds: int, secure: bool, hidden: int) -> dict[str, Any]:
    from fedra.app import UserApp
    from fedra.runtime import RoundDriver
    from fedra.simulation import build_secure, build_strategy, driver_config, load_data
    from fedra.transport.grpc import GrpcTransport

    spec = make_spec(clients, rounds, secure)
    transport = GrpcTransport("127.0.0.1:0", max_workers=POPULATION + 16)
    counting = Counting(transport)
    groups = [list(range(p, POPULATION, PROCESSES)) for p in range(PROCESSES)]
    procs = [subprocess.Popen([sys.executable, str(HERE), "_clients", "--port", str(transport.port),
                               "--hidden", str(hidden), "--indices", ",".join(map(str, g))],
                              stdout=subprocess.PIPE, text=True) for g in groups]
    try:
        if len(transport.wait_for_clients(POPULATION, timeout=300)) < POPULATION:
            raise SystemExit("clients did not connect")
        fed = load_data(spec)
        init = UserApp(spec.module_path(), framework="numpy", partitions=lambda _c: fed.partitions[0])
        driver = RoundDriver(strategy=build_strategy(spec), transport=counting,  # type: ignore[arg-type]
                             initial_params=init.init_arrays(spec.job.seed), config=driver_config(spec),
                             secure=build_secure(spec))
        result = driver.run()
        transport.finish(linger=10.0)
        cpu = 0.0
        for p in procs:
            out, _ = p.communicate(timeout=120)
            cpu += json.loads(out.strip().splitlines()[-1])["cpu_seconds"]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        transport.close()
    summary = summarize(result.records)
    summary["bytes_per_round"] = (counting.down + counting.up) / rounds
    summary["down_per_round"] = counting.down / rounds
    summary["up_per_round"] = counting.up / rounds
    if secure:
        summary["client_cpu_s"] = cpu / (clients * rounds)  # per client and round
    return summary


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd")
    c = sub.add_parser("_clients")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--hidden", type=int, required=True)
    c.add_argument("--indices", required=True)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--modes", default="sim,grpc")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant, alternating")
    args = parser.parse_args()
    if args.cmd == "_clients":
        from fedra.simulation import client_ids

        indices = [int(i) for i in args.indices.split(",")]
        all_ids = client_ids(POPULATION)
        clients_main(args.port, [all_ids[i] for i in indices], indices, args.hidden)
        return
    os.environ["FEDRA_BENCH_HIDDEN"] = str(args.hidden)
    sys.path.insert(0, str(HERE.parent))
    import mlp_task

    params = sum(a.size for a in mlp_task.model().values())
    print(f"{args.clients} clients x {params:,} parameters, {args.rounds} rounds (medians of rounds 2..)")
    for mode in args.modes.split(","):
        rows: dict[bool, dict[str, Any]] = {}
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):  # alternating, so both variants see the same machine
            for secure in (False, True):
                t0 = time.perf_counter()
                rows[secure] = (run_sim(args.clients, args.rounds, secure) if mode == "sim"
                                else run_grpc(args.clients, args.rounds, secure, args.hidden))
                rows[secure]["wall_s"] = time.perf_counter() - t0
                times[secure].append(rows[secure]["round_s"])
                print(f"  {mode:4s} {'secagg' if secure else 'plain ':6s} {json.dumps(rows[secure])}", flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med[True] / med[False]
        line = (f"  {mode:4s} median round time over {args.repeats} runs: plain {med[False]:.3f} s, secagg "
                f"{med[True]:.3f} s; secagg/plain: {ratio:.2f}x")
        if "bytes_per_round" in rows[True]:
            line += f"; bytes secagg/plain: {rows[True]['bytes_per_round'] / rows[False]['bytes_per_round']:.3f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
