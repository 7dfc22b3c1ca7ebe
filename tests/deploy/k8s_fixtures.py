"""Shared pieces of the Kubernetes tests: a job directory, a federation from ``fedra certs``, rendering."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from fedra.deploy._k8s import K8sOptions, read_inputs, render_manifests
from fedra.job import load_job

__all__ = ["K8S_JOB", "k8s_federation", "k8s_job_dir", "k8s_render"]

REPO = Path(__file__).resolve().parents[2]

K8S_JOB = """\
[job]
name = "k8s_demo"
module = "task.py"
rounds = 2
seed = 1

[data]
dataset = "digits"
num_clients = 3

[strategy]
min_clients = 2
min_replies = 2
round_timeout = 120

[client]
epochs = 1
batch_size = 32

[sandbox]
memory_mib = 768
cpu = 0.5
"""


def k8s_job_dir(root: Path, text: str = K8S_JOB) -> Path:
    """A job directory with ``job.toml`` and the digits example's ``task.py``; returns the job file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "task.py").write_text((REPO / "examples" / "digits" / "task.py").read_text())
    (root / "job.toml").write_text(text)
    return root / "job.toml"


def k8s_federation(root: Path, clients: tuple[str, ...], sans: tuple[str, ...]) -> Path:
    """A federation directory made by the real ``fedra certs`` commands."""
    fed = root / "federation"
    fedra = str(Path(sys.executable).parent / "fedra")
    san_args = [a for s in sans for a in ("--san", s)]
    commands = [["init"], ["issue", "server", "server", *san_args],
                *(["issue", "client", c] for c in clients)]
    for args in commands:
        subprocess.run([fedra, "certs", *args, "--dir", str(fed)], check=True, capture_output=True, timeout=60)
    return fed


def k8s_render(job_file: Path, certs: Path | None, **options: Any) -> list[dict[str, Any]]:
    """The manifests for ``job_file`` with ``options`` (image and clients have test defaults)."""
    options.setdefault("image", "localhost/fedra:pytest")
    options.setdefault("clients", ("site-0", "site-1"))
    opts = K8sOptions(**options)
    job = load_job(job_file)
    inputs = read_inputs(job_file, job, certs=certs, clients=opts.clients, server_cert_name=opts.server_cert_name)
    return render_manifests(inputs, opts)
