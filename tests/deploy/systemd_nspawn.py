"""A throwaway Debian 12 machine booted with systemd-nspawn, for running fedra's units for real.

The cached root filesystem (``scripts/debian-rootfs``) is never written: the machine runs on an overlay
whose upper layer lives in the test's temporary directory. fedra itself comes from this checkout, bound
read-only into the machine at the same paths (the repository with its ``.venv``, and the base Python
installation the venv links to), so what runs inside is exactly the code under test, with no wheel to
build or dependencies to install (seconds rather than minutes, and no network inside the machine).

nspawn runs in a cgroup of its own (under the name=systemd and unified trees) so that the ``payload/``
and ``supervisor/`` groups it leaves behind are ours alone to remove, whatever else runs on the host.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTFS_SCRIPT = REPO / "scripts" / "debian-rootfs"
_CGROUP_TREES = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))


def unavailable_reason() -> str | None:
    """Why a machine cannot be booted here, or ``None``."""
    if os.geteuid() != 0:
        return "needs root (overlay mounts, systemd-nspawn)"
    for tool in ("systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install systemd-container util-linux)"
    cached = Path("/var/cache/fedra/rootfs-bookworm/.fedra-complete")
    if not cached.exists() and shutil.which("debootstrap") is None:
        return "no cached Debian root filesystem and no debootstrap to build one (apt-get install debootstrap)"
    return None


def rootfs() -> Path:
    """The cached Debian 12 root filesystem (built on first use, about 70 s)."""
    done = subprocess.run([str(ROOTFS_SCRIPT)], capture_output=True, text=True, timeout=900, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _remove_cgroup(path: Path) -> None:
    if not path.exists():
        return
    for d in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


class Machine:
    """A booted machine; :meth:`sh` runs a command in it, :attr:`root` is its filesystem from the host."""

    def __init__(self, root: Path, nspawn: subprocess.Popen[bytes], log: Path) -> None:
        self.root = root
        self.nspawn = nspawn
        self.log = log
        self.leader = 0

    def sh(self, command: str, *, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``command`` with ``sh -c`` inside the machine (all of its namespaces)."""
        done = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "/bin/sh", "-c", command],
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            journal = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "journalctl", "--no-pager", "-n", "60",
                                      "-u", "fedra-*"], capture_output=True, text=True, timeout=30, check=False)
            raise AssertionError(f"in the machine, `{command}` exited {done.returncode}: {done.stderr}{done.stdout}\n"
                                 f"journal of the fedra units:\n{journal.stdout}")
        return done

    def prop(self, unit: str, name: str) -> str:
        """One property of a unit (``systemctl show -p NAME --value``)."""
        return self.sh(f"systemctl show -p {name} --value {unit}").stdout.strip()

    def wait_booted(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited {self.nspawn.returncode}: {self.log.read_text()[-2000:]}")
            kids = _children(self.nspawn.pid)
            if kids:
                self.leader = kids[0]
                state = self.sh("systemctl is-system-running", check=False, timeout=10).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.5)
        raise AssertionError(f"the machine did not boot within {timeout:.0f} s (state {state!r}): "
                             f"{self.log.read_text()[-2000:]}")


@contextlib.contextmanager
def booted(workdir: Path, *, binds: Sequence[Path]) -> Iterator[Machine]:
    """Boot a machine over an overlay of the cached root filesystem; ``binds`` are bound read-only.

    Everything is undone on exit: the machine powered off (killed if it will not go), the overlay
    unmounted, nspawn's cgroups removed.
    """
    lower = rootfs()
    upper, work, root = workdir / "upper", workdir / "work", workdir / "root"
    for d in (upper, work, root):
        d.mkdir(parents=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(root)], check=True, timeout=30)
    group = f"fedra-test-nspawn-{os.getpid()}-{time.monotonic_ns()}"
    trees = [t / group for t in _CGROUP_TREES if t.is_dir()]
    nspawn: subprocess.Popen[bytes] | None = None
    log = workdir / "nspawn.log"
    try:
        for t in trees:
            t.mkdir()
        enter = "".join(f'echo $$ > "{t}/cgroup.procs" && ' for t in trees)
        argv = ["systemd-nspawn", "-q", "-D", str(root), "--register=no", "--keep-unit", "--private-network",
                "--console=passive", "--boot", *(f"--bind-ro={b}" for b in binds)]
        with log.open("wb") as out:
            nspawn = subprocess.Popen(["/bin/sh", "-c", enter + 'exec "$@"', "sh", *argv],
                                      stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        machine = Machine(root, nspawn, log)
        machine.wait_booted()
        yield machine
    finally:
        if nspawn is not None and nspawn.poll() is None:
            kids = _children(nspawn.pid)
            if kids:
                subprocess.run(["nsenter", "-t", str(kids[0]), "-a", "systemctl", "poweroff", "--no-block"],
                               capture_output=True, timeout=30, check=False)
            try:
                nspawn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # a machine that will not power off: kill everything in its cgroup, nspawn last
                for t in trees:
                    for pid in (t / "cgroup.procs").read_text().split() if (t / "cgroup.procs").exists() else ():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                    for procs in t.rglob("cgroup.procs"):
                        for pid in procs.read_text().split():
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(int(pid), signal.SIGKILL)
                nspawn.kill()
                nspawn.wait(timeout=30)
        if subprocess.run(["umount", str(root)], capture_output=True, timeout=30, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(root)], capture_output=True, timeout=30, check=False)
        for t in trees:
            _remove_cgroup(t)
