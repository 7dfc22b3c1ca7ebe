"""The sandbox's walls, each tested by a real attempt from inside training code (``attack_task.py``):
no network, no writes outside the work directory, no other partition's data, no other processes, a fork
bomb stopped at the pid limit, a memory hog killed with the federation's worker coming back.

Where an attack could also fail for reasons unrelated to the sandbox, the same attack is run without
the sandbox first, and must succeed there: the test can fail."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from sandbox_helpers import ATTACK, LIMITS, Lab

from fedra.runtime import TaskFailed
from fedra.runtime._sandboxed import TaskRunner


def _unsandboxed(**config: object) -> dict[str, object]:
    """The attack run in this process, as training would run without a sandbox."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("attack_unsandboxed", ATTACK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.train(module.model(), None, config))


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP server on loopback, like a fedra server the training code might try to reach."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        s.settimeout(0.0)
        yield s


def _accepted(s: socket.socket) -> int:
    n = 0
    while True:
        try:
            conn, _ = s.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


def test_the_runner_is_a_task_runner(lab: Lab) -> None:
    assert isinstance(lab.runner, TaskRunner)
    metrics = lab.attack()
    assert metrics["rows"] == 8  # its own partition was loaded
    assert metrics["pid"] == lab.runner.worker_pid


def test_training_cannot_open_a_tcp_connection_anywhere(lab: Lab, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    server = f"127.0.0.1:{port}"
    assert _unsandboxed(attack="connect", targets=server)[server] == "ok"  # the attack works unsandboxed
    assert _accepted(listener) == 1
    targets = [server, "127.0.0.1:22", "[::1]:" + str(port), "10.255.255.1:80", "1.1.1.1:443"]
    seen = lab.attack(attack="connect", targets=",".join(targets))
    assert seen == dict.fromkeys(targets, "PermissionError:1")  # socket(AF_INET*) itself is refused
    assert _accepted(listener) == 0


def test_seccomp_denies_namespaces_mount_ptrace_and_non_unix_sockets(lab: Lab) -> None:
    seen = lab.attack(attack="syscalls")
    assert seen == {"unshare_user": "errno:EPERM", "unshare_net": "errno:EPERM", "mount": "errno:EPERM",
                    "ptrace": "errno:EPERM", "inet_socket": "PermissionError:1",
                    "netlink_socket": "PermissionError:1", "unix_socket": "ok"}


def test_training_cannot_write_outside_its_work_directory(lab: Lab) -> None:
    outside = lab.root / "outside.txt"
    assert _unsandboxed(attack="write", targets=str(outside))[str(outside)] == "ok"
    outside.unlink()
    inside = lab.work / "checkpoint.txt"
    targets = [str(outside), str(ATTACK.parent / "planted.py"), str(lab.own_data), "/etc/cron.d/x",
               "/usr/bin/planted", "/planted", "/tmp/planted", "/dev/planted", str(inside)]
    seen = lab.attack(attack="write", targets=",".join(targets))
    assert seen[str(inside)] == "ok"
    assert inside.read_text() == "written from training code"
    for target in targets[:-1]:
        assert seen[target] in ("OSError:30", "FileNotFoundError:2", "PermissionError:13"), target
        assert not os.path.exists(target) or target == str(lab.own_data), target
    assert seen[str(ATTACK.parent / "planted.py")] == "OSError:30"  # EROFS: visible, read-only
    assert seen["/planted"] == seen["/tmp/planted"] == seen["/dev/planted"] == "OSError:30"


def test_training_cannot_read_another_partitions_data(lab: Lab) -> None:
    other = str(lab.other_data)
    assert _unsandboxed(attack="read", targets=other)[other] == "ok"
    targets = [other, str(lab.own_data), "/etc/shadow", "/root/.bash_history", os.path.expanduser("~")]
    seen = lab.attack(attack="read", targets=",".join(targets))
    assert seen[str(lab.own_data)] == "ok"
    assert seen[other] == "FileNotFoundError:2"
    assert seen["/etc/shadow"] == "FileNotFoundError:2"


def test_other_processes_are_not_visible(lab: Lab) -> None:
    seen = lab.attack(attack="procs", host_pid=os.getpid())
    pids = [int(p) for p in str(seen["pids"]).split(",")]
    assert pids == [1, 2], seen  # bubblewrap's reaper and the worker: nothing of the host
    assert seen["me"] == 2
    reaper, worker = str(seen["cmdlines"]).split(" | ")
    assert "bwrap" in reaper.split()[0] and "sandbox_worker" in worker
    assert "bin/pytest" not in str(seen["cmdlines"])
    if os.getpid() > 2:
        assert seen["signal_host_pid"] == "ProcessLookupError:3"


def test_a_fork_bomb_stops_at_the_pid_limit_and_the_worker_survives(lab: Lab) -> None:
    assert LIMITS.pids is not None
    before = lab.attack()["pid"]
    starts = lab.runner.starts
    seen = lab.attack(attack="forkbomb", limit=1000)
    assert seen["error"] == "EAGAIN"
    assert 0 < int(seen["children"]) < LIMITS.pids
    assert lab.attack()["pid"] == before and lab.runner.starts == starts  # the same warm worker goes on


def test_a_memory_hog_is_killed_and_the_next_task_gets_a_new_worker(lab: Lab) -> None:
    lab.attack()
    first = lab.runner.sandbox
    assert first is not None and first.cgroup is not None
    group, old = first.cgroup, first.cgroup.pids()
    assert old
    starts = lab.runner.starts
    with pytest.raises(TaskFailed) as info:
        lab.attack(attack="hog", mib=4 * (LIMITS.memory_mib or 0))
    assert str(info.value) == f"out of memory (limit {LIMITS.memory_mib} MiB)"
    assert group.oom_kills() >= 1
    assert lab.attack()["rows"] == 8  # the next task runs, on a fresh worker
    assert lab.runner.starts == starts + 1
    # one group serves the runner's workers in turn: the dead one's processes are gone, the new one's in
    new = lab.runner.sandbox
    assert new is not None and new.cgroup is group and lab.runner.cgroup is group
    assert group.pids() and not group.pids() & old


def test_a_task_below_the_memory_limit_runs(lab: Lab) -> None:
    assert lab.attack(attack="hog", mib=16)["sum"] == 16 * (1 << 17)


def test_user_errors_read_as_unsandboxed_and_a_dying_worker_is_replaced(lab: Lab) -> None:
    lab.attack()
    starts = lab.runner.starts
    with pytest.raises(TaskFailed, match=r"^UserCodeError: train\(\): ValueError: bad batch$"):  # as serve() says
        lab.attack(attack="raise")
    assert lab.runner.starts == starts  # a user error does not cost the warm worker
    with pytest.raises(TaskFailed, match=r"^the sandboxed worker died \(exit status 3\)$"):
        lab.attack(attack="exit")
    assert lab.attack()["rows"] == 8 and lab.runner.starts == starts + 1
