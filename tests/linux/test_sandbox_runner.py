"""The sandboxed runner's lifecycle: a task past its timeout is killed and reported, a module that cannot
load is the user's error (exit 70 from ``fedra client``), and the cgroup v2 label the traffic monitor
watches holds every worker the runner starts, keeps its id across restarts and is removed at close."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sandbox_helpers import LIMITS, Lab, make_lab, require_sandbox, worker_command

from fedra.errors import UserCodeError
from fedra.linux import Limits, SandboxConfig
from fedra.linux._bpf import cgroup2_mount
from fedra.runtime import SandboxedRunner, TaskFailed

FEDRA = str(Path(sys.executable).parent / "fedra")


def _v2_group(pid: int) -> Path:
    """The cgroup2 directory process ``pid`` is in."""
    root = cgroup2_mount()
    assert root is not None
    line = next(ln for ln in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if ln.startswith("0::"))
    return root / line[3:].lstrip("/")


def test_a_task_past_its_timeout_is_killed_reported_and_the_next_gets_a_fresh_worker(tmp_path: Path) -> None:
    require_sandbox(LIMITS)
    lab = make_lab(tmp_path, LIMITS)
    lab.runner.task_timeout = 1.5
    with lab.runner:
        assert lab.attack()["rows"] == 8
        bwrap = lab.runner.sandbox.pid if lab.runner.sandbox else 0
        starts = lab.runner.starts
        with pytest.raises(TaskFailed, match=r"^task timed out after 1.5 s$"):
            lab.attack(attack="spin")
        assert lab.runner.sandbox is None
        with pytest.raises(ProcessLookupError):
            os.kill(bwrap, 0)  # the stuck sandbox is gone, not left spinning
        assert lab.attack()["rows"] == 8 and lab.runner.starts == starts + 1


def test_a_negative_or_zero_timeout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task_timeout"):
        SandboxedRunner(["true"], SandboxConfig(work_dir=tmp_path), task_timeout=0)


def test_a_module_that_cannot_load_is_a_user_error_with_its_text(tmp_path: Path) -> None:
    require_sandbox()
    broken = tmp_path / "app" / "broken.py"
    broken.parent.mkdir()
    broken.write_text('raise RuntimeError("this module is broken on purpose")\n')
    lab = make_lab(tmp_path / "lab", Limits())
    runner = SandboxedRunner(worker_command(lab.own_data, module=broken),
                             SandboxConfig(work_dir=lab.work, read_only=(broken.parent, lab.own_data)))
    with runner, pytest.raises(UserCodeError, match="RuntimeError: this module is broken on purpose"):
        runner.start()


@pytest.mark.slow
def test_fedra_client_exits_70_with_the_users_error_when_the_module_cannot_load(tmp_path: Path) -> None:
    require_sandbox()
    (tmp_path / "task.py").write_text('raise RuntimeError("this module is broken on purpose")\n')
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "broken"\nmodule = "task.py"\nframework = "numpy"\nrounds = 1\n'
                   '[data]\ndataset = "digits"\nnum_clients = 2\n[sandbox]\nenabled = "on"\n')
    done = subprocess.run([FEDRA, "client", "--server", "127.0.0.1:9", "--job", str(job), "--name", "c0",
                           "--partition", "0", "--insecure", "--work-dir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 70, done.stderr
    assert "this module is broken on purpose" in done.stderr


def test_the_label_group_holds_every_worker_keeps_its_id_and_is_removed_at_close(
        tmp_path: Path, fedra_cgroups: Callable[[], set[str]]) -> None:
    require_sandbox(LIMITS)
    if cgroup2_mount() is None:
        pytest.skip("needs a cgroup2 (unified) mount for the label")
    lab: Lab = make_lab(tmp_path, LIMITS)
    runner = SandboxedRunner(lab.runner.command, lab.runner.config, label=True)
    lab.runner = runner
    with runner:
        lab.attack()
        cid, group = runner.cgroup_id, runner.cgroup
        assert cid is not None and group is not None and group.label is not None
        assert os.stat(group.label).st_ino == cid
        sandbox = runner.sandbox
        assert sandbox is not None and _v2_group(sandbox.pid) == group.label
        if group.version == 1:  # a hybrid host: the limits stay in v1, the label is an extra v2 group
            assert {"memory", "pids", "cpu"} <= set(group.dirs)
        with pytest.raises(TaskFailed):
            lab.attack(attack="exit")
        lab.attack()
        again = runner.sandbox
        assert again is not None and again.pid != sandbox.pid
        assert runner.cgroup_id == cid and _v2_group(again.pid) == group.label  # the monitor keeps watching
        assert str(group.label) in fedra_cgroups()
    assert fedra_cgroups() == set()  # every group, the label too, is gone with the runner


def test_a_label_alone_makes_a_group_with_no_limits(tmp_path: Path) -> None:
    require_sandbox()
    if cgroup2_mount() is None:
        pytest.skip("needs a cgroup2 (unified) mount for the label")
    lab = make_lab(tmp_path, Limits())
    with SandboxedRunner(lab.runner.command, lab.runner.config, label=True) as runner:
        runner.start()
        assert runner.cgroup is not None and runner.cgroup.dirs == {} and runner.cgroup_id is not None
        assert runner.sandbox is not None and _v2_group(runner.sandbox.pid) == runner.cgroup.label
