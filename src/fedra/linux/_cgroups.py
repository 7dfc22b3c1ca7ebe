"""Resource limits through cgroups: one small module for cgroup v1 and v2.

A :class:`Cgroup` is a child group made under this process's *own* group in each hierarchy that holds a
controller we need (read from ``/proc/self/cgroup`` and ``/proc/self/mountinfo``), never at the root: a
host's service manager owns the groups above ours, and delegation only reaches our own subtree.

==========  ================================  ==================================
limit       cgroup v1 (one tree per control)  cgroup v2 (one unified tree)
==========  ================================  ==================================
memory      memory.limit_in_bytes             memory.max (+ memory.swap.max = 0)
            (+ memory.memsw.limit_in_bytes)
cpu         cpu.cfs_quota_us / cfs_period_us  cpu.max ("QUOTA PERIOD")
processes   pids.max                          pids.max
OOM kills   memory.oom_control: oom_kill N    memory.events: oom_kill N
==========  ================================  ==================================

A controller is taken from v2 when the unified tree offers it, else from its v1 tree: hybrid hosts
(like the ones fedra is developed on: v1 for cpu/memory/pids, an empty cgroup2 tree) work, and so do
pure v2 hosts. ``root=`` points the module at another tree (a fake v2 tree in the tests).

**A delegated subtree** (a systemd unit with ``Delegate=``, ``systemd-run --scope -p Delegate=yes``):
cgroup v2 lets no process sit in a group that hands controllers to its children. A client alone in
its delegated group therefore moves itself into the leaf ``GROUP/fedra-client`` once, enables the
controllers in ``GROUP``, and makes each sandbox's group beside that leaf; later groups (the probe,
the worker's, a label) see the client in the leaf and go beside it too, never one level deeper.
systemd delegates cgroup v2 only: on a v1 (hybrid or legacy) host a service user's v1 groups stay
root's, and :meth:`Cgroup.create` says so.

**Labels.** eBPF sees a process's cgroup v2 id only (``bpf_get_current_cgroup_id``). On a hybrid host
the limits live in v1 groups, which eBPF cannot tell apart, so ``label=True`` also makes a group of the
same name in the cgroup2 tree, with no controllers: the sandbox's processes join it too, and its id
(:attr:`Cgroup.cgroup_id`) is what the traffic monitor watches. Where the limits are in v2 already, the
limits group is its own label. A label alone (no limits) is a v2 group with no controllers.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import final

from fedra.errors import FedraError

__all__ = ["Cgroup", "CgroupError", "Limits", "cgroup_unavailable_reason"]

_CPU_PERIOD_US = 100_000
_MIB = 1 << 20
_counter = itertools.count()
#: the leaf a client alone in its delegated cgroup v2 group moves into (see the module notes)
_LEAF = "fedra-client"
#: groups this module names; the number is the pid of the process that made them
_OURS = re.compile(r"fedra-(?:sandbox|probe)-(\d+)-\d+")


class CgroupError(FedraError):
    """A cgroup could not be created, limited or removed."""

    exit_code = 71  # EX_OSERR: the operating system refused


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits for one sandbox; ``None`` leaves a resource unlimited.

    Parameters
    ----------
    memory_mib
        Memory (resident plus page cache, no swap) in MiB; above it the kernel kills a process inside.
    cpu
        CPU time as a number of CPUs, like ``docker --cpus``: 0.5 is half of one CPU, 2.0 two CPUs.
    pids
        Processes and threads at once; ``fork`` and thread creation fail with ``EAGAIN`` above it.
    """

    memory_mib: int | None = None
    cpu: float | None = None
    pids: int | None = None

    def __post_init__(self) -> None:
        if self.memory_mib is not None and self.memory_mib < 1:
            raise ValueError(f"memory_mib: expected a positive number of MiB, got {self.memory_mib}")
        if self.cpu is not None and not self.cpu > 0:
            raise ValueError(f"cpu: expected a positive number of CPUs, got {self.cpu}")
        if self.pids is not None and self.pids < 1:
            raise ValueError(f"pids: expected a positive process count, got {self.pids}")

    @property
    def controllers(self) -> tuple[str, ...]:
        """The controllers these limits need, in a fixed order."""
        wanted = {"memory": self.memory_mib, "cpu": self.cpu, "pids": self.pids}
        return tuple(name for name, value in wanted.items() if value is not None)


