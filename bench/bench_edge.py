"""Edge footprint: a client-only fedra install without torch, its size, and ``fedra client``'s RSS.

    python bench/bench_edge.py                      # builds the wheels (pip wheel, constraints.txt pins)
    python bench/bench_edge.py --wheels DIR         # or installs from a directory of wheels, offline
    python bench/bench_edge.py --venv DIR           # or measures an existing client install

1. Installs fedra (no extras: numpy models only, no torch) into a new virtual environment from local
   wheels with ``pip install --no-index``, and reports the installed size of its site-packages.
2. Runs a real job on loopback: a server (this interpreter's fedra) waiting for two clients, the measured
   client from the new environment (``--data`` .npz, numpy softmax regression from bench/tiny_task.py,
   ``--sandbox off`` unless told), and a second client that joins after the idle measurement.
3. Idle RSS: the measured client connected and long-polling while the server waits for the second
   client (median of 5 s of samples after 5 s). Training RSS: its peak while the job runs.
Goal (issue 5): idle RSS under 80 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
MB = 1e6

JOB = """\
[job]
name = "edge"
module = "tiny_task.py"
framework = "numpy"
rounds = {rounds}
seed = 0

[data]
dataset = "digits"
num_clients = 2

[strategy]
min_clients = 2
min_replies = 2

[client]
batch_size = 256
lr = 0.1
"""


def tree_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (what du counts, without block rounding)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def build_wheels(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", str(REPO), "-c", str(REPO / "constraints.txt"),
                    "-w", str(out)], check=True)
    return out


def install(venv: Path, wheels: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # pip runs from this interpreter and targets the new environment: no pip inside the edge install
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-index", "--find-links", str(wheels), "-c", str(REPO / "constraints.txt"), "fedra"],
                   check=True)


def rss(proc: psutil.Process, tree: bool) -> int:
    procs = [proc, *proc.children(recursive=True)] if tree else [proc]
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):  # a worker may exit between listing and reading
            total += p.memory_info().rss
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheels", type=Path, help="a directory of wheels (default: build them)")
    ap.add_argument("--venv", type=Path, help="measure this existing install instead of making one")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--sandbox", default="off", choices=["off", "auto", "on"],
                    help="the measured client's --sandbox (RSS then sums its process tree)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="fedra-edge-") as tmp_str:
        tmp = Path(tmp_str)
        venv = args.venv or tmp / "venv"
        t0 = time.monotonic()
        if args.venv is None:
            install(venv, args.wheels or build_wheels(tmp / "wheels"))
        site = next((venv / "lib").glob("python3*/site-packages"))
        has_torch = (site / "torch").exists()
        print(f"install: {time.monotonic() - t0:.0f} s, site-packages {tree_size(site) / MB:.0f} MB, "
              f"whole venv {tree_size(venv) / MB:.0f} MB, torch installed: {has_torch}")
        biggest = sorted(((tree_size(p), p.name) for p in site.iterdir() if p.is_dir()), reverse=True)[:8]
        print("largest packages: " + ", ".join(f"{name} {size / MB:.0f} MB" for size, name in biggest))

        job = tmp / "job"
        job.mkdir()
        shutil.copy2(HERE.parent / "tiny_task.py", job / "tiny_task.py")
        (job / "job.toml").write_text(JOB.format(rounds=args.rounds))
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype(np.float32)
        np.savez(tmp / "a.npz", x=x[::2], y=y[::2])
        np.savez(tmp / "b.npz", x=x[1::2], y=y[1::2])

        port = free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        server = subprocess.Popen([str(Path(sys.executable).parent / "fedra"), "server", str(job / "job.toml"),
                                   "--insecure", "--bind", f"127.0.0.1:{port}", "--output", str(tmp / "runs"),
                                   "--wait-clients", "120", "--quiet"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

        def client(fedra: Path, name: str, data: Path, sandbox: str) -> subprocess.Popen[bytes]:
            return subprocess.Popen([str(fedra), "client", "--server", f"127.0.0.1:{port}", "--job",
                                     str(job / "job.toml"), "--name", name, "--data", str(data), "--insecure",
                                     "--sandbox", sandbox], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)

        measured = client(venv / "bin" / "fedra", "edge", tmp / "a.npz", args.sandbox)
        other: subprocess.Popen[bytes] | None = None
        try:
            proc = psutil.Process(measured.pid)
            tree = args.sandbox != "off"
            time.sleep(5.0)
            idle = []
            for _ in range(50):
                idle.append(rss(proc, tree))
                time.sleep(0.1)
            assert measured.poll() is None, measured.stdout.read() if measured.stdout else ""
            other = client(Path(sys.executable).parent / "fedra", "other", tmp / "b.npz", "off")
            peak = 0
            while measured.poll() is None:
                peak = max(peak, rss(proc, tree))
                time.sleep(0.02)
            out = measured.stdout.read().decode() if measured.stdout else ""
            if measured.returncode != 0 or f"served {args.rounds} tasks" not in out:
                raise SystemExit(f"the measured client failed ({measured.returncode}):\n{out}")
        finally:
            for p in (measured, other, server):
                if p is not None and p.poll() is None:
                    p.terminate()
                    p.wait(timeout=30)
        what = "process tree" if tree else "process"
        print(f"fedra client --sandbox {args.sandbox}, numpy task, digits ({x.shape[0] // 2} samples):")
        print(f"  idle RSS (connected, waiting for a task): median {statistics.median(idle) / MB:.1f} MB ({what})")
        print(f"  training RSS ({args.rounds} rounds): peak {peak / MB:.1f} MB ({what})")
        print(f"  goal idle < 80 MB: {'met' if statistics.median(idle) < 80 * MB else 'NOT met'}")


if __name__ == "__main__":
    main()
