"""How the sandbox is chosen and configured: the job's ``[sandbox]`` table, ``fedra client --sandbox``
(``on`` fails clearly where the host cannot sandbox; ``auto`` warns and runs unsandboxed; ``off`` is
quiet), and the command line's limits overriding the job's."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sandbox_helpers import ATTACK, make_lab, require_sandbox

import fedra.linux
from fedra.cli.client import _sandboxed_runner
from fedra.data import Dataset
from fedra.errors import JobSpecError
from fedra.job import SandboxSection, parse_job
from fedra.linux import Limits, SandboxConfig, SandboxError, bwrap_argv

FEDRA = str(Path(sys.executable).parent / "fedra")


def _job(tmp_path: Path, sandbox: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    raw: dict[str, object] = {"job": {"module": str(ATTACK), "framework": "numpy", "rounds": 1}}
    if sandbox is not None:
        raw["sandbox"] = sandbox
    return parse_job(raw, base_dir=tmp_path)


def test_the_job_spec_sandbox_table_has_safe_defaults_and_is_validated(tmp_path: Path) -> None:
    assert _job(tmp_path).sandbox == SandboxSection(enabled="auto", memory_mib=None, cpu=None, pids=512)
    spec = _job(tmp_path, {"enabled": "on", "memory_mib": 256, "cpu": 0.5, "pids": 64, "work_dir": "w"})
    assert (spec.sandbox.enabled, spec.sandbox.memory_mib, spec.sandbox.cpu) == ("on", 256, 0.5)
    with pytest.raises(JobSpecError) as info:
        _job(tmp_path, {"enabled": "yes", "memory_mib": 4, "pids": 2, "network": True})
    fields = {field for field, _ in info.value.problems}
    assert fields == {"sandbox.enabled", "sandbox.memory_mib", "sandbox.pids", "sandbox.network"}


def _dataset() -> Dataset:
    import numpy as np

    return Dataset(x=np.zeros((4, 4)), y=np.array([0, 1, 0, 1]), num_classes=2, name="p0")


def test_auto_warns_and_runs_unsandboxed_where_the_host_cannot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(fedra.linux, "sandbox_unavailable_reason", lambda: "user namespaces are off")
    with contextlib.ExitStack() as stack, caplog.at_level(logging.WARNING, logger="fedra.client"):
        runner = _sandboxed_runner(stack, _job(tmp_path), "auto", data=None, ds=_dataset(), memory_mib=None,
                                   cpu=None, pids=None, work_dir=None)
        assert runner is None
        with pytest.raises(SandboxError, match="--sandbox on: expected a host that can sandbox training, "
                                               "but user namespaces are off"):
            _sandboxed_runner(stack, _job(tmp_path), "on", data=None, ds=_dataset(), memory_mib=None,
                              cpu=None, pids=None, work_dir=None)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "WITHOUT a sandbox" in warning and "user namespaces are off" in warning and "--sandbox off" in warning
    caplog.clear()
    with contextlib.ExitStack() as stack, caplog.at_level(logging.WARNING, logger="fedra.client"):
        assert _sandboxed_runner(stack, _job(tmp_path), "off", data=None, ds=_dataset(), memory_mib=None,
                                 cpu=None, pids=None, work_dir=None) is None
    assert caplog.records == []


def test_command_line_limits_override_the_job_and_the_partition_is_all_the_worker_gets(tmp_path: Path) -> None:
    limits = Limits(memory_mib=96, pids=48)
    require_sandbox(limits)
    job = _job(tmp_path, {"memory_mib": 512, "pids": 100, "work_dir": "scratch"})
    with contextlib.ExitStack() as stack:
        runner = _sandboxed_runner(stack, job, "on", data=None, ds=_dataset(), memory_mib=96, cpu=None,
                                   pids=48, work_dir=None)
        assert runner is not None and runner.sandbox is not None
        config = runner.config
        assert config.limits == limits
        assert config.work_dir == (tmp_path / "scratch").resolve()  # the job's work_dir, relative to the job
        data = [p for p in config.read_only if p.suffix == ".npz"]
        assert len(data) == 1 and data[0].name == "partition.npz"
        assert ATTACK.parent in config.read_only
    assert not data[0].exists()  # the partition's copy is removed with the client


def test_sandbox_on_fails_clearly_without_bubblewrap(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nmodule = "{ATTACK}"\nframework = "numpy"\nrounds = 1\n')
    env = {**os.environ, "PATH": str(tmp_path)}  # no bwrap to be found
    out = subprocess.run([FEDRA, "client", "--server", "127.0.0.1:9", "--job", str(job), "--name", "c",
                          "--partition", "0", "--insecure", "--sandbox", "on"],
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode == SandboxError.exit_code, out.stderr
    assert "bubblewrap (bwrap) is not installed" in out.stderr and "apt-get install bubblewrap" in out.stderr


def test_the_sandbox_mounts_nothing_of_the_host_but_what_is_named(tmp_path: Path) -> None:
    config = SandboxConfig(work_dir=tmp_path / "w", read_only=(ATTACK,))
    argv = bwrap_argv(config, ["python"], fd=5)
    binds = {argv[i + 1] for i, a in enumerate(argv) if a in ("--ro-bind", "--bind")}
    assert str(ATTACK) in binds and str(tmp_path / "w") in binds
    assert "/" not in binds and "/etc" not in binds and str(Path.home()) not in binds
    assert not any(b.startswith(str(tmp_path)) and b not in (str(ATTACK), str(tmp_path / "w")) for b in binds)
    assert argv[argv.index("--chdir") + 1] == str(tmp_path / "w")
    assert "--unshare-net" in argv and "--unshare-pid" in argv and "--die-with-parent" in argv
    env = {argv[i + 1]: argv[i + 2] for i, a in enumerate(argv) if a == "--setenv"}
    assert env["FEDRA_SANDBOX_FD"] == "5" and env["HOME"] == str(tmp_path / "w")
    with pytest.raises(SandboxError, match=r"expected .* to exist"):
        bwrap_argv(SandboxConfig(work_dir=tmp_path / "w", read_only=(tmp_path / "missing",)), ["x"], fd=3)


def test_a_sandbox_without_limits_makes_no_cgroup_and_still_isolates(tmp_path: Path) -> None:
    require_sandbox()
    lab = make_lab(tmp_path, Limits())
    try:
        seen = lab.attack(attack="procs", host_pid=os.getpid())
        assert lab.runner.sandbox is not None and lab.runner.sandbox.cgroup is None
        assert seen["pids"] == "1,2"
    finally:
        lab.runner.close()


def test_a_data_file_is_shared_alone_not_its_directory(tmp_path: Path) -> None:
    require_sandbox()
    import numpy as np

    (tmp_path / "data").mkdir()
    mine = tmp_path / "data" / "c0.npz"
    np.savez(mine, x=np.zeros((4, 4)), y=np.array([0, 1, 0, 1]))
    with contextlib.ExitStack() as stack:
        runner = _sandboxed_runner(stack, _job(tmp_path, {"pids": None}), "on", data=mine, ds=_dataset(),
                                   memory_mib=None, cpu=None, pids=None, work_dir=tmp_path / "w")
        assert runner is not None and runner.sandbox is not None and runner.sandbox.cgroup is None
        assert [p for p in runner.config.read_only if p != ATTACK.parent] == [mine]
