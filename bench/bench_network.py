"""Networked round time on loopback against the cost of moving the same bytes through a local socket.

    python bench/bench_network.py --clients 10 --params 10000000
    python bench/bench_network.py --clients 100 --params 1000000

Each client is its own process (a minimal echo client over the real GrpcConnector: it decodes the task,
adds one to the model and sends it back), so the server does all of a round's real work: encode, stream
the model to every client in checked chunks, reassemble and validate every reply, fold it, step. The
baseline, measured in the same run, pushes clients x model bytes through one TCP loopback connection once
each way. Also in the same run, "grpcio alone": the same clients, processes, chunks and bytes through
grpcio with nothing else (no checks, no copies of fedra's, no aggregation), what grpcio's Python API
costs by itself; and "sockets alone": the same again over plain TCP, what this machine does with these
processes and bytes when gRPC is not in the way. The server process also reports its peak RSS above its
RSS before the job, in model sizes.
Goals (issue 3): round time within 2x of the baseline; server peak RSS under (2 + clients in flight) x model.

The server sets glibc's heap as `fedra server` does (one arena, fixed mmap and trim thresholds:
fedra/linux/_malloc.py); BENCH_ARENAS=0, BENCH_MMAP_THRESHOLD=0 and BENCH_TRIM_THRESHOLD=0 run it with
glibc's defaults instead. gRPC's read buffer is capped as `fedra server` caps it for the model
(``read_buffer_cap_for``); BENCH_READ_BUFFER=N caps it at N bytes instead. BENCH_REORDER_WINDOW=N lets
the driver hold N early replies instead of GrpcTransport's default; BENCH_REPLY_CHUNK=N has the clients
cut their replies into chunks of N bytes instead of ``chunk_size_for`` the reply. ``--memory-detail`` traces
Python's allocations and what stays after the job; ``--sample-memory`` samples the server's buffers and
malloc's heap every 3 ms (what each round's peak is made of).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve()


def socket_baseline(total: int, chunk: int = 4 << 20) -> float:
    """Seconds to send ``total`` bytes one way and back through a TCP loopback connection."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    a = socket.create_connection(("127.0.0.1", port))
    b, _ = srv.accept()
    buf = bytearray(chunk)
    view = memoryview(buf)

    def send(sock: socket.socket) -> None:
        left = total
        while left:
            n = sock.send(view[: min(chunk, left)])
            left -= n

    def recv(sock: socket.socket) -> None:
        left = total
        into = bytearray(chunk)
        while left:
            n = sock.recv_into(into, min(chunk, left))
            left -= n

    t0 = time.perf_counter()
    for src, dst in ((a, b), (b, a)):
        th = threading.Thread(target=recv, args=(dst,))
        th.start()
        send(src)
        th.join()
    elapsed = time.perf_counter() - t0
    for s in (a, b, srv):
        s.close()
    return elapsed


def timed_rounds(cv: threading.Condition, state: dict[str, int], clients: int, rounds: int, *,
                 what: str) -> list[float]:
    """Start each round (``state["round"]``) and time it until every client has pushed its bytes back."""
    times = []
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        with cv:
            state["round"], state["pushed"] = r, 0
            cv.notify_all()
            if not cv.wait_for(lambda: state["pushed"] == clients, timeout=600):
                raise SystemExit(f"{what}: clients did not answer")
        times.append(time.perf_counter() - t0)
    return times