@dataclass(frozen=True, slots=True)
class _Mount:
    point: Path  # where the hierarchy is mounted
    root: str  # which group of the hierarchy the mount shows (not "/" inside a cgroup namespace)


def _parse_mountinfo(text: str) -> tuple[_Mount | None, dict[str, _Mount]]:
    """The cgroup2 mount and, per controller, its cgroup v1 mount."""
    v2: _Mount | None = None
    v1: dict[str, _Mount] = {}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mount = _Mount(Path(fields[4].replace("\\040", " ")), fields[3])
        if tail[0] == "cgroup2" and v2 is None:
            v2 = mount
        elif tail[0] == "cgroup":
            for opt in tail[2].split(","):
                v1.setdefault(opt, mount)
    return v2, v1


def _parse_proc_cgroup(text: str) -> tuple[str | None, dict[str, str]]:
    """This process's group: its path in the unified tree, and per v1 controller."""
    v2: str | None = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        else:
            for name in controllers.split(","):
                v1[name] = path
    return v2, v1


def _under(mount: _Mount, path: str) -> Path:
    """The directory of group ``path`` in a hierarchy mounted at ``mount``."""
    rel = path
    if mount.root != "/" and (rel == mount.root or rel.startswith(mount.root.rstrip("/") + "/")):
        rel = rel[len(mount.root):]
    return mount.point / rel.lstrip("/")


def _read(path: Path) -> str:
    return path.read_text()


def _write(path: Path, value: str) -> None:
    # One write() per value: cgroup files take one value per write, and a fake tree gets the same bytes.
    with open(path, "w") as f:
        f.write(value)


def _count(text: str, key: str) -> int | None:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


