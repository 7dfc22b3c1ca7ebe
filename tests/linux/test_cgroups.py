"""cgroup limits: the v2 path against a fake tree, the v1 path for real on this machine (memory, pids,
cpu), the parsing of ``/proc/self/cgroup`` and ``mountinfo``, and that every group is removed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedra.linux import Cgroup, CgroupError, Limits, cgroup_unavailable_reason
from fedra.linux._cgroups import _parse_mountinfo, _parse_proc_cgroup, _under

# ---------------------------------------------------------------- cgroup v2, against a fake tree


def fake_v2(root: Path, *, controllers: str = "cpuset cpu io memory pids", own: str = "svc/client",
            procs: str = "") -> Path:
    """A cgroup2 tree as the kernel shows one: the interface files that exist before we write any."""
    (root / "cgroup.controllers").write_text(controllers + "\n")
    group = root / own
    group.mkdir(parents=True)
    (group / "cgroup.controllers").write_text(controllers + "\n")
    (group / "cgroup.subtree_control").write_text("")
    (group / "cgroup.procs").write_text(procs)
    return group


def test_v2_child_group_gets_the_limits_under_the_own_group(tmp_path: Path) -> None:
    own = fake_v2(tmp_path)
    group = Cgroup.create(Limits(memory_mib=128, cpu=0.5, pids=32), name="box", root=tmp_path,
                          proc_cgroup="0::/svc/client\n")
    try:
        box = own / "box"
        assert group.version == 2
        assert group.dirs == {"memory": box, "cpu": box, "pids": box}
        assert (own / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
        assert (box / "memory.max").read_text() == str(128 << 20)
        assert (box / "cpu.max").read_text() == "50000 100000"
        assert (box / "pids.max").read_text() == "32"
        group.add(4242)
        assert (box / "cgroup.procs").read_text() == "4242"
        assert group.procs_files == [box / "cgroup.procs"]
        assert group.oom_kills() == 0
        (box / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\noom_group_kill 1\n")
        assert group.oom_kills() == 2
    finally:
        (box / "cgroup.procs").write_text("")  # the fake "processes" are gone; nothing to kill
        group.close()
    assert not box.exists()


def test_v2_limits_group_is_its_own_label_and_a_label_alone_needs_no_controller(tmp_path: Path) -> None:
    own = fake_v2(tmp_path)
    group = Cgroup.create(Limits(pids=8), name="box", root=tmp_path, proc_cgroup="0::/svc/client", label=True)
    try:
        assert group.label == own / "box" and group.procs_files == [own / "box" / "cgroup.procs"]
        assert group.cgroup_id == (own / "box").stat().st_ino  # what eBPF's cgroup id is: the inode
    finally:
        group.close()
    alone = Cgroup.create(Limits(), name="tag", root=tmp_path, proc_cgroup="0::/svc/client", label=True)
    try:
        assert alone.dirs == {} and alone.label == own / "tag"
        assert alone.procs_files == [own / "tag" / "cgroup.procs"]
        assert (own / "cgroup.subtree_control").read_text() == "+pids"  # the label enabled nothing more
    finally:
        alone.close()
    assert not (own / "tag").exists()
    with pytest.raises(CgroupError, match="no limits"):
        Cgroup.create(Limits(), root=tmp_path, proc_cgroup="0::/svc/client")


def test_a_label_needs_a_cgroup2_tree(tmp_path: Path) -> None:
    for c in ("memory", "cpu", "pids"):  # a v1-only layout
        (tmp_path / c / "svc").mkdir(parents=True)
    with pytest.raises(CgroupError, match="cgroup2"):
        Cgroup.create(Limits(pids=8), root=tmp_path, proc_cgroup="1:pids:/svc\n", label=True)


def test_v2_only_missing_controllers_are_enabled(tmp_path: Path) -> None:
    own = fake_v2(tmp_path)
    (own / "cgroup.subtree_control").write_text("memory pids\n")
    Cgroup.create(Limits(memory_mib=64, pids=16), name="box", root=tmp_path, proc_cgroup="0::/svc/client").close()
    assert (own / "cgroup.subtree_control").read_text() == "memory pids\n"  # nothing left to enable
    Cgroup.create(Limits(cpu=1.5), name="box", root=tmp_path, proc_cgroup="0::/svc/client").close()
    assert (own / "cgroup.subtree_control").read_text() == "+cpu"


def test_v2_without_a_delegated_memory_controller_says_what_is_missing(tmp_path: Path) -> None:
    fake_v2(tmp_path, controllers="cpu pids")
    with pytest.raises(CgroupError, match=r"memory found neither .* offers cpu pids.*Delegate=yes"):
        Cgroup.create(Limits(memory_mib=64), root=tmp_path, proc_cgroup="0::/svc/client")
    assert sorted(p.name for p in (tmp_path / "svc" / "client").iterdir() if p.is_dir()) == []


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="memory_mib"):
        Limits(memory_mib=0)
    with pytest.raises(ValueError, match="cpu"):
        Limits(cpu=0.0)
    assert Limits(pids=5).controllers == ("pids",)
    with pytest.raises(CgroupError, match="no limits"):
        Cgroup.create(Limits())


# ---------------------------------------------------------------- parsing


MOUNTINFO_HYBRID = textwrap.dedent("""\
    31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
    32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
    35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
    39 31 0:36 /kubepods/pod1 /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
    """)


def test_mountinfo_and_proc_cgroup_are_parsed_for_v1_v2_and_namespaced_mounts() -> None:
    v2, v1 = _parse_mountinfo(MOUNTINFO_HYBRID)
    assert v2 is not None and v2.point == Path("/sys/fs/cgroup/unified")
    assert v1["cpu"].point == v1["cpuacct"].point == Path("/sys/fs/cgroup/cpu,cpuacct")
    own_v2, own_v1 = _parse_proc_cgroup("4:memory:/a/b\n2:cpu,cpuacct:/c\n7:pids:/kubepods/pod1/x\n0::/u\n")
    assert own_v2 == "/u" and own_v1 == {"memory": "/a/b", "cpu": "/c", "cpuacct": "/c",
                                          "pids": "/kubepods/pod1/x"}
    # a mount that shows only a subtree (cgroup namespace): the group is relative to the mount's root
    assert _under(v1["pids"], own_v1["pids"]) == Path("/sys/fs/cgroup/pids/x")
    assert _under(v1["memory"], own_v1["memory"]) == Path("/sys/fs/cgroup/memory/a/b")


# ---------------------------------------------------------------- cgroup v1, for real


def _real(limits: Limits) -> None:
    reason = cgroup_unavailable_reason(limits)
    if reason is not None:
        print(f"skipped: {reason}")
        pytest.skip(f"cannot make cgroups here: {reason}")


@pytest.fixture
def real_group() -> Iterator[list[Cgroup]]:
    made: list[Cgroup] = []
    try:
        yield made
    finally:
        for group in made:
            group.close()  # kills anything left inside and removes the group, whatever the test did


def _run_in(group: Cgroup, code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    enter = " ".join(f'echo $$ > "{p}";' for p in group.procs_files)
    return subprocess.run(["/bin/sh", "-c", f'{enter} exec "$0" -c "$1"', sys.executable, code],
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_v1_memory_limit_kills_a_hog_and_counts_it(real_group: list[Cgroup]) -> None:
    limits = Limits(memory_mib=64)
    _real(limits)
    group = Cgroup.create(limits)
    real_group.append(group)
    limit_file = "memory.limit_in_bytes" if group.version == 1 else "memory.max"
    assert (group.dirs["memory"] / limit_file).read_text().strip() == str(64 << 20)
    small = _run_in(group, "b = bytearray(16 << 20); print(len(b))")
    assert small.returncode == 0 and small.stdout.strip() == str(16 << 20)
    assert group.oom_kills() == 0
    hog = _run_in(group, "b = bytearray(512 << 20); print('survived')")
    assert hog.returncode == -9 and "survived" not in hog.stdout
    assert group.oom_kills() == 1


def test_v1_pids_limit_stops_forks(real_group: list[Cgroup]) -> None:
    limits = Limits(pids=8)
    _real(limits)
    group = Cgroup.create(limits)
    real_group.append(group)
    code = textwrap.dedent("""\
        import os, errno
        r, w = os.pipe(); kids = []
        try:
            for _ in range(100):
                pid = os.fork()
                if pid == 0:
                    os.close(w); os.read(r, 1); os._exit(0)
                kids.append(pid)
        except OSError as exc:
            print(len(kids), errno.errorcode[exc.errno])
        os.close(w)
        for pid in kids:
            os.waitpid(pid, 0)
        """)
    out = _run_in(group, code)
    n, err = out.stdout.split()
    assert err == "EAGAIN" and 0 < int(n) < 8  # the shell's python itself counts too


def test_v1_cpu_quota_and_group_removal(real_group: list[Cgroup]) -> None:
    limits = Limits(cpu=0.25, pids=64)
    _real(limits)
    group = Cgroup.create(limits)
    real_group.append(group)
    if group.version == 1:
        assert (group.dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "25000"
        assert (group.dirs["cpu"] / "cpu.cfs_period_us").read_text().strip() == "100000"
    else:
        assert (group.dirs["cpu"] / "cpu.max").read_text().split() == ["25000", "100000"]
    sleeper = subprocess.Popen(["/bin/sh", "-c", f'echo $$ > "{group.procs_files[-1]}"; '
                                f'for f in {" ".join(map(str, group.procs_files))}; do echo $$ > $f; done; '
                                "exec sleep 60"])
    try:
        for _ in range(1000):  # the shell needs a moment to write its pid
            if sleeper.pid in group.pids():
                break
            time.sleep(0.01)
        assert sleeper.pid in group.pids()
        dirs = list(group.dirs.values())
        group.close()
        assert sleeper.wait(timeout=10) == -9  # close killed what was left inside
        assert not any(d.exists() for d in dirs)
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


def test_empty_groups_of_dead_clients_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    own = fake_v2(tmp_path)
    gone_pid = _dead_pid()
    (own / f"fedra-sandbox-{gone_pid}-0").mkdir()
    (own / f"fedra-sandbox-{os.getppid()}-0").mkdir()  # a live process's group stays
    (own / "someone-elses").mkdir()
    Cgroup.create(Limits(pids=8), name="box", root=tmp_path, proc_cgroup="0::/svc/client").close()
    assert sorted(p.name for p in own.iterdir() if p.is_dir()) == [f"fedra-sandbox-{os.getppid()}-0",
                                                                   "someone-elses"]


def _dead_pid() -> int:
    """A pid that no process has now: a child's, once reaped (pids are reused only after wrapping)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _busy_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first write to a subtree_control fails like the kernel's "no internal processes" rule."""
    import errno

    from fedra.linux import _cgroups

    real, state = _cgroups._write, {"raised": False}

    def write(path: Path, value: str) -> None:
        if path.name == "cgroup.subtree_control" and not state["raised"]:
            state["raised"] = True
            raise OSError(errno.EBUSY, "Device or resource busy")
        real(path, value)

    monkeypatch.setattr(_cgroups, "_write", write)


def test_v2_a_client_alone_in_its_group_moves_to_a_leaf_to_enable_controllers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = fake_v2(tmp_path, procs=f"{os.getpid()}\n")
    _busy_once(monkeypatch)
    group = Cgroup.create(Limits(memory_mib=64), name="box", root=tmp_path, proc_cgroup="0::/svc/client")
    try:
        assert (own / "fedra-client" / "cgroup.procs").read_text() == str(os.getpid())
        assert (own / "cgroup.subtree_control").read_text() == "+memory"
        assert (own / "box" / "memory.max").read_text() == str(64 << 20)
    finally:
        group.close()


def test_v2_a_shared_group_is_not_reorganised_and_the_error_says_what_to_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = fake_v2(tmp_path, procs=f"{os.getpid()}\n1\n")
    _busy_once(monkeypatch)
    with pytest.raises(CgroupError, match=r"holds other processes \(2\).*systemd-run --scope -p Delegate=yes"):
        Cgroup.create(Limits(memory_mib=64), name="box", root=tmp_path, proc_cgroup="0::/svc/client")
    assert not (own / "fedra-client").exists() and not (own / "box").exists()


def test_v2_groups_after_the_leaf_move_go_beside_the_leaf_not_below_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a systemd unit with Delegate=: the client alone in <unit>; the probe moves it into <unit>/fedra-client,
    # and every later group (the worker's, a label) is a sibling of that leaf, made without another move
    own = fake_v2(tmp_path, own="system.slice/fedra-client@site-0.service", procs=f"{os.getpid()}\n")
    _busy_once(monkeypatch)
    Cgroup.create(Limits(memory_mib=64, cpu=0.5, pids=32), name="probe", root=tmp_path,
                  proc_cgroup="0::/system.slice/fedra-client@site-0.service\n").close()
    leaf = own / "fedra-client"
    assert (leaf / "cgroup.procs").read_text() == str(os.getpid())
    (own / "cgroup.procs").write_text("")  # what the kernel shows once the client has moved
    assert (own / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    moved = "0::/system.slice/fedra-client@site-0.service/fedra-client\n"  # /proc/self/cgroup now
    group = Cgroup.create(Limits(memory_mib=64, cpu=0.5, pids=32), name="box", root=tmp_path, proc_cgroup=moved,
                          label=True)
    try:
        assert group.version == 2 and group.label == own / "box"
        assert group.dirs == {"memory": own / "box", "cpu": own / "box", "pids": own / "box"}
        assert (own / "box" / "pids.max").read_text() == "32"
        assert sorted(p.name for p in leaf.iterdir() if p.is_dir()) == []  # nothing nested in the leaf
        assert (leaf / "cgroup.procs").read_text() == str(os.getpid())  # not moved again
        assert (own / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"  # nothing re-enabled
    finally:
        group.close()
    assert sorted(p.name for p in own.iterdir() if p.is_dir()) == ["fedra-client"]


def test_a_group_named_like_the_leaf_is_the_parent_only_when_its_parent_is_writable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = fake_v2(tmp_path, own="svc/fedra-client")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path).endswith(
        "svc/cgroup.subtree_control") else real_access(path, mode))
    group = Cgroup.create(Limits(pids=8), name="box", root=tmp_path, proc_cgroup="0::/svc/fedra-client\n")
    try:
        assert group.dirs == {"pids": own / "box"}  # its own group: the one above is not ours to write
    finally:
        group.close()


def test_v1_group_a_service_may_not_write_says_systemd_delegates_only_v2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a hybrid host: systemd chowns a Delegate= unit's cgroup v2 group, never its v1 controller groups
    import errno

    for c in ("memory", "cpu", "pids"):
        (tmp_path / c / "system.slice" / "fedra-client@a.service").mkdir(parents=True)
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self.name.startswith("box"):
            raise PermissionError(errno.EACCES, "Permission denied")
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", mkdir)
    proc = "4:memory:/system.slice/fedra-client@a.service\n1:cpu:/system.slice/fedra-client@a.service\n"
    with pytest.raises(CgroupError, match=r"memory/system.slice/fedra-client@a.service/box: Permission denied; "
                                          r"expected a writable group.*cgroup v1.*systemd delegates only "
                                          r"cgroup v2.*unified_cgroup_hierarchy=1.*MemoryMax="):
        Cgroup.create(Limits(memory_mib=64), name="box", root=tmp_path, proc_cgroup=proc)
