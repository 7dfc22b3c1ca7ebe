"""What a grpcio server keeps per connection once its clients have pushed a payload, with fedra's options.

    python bench/bench_grpc_connection.py --clients 100 --bytes 4000000 --chunk 262144
    python bench/bench_grpc_connection.py --tls     # mutual TLS, as fedra deploys by default
    heaptrack python bench/bench_grpc_connection.py _server --bytes 65536 --chunk 65536 --exit-after-pushes

A grpcio server (nothing of fedra's but its channel options) accepts ``--clients`` connections from one
client process (one channel each, no shared subchannels). Each connection makes one call first, so that
connecting is not counted; then every client streams ``--bytes`` in ``--chunk`` messages to the server
(16 at a time), and the calls end. With the connections still open, the server reports what grew since
before the pushes, per connection: malloc's bytes in use (gRPC's C core and Python together), its RSS,
and its RSS after ``malloc_trim`` (without malloc's free space); and the CPU time the server's threads
spent while the pushes came in (what the read-buffer cap costs in smaller reads). Each option set runs
``--repeats`` times, alternating, in fresh server processes. ``--tls``: mutual TLS with certificates from
fedra's own CA (``fedra.pki``, made in a temporary directory), as ``fedra server`` and ``fedra client`` run
by default.

- fedra, small cap: ``CHANNEL_OPTIONS`` + ``SERVER_OPTIONS`` + the read-buffer cap just under 12 KiB, as
  ``GrpcTransport`` sets them for payloads under 16 MiB (``read_buffer_cap_for``)
- fedra, cap of 16 KiB: the same with the cap at 16 KiB, as for larger payloads (gRPC's endpoint then
  allocates an idle connection's next read as one 64 KiB slice instead of 8 KiB ones)
- without the read-buffer cap: ``CHANNEL_OPTIONS`` + ``SERVER_OPTIONS``
- grpcio's defaults: ``CHANNEL_OPTIONS`` alone (message size limits and keepalive)
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
from concurrent import futures
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from bench_network import LIBC, malloc_in_use_mib, rss_kib  # noqa: E402  (the network benchmark's readers)

CAP = "grpc.experimental.tcp_max_read_buffer_size"


def option_sets() -> dict[str, list[tuple[str, Any]]]:
    from fedra.transport.grpc import CHANNEL_OPTIONS
    from fedra.transport.grpc._server import LARGE_READ_BUFFER, SERVER_OPTIONS, SMALL_READ_BUFFER

    without_cap = [*CHANNEL_OPTIONS, *SERVER_OPTIONS]
    return {"fedra, small cap": [*without_cap, (CAP, SMALL_READ_BUFFER)],
            "fedra, cap of 16 KiB": [*without_cap, (CAP, LARGE_READ_BUFFER)],
            "without the read-buffer cap": without_cap,
            "grpcio's defaults": list(CHANNEL_OPTIONS)}


def server_main(name: str, clients: int, total: int, chunk: int, tls: str, exit_after: bool = False
                ) -> dict[str, float]:
    import grpc

    from fedra.linux import limit_arenas

    limit_arenas(1)  # as `fedra server` sets its heap
    options = option_sets()[name]

    def push(messages: Any, context: Any) -> bytes:
        for _ in messages:
            pass
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=clients + 16), options=options)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.B", {
        "Push": grpc.stream_unary_rpc_method_handler(push),
        "Ping": grpc.unary_unary_rpc_method_handler(lambda request, context: b"")}),))
    if tls:
        from fedra.transport.grpc import server_credentials

        port = server.add_secure_port("127.0.0.1:0", server_credentials(tls, "server"))
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    proc = subprocess.Popen([sys.executable, str(HERE), "_client", "--port", str(port), "--clients", str(clients),
                             "--bytes", str(total), "--chunk", str(chunk), "--federation", tls],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        if proc.stdout.readline().strip() != "connected":
            raise SystemExit("the client process did not connect")
        time.sleep(0.5)
        before = malloc_in_use_mib() * 1024, rss_kib()
        cpu = time.process_time()  # every thread of the server: gRPC's reads and the handlers
        proc.stdin.write("push\n")
        proc.stdin.flush()
        if proc.stdout.readline().strip() != "pushed":
            raise SystemExit("the client process did not push")
        cpu = time.process_time() - cpu
        time.sleep(0.5)  # the server's handlers return after the client has its answers
        after = malloc_in_use_mib() * 1024, rss_kib()
        if exit_after:  # under heaptrack: what is alive now is reported as leaked (what each connection keeps)
            print(json.dumps({"in_use": (after[0] - before[0]) / clients}), flush=True)
            proc.kill()
            os._exit(0)
        LIBC.malloc_trim(0)
        trimmed = rss_kib()
        proc.stdin.write("close\n")
        proc.stdin.flush()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop(grace=None)
    return {"in_use": (after[0] - before[0]) / clients, "rss": (after[1] - before[1]) / clients,
            "rss_trimmed": (trimmed - before[1]) / clients, "cpu": cpu}


def client_main(port: int, clients: int, total: int, chunk: int, tls: str) -> None:
    import grpc

    from fedra.transport.grpc import CHANNEL_OPTIONS, client_credentials

    options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]  # one connection per channel
    if tls:
        credentials = client_credentials(tls, "client")
        channels = [grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options)
                    for _ in range(clients)]
    else:
        channels = [grpc.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(clients)]
    for channel in channels:
        channel.unary_unary("/bench.B/Ping")(b"", timeout=60)
    print("connected", flush=True)
    sys.stdin.readline()
    data = os.urandom(chunk)
    count = -(-total // chunk)

    def one(channel: Any) -> None:
        channel.stream_unary("/bench.B/Push")(iter([data] * count), timeout=120)

    with futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, channels))
    print("pushed", flush=True)
    sys.stdin.readline()
    for channel in channels:
        channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="run", choices=["run", "_server", "_client"])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--bytes", type=int, default=4_000_000, help="each client's payload")
    parser.add_argument("--chunk", type=int, default=256 << 10, help="message size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--options", default="fedra, small cap")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls", action="store_true", help="mutual TLS (certificates from fedra.pki)")
    parser.add_argument("--federation", default="", help=argparse.SUPPRESS)  # the CA directory, with --tls
    parser.add_argument("--exit-after-pushes", action="store_true",
                        help="_server: exit at once after the pushes, so that heaptrack reports what the "
                             "connections keep as leaked")
    args = parser.parse_args()
    if args.what == "_client":
        client_main(args.port, args.clients, args.bytes, args.chunk, args.federation)
        return
    if args.what == "_server":
        print(json.dumps(server_main(args.options, args.clients, args.bytes, args.chunk, args.federation,
                                     args.exit_after_pushes)))
        return
    with tempfile.TemporaryDirectory(prefix="fedra-bench-") as tmp:
        federation = ""
        if args.tls:
            from fedra.pki import init_ca, issue

            init_ca(tmp)
            issue(tmp, "server", "server", sans=["127.0.0.1"])
            issue(tmp, "client", "client")
            federation = tmp
        run(args, federation)


def run(args: argparse.Namespace, federation: str) -> None:
    print(f"# {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"{'mutual TLS, ' if federation else ''}{args.clients} connections, each pushes {args.bytes:,} bytes in messages of {args.chunk >> 10} KiB; "
          f"growth per connection once the calls are over (KiB), and the server's CPU time while it received "
          f"them (s), median of {args.repeats} (runs in brackets)")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in option_sets()}
    for _ in range(args.repeats):
        for name in runs:
            out = subprocess.run([sys.executable, str(HERE), "_server", "--options", name, "--clients",
                                  str(args.clients), "--bytes", str(args.bytes), "--chunk", str(args.chunk),
                                  "--federation", federation],
                                 capture_output=True, text=True, check=True)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    for name, results in runs.items():
        cells = []
        for key, label in (("in_use", "malloc in use"), ("rss", "RSS"), ("rss_trimmed", "RSS after malloc_trim")):
            values = [r[key] for r in results]
            cells.append(f"{label} {statistics.median(values):.0f} ({', '.join(f'{v:.0f}' for v in values)})")
        cpu = [r["cpu"] for r in results]
        cells.append(f"server CPU {statistics.median(cpu):.3f} s ({', '.join(f'{v:.3f}' for v in cpu)})")
        print(f"{name + ':':29} " + "; ".join(cells))


if __name__ == "__main__":
    main()
