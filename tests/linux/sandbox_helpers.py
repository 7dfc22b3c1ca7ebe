"""Shared by the sandbox tests: skip with the reason where the host cannot sandbox or limit, and a
warm sandboxed worker ("lab") running ``attack_task.py`` on one of two data partitions."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fedra.linux import Limits, SandboxConfig, cgroup_unavailable_reason, sandbox_unavailable_reason
from fedra.records import Message, Scalar, decode_message, encode_message
from fedra.runtime import SandboxedRunner
from fedra.transport.base import Task

ATTACK = Path(__file__).resolve().parent / "attack_task.py"
#: the limits of the shared worker: small enough to hit quickly, large enough for Python and numpy
LIMITS = Limits(memory_mib=128, pids=32, cpu=1.0)


def require_sandbox(limits: Limits | None = None) -> None:
    """Skip the calling test, saying why, where namespaces, seccomp or the cgroups it needs are missing."""
    reason = sandbox_unavailable_reason()
    if reason is None and limits is not None:
        reason = cgroup_unavailable_reason(limits)
    if reason is not None:
        print(f"skipped: {reason}")
        pytest.skip(f"cannot sandbox here: {reason}")


def train_payload(config: dict[str, Scalar]) -> bytearray:
    return encode_message(Message(arrays={"w": np.zeros(4, np.float32)}, config=config,
                                  meta={"kind": "train", "round": 1}))


@dataclass
class Lab:
    """A sandboxed worker for client c0, and the paths around it."""

    root: Path
    work: Path
    own_data: Path
    other_data: Path
    runner: SandboxedRunner

    def attack(self, **config: Scalar) -> dict[str, Scalar]:
        reply = self.runner.run_task(train_payload(dict(config)), Task("t", "c0", "n"))
        return dict(decode_message(reply).metrics)


def worker_command(data: Path, *, module: Path = ATTACK) -> list[str]:
    spec = {"module": str(module), "framework": "numpy", "data": str(data), "num_classes": 2, "name": "c0"}
    return [sys.executable, "-P", "-c",
            "from fedra.cli.client import sandbox_worker; raise SystemExit(sandbox_worker())", json.dumps(spec)]


def make_lab(root: Path, limits: Limits) -> Lab:
    (root / "data").mkdir(parents=True)
    own, other = root / "data" / "c0.npz", root / "data" / "c1.npz"
    for path, fill in ((own, 0.0), (other, 1.0)):
        np.savez(path, x=np.full((8, 4), fill), y=np.arange(8) % 2)
    work = root / "work"
    config = SandboxConfig(work_dir=work, read_only=(ATTACK.parent, own), limits=limits)
    return Lab(root=root, work=work, own_data=own, other_data=other,
               runner=SandboxedRunner(worker_command(own), config))