@final
class Cgroup:
    """A child cgroup with limits, holding a sandbox's processes; remove it with :meth:`close`.

    Use :meth:`create`. ``version`` is 1 or 2; ``dirs`` maps each controller to its group's directory.
    """

    def __init__(self, *, version: int, dirs: dict[str, Path], limits: Limits, label: Path | None = None) -> None:
        self.version = version
        self.dirs = dirs
        self.limits = limits
        #: the group's directory in the cgroup2 tree, when it was made with ``label=True``
        self.label = label
        self._closed = False

    @classmethod
    def create(cls, limits: Limits, *, name: str | None = None, root: str | os.PathLike[str] | None = None,
               proc_cgroup: str | None = None, label: bool = False) -> Cgroup:
        """Make a child group under this process's own group and apply ``limits``.

        Parameters
        ----------
        limits
            What to limit; the controllers it needs must be available (and delegated) to this process.
        name
            The child group's name (default: ``fedra-sandbox-PID-N``).
        root
            A cgroup tree to use instead of the mounted ones: a v2 tree if it has ``cgroup.controllers``,
            else a v1 layout with one directory per controller. For tests.
        proc_cgroup
            The text of ``/proc/self/cgroup`` to use instead of this process's (with ``root``, for tests).
        label
            Also be a group of the cgroup2 tree (see the module notes), so eBPF can tell its processes
            apart; with no limits, make just that group.

        Raises
        ------
        CgroupError
            A controller is missing or not delegated, or the kernel refused a write; the message says which.
        """
        name = name or f"fedra-sandbox-{os.getpid()}-{next(_counter)}"
        own_v2, own_v1 = _parse_proc_cgroup(proc_cgroup if proc_cgroup is not None
                                            else _read(Path("/proc/self/cgroup")))
        if root is not None:
            base = Path(root)
            v2_mount = _Mount(base, "/") if (base / "cgroup.controllers").exists() else None
            v1_mounts = {} if v2_mount else {c: _Mount(base / c, "/") for c in ("memory", "cpu", "pids")}
        else:
            v2_mount, v1_mounts = _parse_mountinfo(_read(Path("/proc/self/mountinfo")))
        needed = limits.controllers
        if not needed and not label:
            raise CgroupError("no limits to apply: set memory_mib, cpu or pids")
        v2_dir = _under(v2_mount, own_v2) if v2_mount is not None and own_v2 is not None else None
        if v2_dir is not None and v2_dir.name == _LEAF and os.access(v2_dir.parent / "cgroup.subtree_control",
                                                                  os.W_OK):
            # moved into the leaf by an earlier group: the delegated group above it is the sandboxes' parent
            v2_dir = v2_dir.parent
        offered = set(_read(v2_dir / "cgroup.controllers").split()) if v2_dir and (
            v2_dir / "cgroup.controllers").exists() else set()
        if v2_dir is not None and offered >= set(needed):
            group = cls(version=2, dirs={}, limits=limits)
            try:
                group._create_v2(v2_dir, name, needed)
                if label:
                    group.label = v2_dir / name
            except BaseException:
                group.close()
                raise
            return group
        if label and v2_dir is None:
            raise CgroupError("expected a cgroup2 (unified) tree to label the sandbox's processes for the "
                              "traffic monitor, found none (mount -t cgroup2 none /sys/fs/cgroup/unified)")
        missing = [c for c in needed if c not in v1_mounts or c not in own_v1]
        if missing:
            where = f"the cgroup v2 group {v2_dir} offers {' '.join(sorted(offered)) or 'none'}" if v2_dir else \
                "no cgroup v2 tree"
            raise CgroupError(f"expected the cgroup controllers {', '.join(needed)}; {', '.join(missing)} "
                              f"found neither in a cgroup v1 tree nor delegated in cgroup v2 ({where}); "
                              "run the client where they are delegated (systemd: Delegate=yes) or drop "
                              "those limits")
        group = cls(version=1, dirs={}, limits=limits)
        try:
            for controller in needed:
                parent = _under(v1_mounts[controller], own_v1[controller])
                # cpu and cpuacct often share one tree: one directory serves both
                group.dirs[controller] = group._mkdir(parent / name, v1=True)
            group._apply_v1()
            if label:
                assert v2_dir is not None  # checked above
                group.label = group._mkdir(v2_dir / name)
        except BaseException:
            group.close()
            raise
        return group

    def _mkdir(self, path: Path, *, v1: bool = False) -> Path:
        _sweep(path.parent)
        try:
            path.mkdir(exist_ok=True)
        except OSError as exc:
            if v1 and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                # systemd's Delegate= chowns a unit's cgroup v2 group (and name=systemd), never its v1
                # controller groups; a container's v1 trees are mounted read-only
                raise CgroupError(
                    f"cannot create the cgroup {path}: {exc.strerror}; expected a writable group of this "
                    "process's own, found a cgroup v1 tree it may not write (systemd delegates only cgroup "
                    "v2, Delegate= included); boot the host with the unified hierarchy "
                    "(systemd.unified_cgroup_hierarchy=1), or drop the sandbox's limits and rely on the "
                    "service's own (MemoryMax=, CPUQuota=, TasksMax=)") from exc
            raise CgroupError(f"cannot create the cgroup {path}: {exc.strerror}; the client needs write "
                              "access to its own cgroup (root, or a delegated subtree: systemd "
                              "Delegate=yes)") from exc
        return path

    def _set(self, path: Path, value: str, *, optional: bool = False) -> None:
        if optional and not path.exists():
            return  # e.g. swap accounting is off: there is no swap limit to set
        try:
            _write(path, value)
        except OSError as exc:
            raise CgroupError(f"cannot set {path} to {value!r}: {exc.strerror}") from exc

    def _create_v2(self, parent: Path, name: str, needed: tuple[str, ...]) -> None:
        control = parent / "cgroup.subtree_control"
        enabled = set(_read(control).split()) if control.exists() else set()
        todo = [c for c in needed if c not in enabled]
        if todo:
            try:
                _write(control, " ".join(f"+{c}" for c in todo))
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise CgroupError(f"cannot enable {' '.join(todo)} in {control}: {exc.strerror}") from exc
                # "No internal processes": a group with processes cannot hand controllers to children.
                # When this process is alone in its group (a delegated service), it moves to a leaf.
                procs = _read(parent / "cgroup.procs").split()
                if procs != [str(os.getpid())]:
                    raise CgroupError(
                        f"cannot enable {' '.join(todo)} in {control}: the group holds other processes "
                        f"({len(procs)}); run the client in a delegated group of its own, e.g. "
                        "systemd-run --scope -p Delegate=yes fedra client ...") from exc
                leaf = self._mkdir(parent / _LEAF)
                self._set(leaf / "cgroup.procs", str(os.getpid()))
                self._set(control, " ".join(f"+{c}" for c in todo))
        path = self._mkdir(parent / name)
        self.dirs = dict.fromkeys(needed, path)
        lim = self.limits
        if lim.memory_mib is not None:
            self._set(path / "memory.max", str(lim.memory_mib * _MIB))
            self._set(path / "memory.swap.max", "0", optional=True)
            # kill the whole sandbox on OOM, not one process of it: a half-killed worker is useless
            self._set(path / "memory.oom.group", "1", optional=True)
        if lim.cpu is not None:
            self._set(path / "cpu.max", f"{round(lim.cpu * _CPU_PERIOD_US)} {_CPU_PERIOD_US}")
        if lim.pids is not None:
            self._set(path / "pids.max", str(lim.pids))

    def _apply_v1(self) -> None:
        lim = self.limits
        if lim.memory_mib is not None:
            mem = self.dirs["memory"]
            self._set(mem / "memory.limit_in_bytes", str(lim.memory_mib * _MIB))
            # with swap accounting, memory+swap gets the same limit: the process is killed, not swapped
            self._set(mem / "memory.memsw.limit_in_bytes", str(lim.memory_mib * _MIB), optional=True)
        if lim.cpu is not None:
            cpu = self.dirs["cpu"]
            self._set(cpu / "cpu.cfs_period_us", str(_CPU_PERIOD_US))
            self._set(cpu / "cpu.cfs_quota_us", str(round(lim.cpu * _CPU_PERIOD_US)))
        if lim.pids is not None:
            self._set(self.dirs["pids"] / "pids.max", str(lim.pids))

    def _unique_dirs(self) -> list[Path]:
        return list(dict.fromkeys([*self.dirs.values(), *([self.label] if self.label is not None else [])]))

    @property
    def cgroup_id(self) -> int | None:
        """The cgroup v2 id of the label (what eBPF reports for the processes inside), or ``None``."""
        if self.label is None:
            return None
        return os.stat(self.label).st_ino

    @property
    def procs_files(self) -> list[Path]:
        """The ``cgroup.procs`` files a process id is written to, to put that process in this group."""
        return [d / "cgroup.procs" for d in self._unique_dirs()]

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into this group."""
        for path in self.procs_files:
            self._set(path, str(pid))

    def pids(self) -> set[int]:
        """The processes in this group now."""
        found: set[int] = set()
        for path in self.procs_files:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in _read(path).split())
        return found

    def oom_kills(self) -> int:
        """How many processes the kernel killed in this group for exceeding its memory limit."""
        mem = self.dirs.get("memory")
        if mem is None:
            return 0
        try:
            if self.version == 2:
                return _count(_read(mem / "memory.events"), "oom_kill") or 0
            text = _read(mem / "memory.oom_control")
            kills = _count(text, "oom_kill")
            if kills is None:  # kernels before 4.13 do not count kills; hitting the limit is the best hint
                return int(_read(mem / "memory.failcnt").strip() or 0)
            return kills
        except (OSError, ValueError):
            return 0

    def kill(self, *, timeout: float = 5.0) -> None:
        """SIGKILL every process in this group, until it is empty or ``timeout`` passed."""
        for d in self._unique_dirs():
            if self.version == 2 and (d / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    _write(d / "cgroup.kill", "1")
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    def close(self) -> None:
        """Kill what is left inside and remove the group (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.kill()
        for d in self._unique_dirs():
            _remove_dir(d)


def _sweep(parent: Path) -> None:
    """Remove empty groups left by fedra processes that are gone (a client killed with SIGKILL)."""
    try:
        children = list(parent.iterdir())
    except OSError:
        return
    for child in children:
        match = _OURS.fullmatch(child.name)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                child.rmdir()  # fails, harmlessly, while anything is still inside
        except PermissionError:
            continue  # alive, someone else's


def _remove_dir(path: Path, *, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:
                # only a fake tree has real files in a group directory; on cgroupfs rmdir never says this
                for child in path.iterdir():
                    with contextlib.suppress(OSError):
                        child.unlink()
                with contextlib.suppress(OSError):
                    path.rmdir()
                return
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                return  # leave it: an empty leftover group costs nothing, a crash here would
            time.sleep(0.01)  # killed processes leave the group a moment after the signal


def cgroup_unavailable_reason(limits: Limits) -> str | None:
    """Why ``limits`` cannot be applied here, or ``None`` when they can (makes and removes a group)."""
    if not limits.controllers:
        return None
    try:
        Cgroup.create(limits, name=f"fedra-probe-{os.getpid()}-{next(_counter)}").close()
    except CgroupError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read this process's cgroups: {exc}"
    return None

