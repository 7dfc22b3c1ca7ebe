"""The traffic monitor's overhead on a networked round: 10 clients x 10M float32 parameters over gRPC on
loopback, with and without ``Monitor`` running.

    python bench/bench_monitor.py                              # as root, for the eBPF backend
    python bench/bench_monitor.py --backend ss                 # the sock_diag fallback
    python bench/bench_monitor.py --clients 10 --params 10000000 --blocks 4 --rounds-per-block 3

This process is the server (a ``RoundDriver`` on ``GrpcTransport``, as ``fedra server`` runs it); each
client is its own process, a minimal echo client over the real ``GrpcConnector`` (decode the task, add
one, send it back), so a round is the real transfer of the model to every client and of every update back.
With the monitor on, it runs as ``fedra server --monitor`` runs it: started in the server's process
(bpftrace is a child process; its map dumps are parsed by a thread of the server's process) and passed to
the driver as an observer, so each round end writes its ``round`` and ``counters`` lines.

The rounds run in blocks that alternate off/on (ABBA order: off-on, on-off, ...), after one warm-up round,
so drift in the machine's load hits both sides alike. The monitor starts before and stops after its block
(bpftrace's start-up is not in any round's time). Reported: median round time off and on, the overhead in
%, a paired estimate (the median over blocks of each block's on/off ratio: on a shared machine, load that
comes and goes in bursts of a few rounds is better cancelled by ``--rounds-per-block 1 --blocks 10``) and,
as a check that the monitor saw the traffic, the upload it counted against what the clients sent.
Goal (issue 4): overhead under 2%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from bench_network import client_main  # noqa: E402  (the same echo client as the network benchmark)

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime: fields 14 and 15 of stat(5)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fedra.linux import Monitor, MonitorRules, fix_mmap_threshold, limit_arenas
    from fedra.runtime import DriverConfig, RoundDriver
    from fedra.strategy import FractionSampler, Strategy
    from fedra.transport.grpc import MMAP_THRESHOLD, GrpcTransport, read_buffer_cap_for

    limit_arenas(1)  # one arena and the mmap threshold, as `fedra server` sets them (not its trim threshold)
    fix_mmap_threshold(MMAP_THRESHOLD)
    model = args.params * 4
    blocks = args.blocks
    transport = GrpcTransport("127.0.0.1:0", max_payload_bytes=1 << 34, max_workers=args.clients + 16,
                              read_buffer=read_buffer_cap_for(model))
    procs = [subprocess.Popen([sys.executable, str(HERE), "_client", "--port", str(transport.port),
                               "--name", f"c{i:04d}"]) for i in range(args.clients)]
    times: dict[str, list[float]] = {"off": [], "on": []}
    # CPU seconds per round of the server and the clients together, and of bpftrace: less at the mercy of
    # the machine's other load than wall time, and they include the probes' cost in the senders' syscalls
    cpu: dict[str, list[float]] = {"off": [], "on": [], "monitor": []}
    counted: list[float] = []
    events = 0
    backend = ""
    try:
        if len(transport.wait_for_clients(args.clients, timeout=300)) < args.clients:
            raise SystemExit("clients did not connect")
        total = 1 + 2 * blocks * args.rounds_per_block
        driver = RoundDriver(strategy=Strategy(sampler=FractionSampler(min_clients=args.clients)),
                             transport=transport, initial_params={"w": np.zeros(args.params, np.float32)},
                             config=DriverConfig(rounds=total, round_timeout=600))
        rnd = 1
        driver.run_round(rnd)  # warm-up: first connections, first allocations
        with tempfile.TemporaryDirectory(prefix="fedra-bench-monitor-") as tmp:
            for b in range(blocks):
                for mode in (("off", "on") if b % 2 == 0 else ("on", "off")):
                    mon = None
                    if mode == "on":
                        mon = Monitor(MonitorRules(ports=(transport.port,), expected_update_bytes=model),
                                      backend=args.backend, interval=args.interval,
                                      jsonl=Path(tmp) / f"traffic-{b}.jsonl").start()
                        backend = mon.backend + (f" (fallback: {mon.fallback_reason})" if mon.fallback_reason else "")
                        driver.observers.append(mon)
                    pids = [os.getpid(), *(p.pid for p in procs)]
                    helper = getattr(getattr(mon, "_runner", None), "_proc", None)  # bpftrace, if it runs
                    try:
                        for _ in range(args.rounds_per_block):
                            rnd += 1
                            c0 = sum(map(cpu_s, pids))
                            m0 = cpu_s(helper.pid) if helper is not None else 0.0
                            rec = driver.run_round(rnd)
                            assert rec.accepted == args.clients, rec
                            times[mode].append(rec.seconds["total"])
                            cpu[mode].append(sum(map(cpu_s, pids)) - c0)
                            if helper is not None:
                                cpu["monitor"].append(cpu_s(helper.pid) - m0)
                    finally:
                        if mon is not None:
                            driver.observers.remove(mon)
                            mon.stop()
                    if mon is not None:
                        up = sum(c["upload"] for c in mon.counters()["connections"])
                        counted.append(up / (args.rounds_per_block * args.clients * model))
                        events += len(mon.events)
                    print(f"block {b + 1}/{blocks} {mode:>3}: "
                          f"{', '.join(f'{t:.3f}' for t in times[mode][-args.rounds_per_block:])} s",
                          flush=True)
        transport.finish(linger=5)
    finally:
        transport.close()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
    return {"times": times, "counted": counted, "events": events, "backend": backend, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="run", choices=["run", "_client"])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--blocks", type=int, default=4, help="off/on block pairs")
    parser.add_argument("--rounds-per-block", type=int, default=3)
    parser.add_argument("--backend", choices=["auto", "bpftrace", "ss"], default="auto")
    parser.add_argument("--interval", type=float, default=1.0, help="the monitor's snapshot interval, s")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="c")
    args = parser.parse_args()
    if args.what == "_client":
        client_main(args.port, args.name)
        return
    print(f"# {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    model = args.params * 4
    print(f"# {args.clients} clients x {args.params:,} float32 ({model / 2**20:.0f} MiB model, "
          f"{2 * args.clients * model / 2**30:.2f} GiB moved per round)", flush=True)
    res = run(args)
    off, on = res["times"]["off"], res["times"]["on"]
    m_off, m_on = statistics.median(off), statistics.median(on)
    print(f"\nmonitor backend: {res['backend']}")
    print(f"round time without the monitor: median {m_off:.3f} s over {len(off)} rounds "
          f"(min {min(off):.3f}, max {max(off):.3f})")
    print(f"round time with the monitor:    median {m_on:.3f} s over {len(on)} rounds "
          f"(min {min(on):.3f}, max {max(on):.3f})")
    overhead = 100 * (m_on / m_off - 1)
    print(f"overhead: {overhead:+.2f}% (goal < 2%: {'met' if overhead < 2 else 'NOT met'}); "
          f"spread of the rounds without it: {100 * (statistics.pstdev(off) / m_off):.1f}% (stdev / median)")
    # each block's off and on rounds are neighbours in time: their ratio cancels load that drifts slowly
    k = args.rounds_per_block
    pairs = [statistics.median(on[i:i + k]) / statistics.median(off[i:i + k]) for i in range(0, len(off), k)]
    print(f"paired estimate (median over the {len(pairs)} blocks of on/off, each block's neighbours): "
          f"{100 * (statistics.median(pairs) - 1):+.2f}% ({', '.join(f'{100 * (r - 1):+.1f}' for r in pairs)})")
    cpu = res["cpu"]
    c_off, c_on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    extra = f", bpftrace itself {statistics.median(cpu['monitor']):.3f} s" if cpu["monitor"] else ""
    print(f"CPU per round, server + clients: {c_off:.2f} s without, {c_on:.2f} s with the monitor "
          f"({100 * (c_on / c_off - 1):+.2f}%){extra}")
    print(f"upload the monitor counted / what the clients sent, per block: "
          f"{', '.join(f'{c:.3f}' for c in res['counted'])}; anomaly events: {res['events']}")


if __name__ == "__main__":
    main()