def floor_server_main(clients: int, model: int, rounds: int) -> dict[str, Any]:
    """grpcio alone: each round, every client pulls ``model`` bytes and pushes them back; nothing else.

    The same process layout, chunk size and bytes as fedra's rounds, with none of fedra's work: no
    encoding (one prebuilt chunk sent again and again), no checksums, no reassembly, no decoding, no
    aggregation, no bound on what is in flight. What is left is what grpcio's Python API costs.
    """
    from concurrent import futures

    import grpc

    from fedra.transport.grpc import CHANNEL_OPTIONS
    from fedra.transport.grpc._chunks import chunk_size_for

    size = chunk_size_for(model)
    data = os.urandom(size)
    cv = threading.Condition()
    state = {"round": 0, "pushed": 0}

    def pull(request: bytes, context: Any) -> Any:
        wanted = int(request or b"1")
        with cv:
            cv.wait_for(lambda: state["round"] >= wanted)
        for offset in range(0, model, size):
            yield data if offset + size <= model else data[: model - offset]

    def push(chunks: Any, context: Any) -> bytes:
        for _ in chunks:
            pass
        with cv:
            state["pushed"] += 1
            cv.notify_all()
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=clients + 16), options=CHANNEL_OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("floor.F", {
        "Pull": grpc.unary_stream_rpc_method_handler(pull),
        "Push": grpc.stream_unary_rpc_method_handler(push)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    procs = [subprocess.Popen([sys.executable, str(HERE), "_floor_client", "--port", str(port), "--rounds",
                               str(rounds)]) for _ in range(clients)]
    try:
        time.sleep(2.0)  # the clients' imports and connections, as fedra's first round has them
        base = rss_kib()
        times = timed_rounds(cv, state, clients, rounds, what="floor")
    finally:
        for p in procs:
            p.wait(timeout=60)
        server.stop(grace=1.0)
    return {"round_s": times, "rss_job_start_kib": base,
            "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def floor_client_main(port: int, rounds: int) -> None:
    import grpc

    from fedra.transport.grpc import CHANNEL_OPTIONS

    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
    pull, push = channel.unary_stream("/floor.F/Pull"), channel.stream_unary("/floor.F/Push")
    for r in range(1, rounds + 1):
        push(iter(list(pull(str(r).encode(), timeout=600))), timeout=600)
    channel.close()


def sockets_server_main(clients: int, model: int, rounds: int) -> dict[str, Any]:
    """Sockets alone: grpcio alone's rounds with plain TCP in place of gRPC.

    The same client processes, one connection each, and the same bytes: each round, every client is sent
    ``model`` bytes and sends them back, read straight into a buffer on both ends (no chunks, no framing,
    nothing else; a server thread per connection, as gRPC's pool gives each call one). What this machine
    does with these processes and bytes when nothing of gRPC's is in the way.
    """
    data = memoryview(os.urandom(model))
    cv = threading.Condition()
    state = {"round": 0, "pushed": 0}
    srv = socket.create_server(("127.0.0.1", 0), backlog=clients)
    port = srv.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, str(HERE), "_sockets_client", "--port", str(port), "--rounds",
                               str(rounds), "--params", str(model // 4)]) for _ in range(clients)]

    def started(r: int) -> bool:
        return state["round"] >= r

    def serve(conn: socket.socket) -> None:
        into = memoryview(bytearray(model))
        for r in range(1, rounds + 1):
            with cv:
                cv.wait_for(functools.partial(started, r))
            conn.sendall(data)
            _recv_exactly(conn, into)
            with cv:
                state["pushed"] += 1
                cv.notify_all()

    srv.settimeout(60)
    conns = [srv.accept()[0] for _ in range(clients)]
    threads = [threading.Thread(target=serve, args=(conn,), daemon=True) for conn in conns]
    for th in threads:
        th.start()
    try:
        times = timed_rounds(cv, state, clients, rounds, what="sockets")
    finally:  # the clients wait for this before they exit, so that no round pays for their exits
        for conn in conns:
            conn.close()
        for p in procs:
            p.wait(timeout=60)
        srv.close()
    return {"round_s": times}


def _recv_exactly(conn: socket.socket, into: memoryview) -> None:
    got = 0
    while got < into.nbytes:
        n = conn.recv_into(into[got:])
        if not n:
            raise SystemExit("sockets: the peer closed the connection mid-message")
        got += n


def sockets_client_main(port: int, rounds: int, model: int) -> None:
    into = memoryview(bytearray(model))
    with socket.create_connection(("127.0.0.1", port)) as conn:
        for _ in range(rounds):
            _recv_exactly(conn, into)
            conn.sendall(into)
        conn.recv(1)  # the server's close: the job is over


def client_main(port: int, name: str) -> None:
    from fedra.errors import TransportError
    from fedra.records import Message, decode_message, encode_message
    from fedra.transport import JobFinished
    from fedra.transport.grpc import GrpcConnector

    if size := int(os.environ.get("BENCH_REPLY_CHUNK", 0)):  # the connector's pushes, cut smaller or larger
        import fedra.transport.grpc._client as connector

        connector.chunks = functools.partial(connector.chunks, size=size)  # type: ignore[attr-defined]
    conn = GrpcConnector(f"127.0.0.1:{port}", client_id=name, max_payload_bytes=1 << 34)
    while True:
        try:
            pulled = conn.pull(2.0)
        except JobFinished:
            return
        except TransportError:
            time.sleep(0.1)
            continue
        if pulled is None:
            continue
        msg = decode_message(pulled.payload)
        arrays = {k: v + np.float32(1) for k, v in msg.arrays.items()}
        reply = encode_message(Message(arrays=arrays, meta={
            "task_id": pulled.task.task_id, "nonce": pulled.task.nonce, "num_examples": 1}))
        conn.push(pulled.task, reply)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def hwm_kib() -> int:
    """The process's peak RSS since it started or since :func:`reset_hwm` (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def reset_hwm() -> None:
    """Restart the peak RSS count from the current RSS (Linux: 5 to clear_refs; a no-op elsewhere)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


class RssByRound:
    """A driver observer: the peak RSS of each round and the RSS at its end (KiB), and its page faults."""

    def __init__(self) -> None:
        self.peaks: list[int] = []
        self.ends: list[int] = []
        self.faults: list[int] = []  # minor page faults of the server process in each round
        self._faults = 0

    def on_run_start(self, info: Any) -> None:
        reset_hwm()
        self._faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def on_round_end(self, record: Any) -> None:
        self.peaks.append(hwm_kib())
        self.ends.append(rss_kib())
        reset_hwm()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        self.faults.append(faults - self._faults)
        self._faults = faults

    def on_run_end(self, records: Any) -> None:
        pass


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]


#: glibc, for mallinfo2() and malloc_trim(); loaded once (MemorySampler reads mallinfo2 every 3 ms)
LIBC = ctypes.CDLL("libc.so.6")
LIBC.mallinfo2.restype = _Mallinfo2


def mallinfo() -> Any:
    """glibc's ``mallinfo2()``: ``uordblks`` bytes in use in the arenas, ``hblkhd`` in malloc's own mappings."""
    return LIBC.mallinfo2()


def malloc_in_use_mib() -> float:
    """Bytes glibc's malloc has handed out and not had back (arenas and mappings), in MiB."""
    info = mallinfo()
    return (info.uordblks + info.hblkhd) / 2**20


def mapped_kib() -> dict[str, int]:
    """RSS (KiB) of the anonymous mappings of 2 MiB and more ("buffers": the payload, the running sum and the
    reply buffers, which fedra.records.empty_buffer and numpy map on their own, and thread stacks, which
    barely change) and of malloc's heap ("heap": gRPC's C core and Python's objects, the server's one arena)."""
    out = {"buffers": 0, "heap": 0}
    kind = None
    with open("/proc/self/smaps", "rb") as f:
        for line in f:
            if line[:1] in b"0123456789abcdef" and b"-" in line.split(b" ", 1)[0]:
                fields = line.split()
                lo, hi = (int(x, 16) for x in fields[0].split(b"-"))
                name = fields[5] if len(fields) > 5 else b""
                kind = "heap" if name == b"[heap]" else "buffers" if not name and hi - lo >= 2 << 20 else None
            elif kind is not None and line.startswith(b"Rss:"):
                out[kind] += int(line.split()[1])
    return out


class MemorySampler:
    """A driver observer that samples the server's memory every 3 ms during the rounds (``--sample-memory``):
    for each round, the most RSS of its buffers and of malloc's heap (:func:`mapped_kib`) and the most bytes
    malloc had in use in its heap, with the same at job start; what the peak RSS is made of."""

    def __init__(self) -> None:
        self.start: dict[str, int] = {}
        self.rounds: list[dict[str, int]] = []
        self._most: dict[str, int] = {}
        self._stop = threading.Event()

    def _sample(self) -> dict[str, int]:
        return {**mapped_kib(), "in_use": mallinfo().uordblks >> 10}

    def _run(self) -> None:
        while not self._stop.wait(0.003):
            for key, value in self._sample().items():
                self._most[key] = max(self._most.get(key, 0), value)

    def on_run_start(self, info: Any) -> None:
        self.start = self._sample()
        threading.Thread(target=self._run, daemon=True).start()

    def on_round_end(self, record: Any) -> None:
        most, self._most = self._most, {}
        self.rounds.append({**most, "end_in_use": mallinfo().uordblks >> 10})

    def on_run_end(self, records: Any) -> None:
        self._stop.set()


def server_main(clients: int, params: int, rounds: int, memory_detail: bool = False, max_replies: int = 8,
                max_sending: int = 8, sample_memory: bool = False) -> dict[str, Any]:
    from fedra.linux import fix_mmap_threshold, limit_arenas, set_trim_threshold
    from fedra.runtime import DriverConfig, RoundDriver
    from fedra.strategy import FractionSampler, Strategy
    from fedra.transport.grpc import (
        MMAP_THRESHOLD,
        GrpcTransport,
        read_buffer_cap_for,
        trim_threshold_for,
    )

    # the heap as `fedra server` sets it (see fedra/linux/_malloc.py); 0: glibc's default
    if arenas := int(os.environ.get("BENCH_ARENAS", 1)):
        limit_arenas(arenas)
    if threshold := int(os.environ.get("BENCH_MMAP_THRESHOLD", MMAP_THRESHOLD)):  # 0: glibc's dynamic rule
        fix_mmap_threshold(threshold)
    if trim := int(os.environ.get("BENCH_TRIM_THRESHOLD", trim_threshold_for(params * 4))):  # 0: glibc's 128 KiB
        set_trim_threshold(trim)
    before = rss_kib()
    # gRPC's read buffer as `fedra server` caps it for this model; BENCH_READ_BUFFER=N: capped at N bytes
    read_buffer = int(os.environ.get("BENCH_READ_BUFFER", 0)) or read_buffer_cap_for(params * 4)
    transport = GrpcTransport("127.0.0.1:0", max_payload_bytes=1 << 34, max_workers=clients + 16,
                              max_replies=max_replies, max_sending=max_sending, read_buffer=read_buffer,
                              reorder_window=int(os.environ["BENCH_REORDER_WINDOW"])
                              if "BENCH_REORDER_WINDOW" in os.environ else None)
    # --server-env is the server's alone: the clients run as they would on their own hosts
    client_env = {k: v for k, v in os.environ.items()
                  if k not in os.environ.get("BENCH_SERVER_ONLY_ENV", "").split(",")}
    procs = [subprocess.Popen([sys.executable, str(HERE), "_client", "--port", str(transport.port),
                               "--name", f"c{i:04d}"], env=client_env) for i in range(clients)]
    try:
        if len(transport.wait_for_clients(clients, timeout=300)) < clients:
            raise SystemExit("clients did not connect")
        by_round = RssByRound()
        sampler = MemorySampler() if sample_memory else None
        driver = RoundDriver(strategy=Strategy(sampler=FractionSampler(min_clients=clients)),
                             transport=transport, initial_params={"w": np.zeros(params, np.float32)},
                             config=DriverConfig(rounds=rounds, round_timeout=600),
                             observers=[by_round, *([sampler] if sampler else [])])
        # code the rounds load on first use is not round memory: the mean's first fold imports SciPy's
        # BLAS, 17 MiB of RSS (4 x the model at 100 x 1M), so it is loaded before the baseline is taken
        import scipy.linalg.blas  # noqa: F401

        base = rss_kib()
        if memory_detail:  # what Python (numpy included) holds, against what malloc holds in all
            import tracemalloc

            tracemalloc.start()
        result = driver.run()
        detail: dict[str, Any] = {}
        if sampler is not None:
            detail["sampled"] = {"start": sampler.start, "rounds": sampler.rounds}
        if memory_detail:
            detail |= {"python_peak_mib": tracemalloc.get_traced_memory()[1] / 2**20,
                       "malloc_in_use_mib": malloc_in_use_mib()}
            tracemalloc.stop()  # its own traces are not the server's
            # what stays after the job with the connections still open, and what of it is free space in
            # malloc's arenas (malloc_trim gives that back to the kernel)
            detail["after_job_kib"] = rss_kib()
            LIBC.malloc_trim(0)
            detail["after_trim_kib"] = rss_kib()
        peak = max(by_round.peaks)  # KiB; the HWM is reset each round, so getrusage's maxrss would not do
        transport.finish(linger=5)
    finally:
        transport.close()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    assert all(r.accepted == clients for r in result.records)
    return {"round_s": [r.seconds["total"] for r in result.records], "rss_before_kib": before,
            "rss_job_start_kib": base, "peak_kib": peak, "in_flight": transport.peak_replies_in_flight,
            "stalled_sends": transport.stalled_sends, "stalled_replies": transport.stalled_replies,
            "folded_ahead": sum(r.folded_ahead or 0 for r in result.records),
            "round_peak_kib": by_round.peaks, "round_end_kib": by_round.ends, "round_faults": by_round.faults,
            **detail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="run",
                        choices=["run", "_client", "_server", "_floor_server", "_floor_client", "_sockets_server",
                                 "_sockets_client"])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="c")
    parser.add_argument("--max-replies", type=int, default=8, help="GrpcTransport(max_replies=...)")
    parser.add_argument("--max-sending", type=int, default=8, help="GrpcTransport(max_sending=...)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="set in fedra's server process only, not its clients nor grpcio alone (e.g. "
                             "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 to try another allocator)")
    parser.add_argument("--memory-detail", action="store_true",
                        help="also trace Python's allocations (slower rounds: memory figures only)")
    parser.add_argument("--sample-memory", action="store_true",
                        help="also sample the server's buffers and malloc's heap every 3 ms, per round (slower "
                             "rounds: memory figures only)")
    args = parser.parse_args()
    if args.what == "_client":
        client_main(args.port, args.name)
        return
    if args.what == "_server":
        print(json.dumps(server_main(args.clients, args.params, args.rounds, args.memory_detail, args.max_replies,
                                     args.max_sending, args.sample_memory)))
        return
    if args.what == "_floor_server":
        print(json.dumps(floor_server_main(args.clients, args.params * 4, args.rounds)))
        return
    if args.what == "_floor_client":
        floor_client_main(args.port, args.rounds)
        return
    if args.what == "_sockets_server":
        print(json.dumps(sockets_server_main(args.clients, args.params * 4, args.rounds)))
        return
    if args.what == "_sockets_client":
        sockets_client_main(args.port, args.rounds, args.params * 4)
        return
    model = args.params * 4
    total = args.clients * model
    print(f"# {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    if bad := [item for item in args.server_env if not item.split("=", 1)[0] or "=" not in item]:
        parser.error(f"--server-env: expected NAME=VALUE, got {bad}")
    server_env = dict(item.split("=", 1) for item in args.server_env)
    out = subprocess.run([sys.executable, str(HERE), "_server", "--clients", str(args.clients), "--params",
                          str(args.params), "--rounds", str(args.rounds), "--max-replies", str(args.max_replies),
                          "--max-sending", str(args.max_sending),
                          *(["--memory-detail"] if args.memory_detail else []),
                          *(["--sample-memory"] if args.sample_memory else [])], capture_output=True, text=True,
                         check=True, env={**os.environ, **server_env, "BENCH_SERVER_ONLY_ENV": ",".join(server_env)})
    res = json.loads(out.stdout.strip().splitlines()[-1])
    rounds = res["round_s"][1:]  # round 1 includes the clients' first imports and connections
    base = [socket_baseline(total) for _ in range(3)]

    def reference(what: str) -> dict[str, Any]:  # grpcio alone or sockets alone, in a process of its own
        out = subprocess.run([sys.executable, str(HERE), what, "--clients", str(args.clients), "--params",
                              str(args.params), "--rounds", str(args.rounds)],
                             capture_output=True, text=True, check=True)
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))

    floor_res = reference("_floor_server")
    floor = floor_res["round_s"][1:]
    sockets = reference("_sockets_server")["round_s"][1:]
    r_med, b_med, f_med = statistics.median(rounds), statistics.median(base), statistics.median(floor)
    s_med = statistics.median(sockets)
    extra = (res["peak_kib"] - res["rss_job_start_kib"]) * 1024
    from fedra.transport.grpc._chunks import chunk_size_for

    print(f"{args.clients} clients x {args.params:,} float32 ({model / 2**20:.0f} MiB model, "
          f"{2 * total / 2**30:.2f} GiB moved per round, chunks of {chunk_size_for(model) >> 10} KiB)")
    print(f"round time: median {r_med:.3f} s over rounds 2..{args.rounds} "
          f"({', '.join(f'{t:.3f}' for t in rounds)})")
    print(f"socket baseline, same bytes once each way: median {b_med:.3f} s "
          f"({', '.join(f'{t:.3f}' for t in base)})")
    print(f"grpcio alone, same bytes, chunks and processes, nothing else: median {f_med:.3f} s "
          f"({', '.join(f'{t:.3f}' for t in floor)}) = {f_med / b_med:.2f} x baseline; its peak RSS above "
          f"its RSS at job start, nothing bounding what it holds: "
          f"{(floor_res['peak_kib'] - floor_res['rss_job_start_kib']) * 1024 / model:.1f} x model")
    print(f"sockets alone, the same with plain TCP for gRPC: median {s_med:.3f} s "
          f"({', '.join(f'{t:.3f}' for t in sockets)}) = {s_med / b_med:.2f} x baseline")
    print(f"ratio round / baseline: {r_med / b_med:.2f}  (goal <= 2); round / grpcio alone: {r_med / f_med:.2f}")
    faults = statistics.median(res["round_faults"][1:] or res["round_faults"])
    print(f"server page faults per round: median {faults:,.0f} ({faults * 4096 / (2 * total):.2f} per 4 KiB "
          f"moved)")
    print(f"server peak RSS above its RSS at job start: {extra / 2**20:.0f} MiB = {extra / model:.1f} x model "
          f"(process peak {res['peak_kib'] / 1024:.0f} MiB, {res['rss_job_start_kib'] / 1024:.0f} MiB at job start)")
    flight = res["in_flight"]
    print(f"send slots taken from stalled downloads: {res['stalled_sends']}; stalled replies cancelled: "
          f"{res['stalled_replies']}; updates folded ahead of an earlier task: {res['folded_ahead']}")
    print(f"replies in flight at most: {flight}; goal: peak RSS above job start < (2 + {flight}) x model "
          f"= {(2 + flight) * model / 2**20:.0f} MiB: {'met' if extra < (2 + flight) * model else 'NOT met'}")
    if args.rounds > 1:  # what a warm server's rounds cost, against the RSS it settled at after round 1
        settled, later = res["round_end_kib"][0], max(res["round_peak_kib"][1:])
        print(f"RSS at the end of round 1: {(settled - res['rss_job_start_kib']) / 1024:.0f} MiB above job start "
              f"(the model and its payload, written now; what gRPC keeps per connection; free space in malloc's "
              f"arenas); rounds 2..{args.rounds}: "
              f"peak {(later - settled) * 1024 / model:.1f} x model above it")
    if args.memory_detail:
        print(f"Python-traced peak during the rounds (Python's and numpy's allocations; not the payloads and "
              f"reply buffers of 2 MiB and more, which fedra.records.empty_buffer maps on their own): "
              f"{res['python_peak_mib']:.0f} MiB = {res['python_peak_mib'] * 2**20 / model:.1f} x model; "
              f"malloc in use after the job: "
              f"{res['malloc_in_use_mib']:.0f} MiB (Python's and gRPC's C core's together)")
        after, trimmed, start = res["after_job_kib"], res["after_trim_kib"], res["rss_job_start_kib"]
        print(f"after the job, connections still open: {(after - start) / 1024:.0f} MiB above job start, "
              f"{(trimmed - start) / 1024:.0f} MiB after malloc_trim (so {(after - trimmed) / 1024:.0f} MiB "
              f"was free space in malloc's arenas; the model and its payload are "
              f"{2 * model / 2**20:.0f} MiB of what stays)")

    if sampled := res.get("sampled"):
        start = sampled["start"]
        print(f"sampled every 3 ms (anonymous mappings of 2 MiB and more: the payload, the running sum, the reply "
              f"buffers; malloc's heap: gRPC's C core and Python's objects), above job start, in models; "
              f"at job start: heap {start['heap'] / 1024:.0f} MiB, {start['in_use'] / 1024:.0f} MiB in use")
        for r, most in enumerate(sampled["rounds"], 1):
            print(f"  round {r}: buffers at most {(most['buffers'] - start['buffers']) * 1024 / model:.1f}; "
                  f"heap at most {(most['heap'] - start['heap']) * 1024 / model:.1f} "
                  f"({most['heap'] / 1024:.0f} MiB), malloc's most in use in it {most['in_use'] / 1024:.0f} MiB, "
                  f"{most['end_in_use'] / 1024:.0f} MiB at the round's end")

if __name__ == "__main__":
    main()
