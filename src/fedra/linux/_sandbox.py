"""A process in a sandbox: Linux namespaces through bubblewrap, cgroup limits, one socket to its parent.

:class:`SandboxProcess` starts a command (the client's training worker) so that:

- it has its own user, pid, mount, network, ipc, uts (and, where possible, cgroup) namespaces: it sees
  only its own processes, has no network device but a loopback nobody listens on, and holds no
  capabilities in the host's namespaces;
- its filesystem is an empty read-only root with, read-only, the system (``/usr``, the loader's cache),
  the Python installation and its import paths, and the paths the caller names (the user's module, the
  partition's data); read-write only the work directory (``$HOME`` and ``$TMPDIR`` are in it); a fresh
  ``/proc``, a minimal ``/dev`` (its ``/dev/shm`` private and writable: shared memory between a training
  process and its data-loader children needs it). Nothing else of the host (home directories, other clients' data, keys) is there;
- it runs in a :class:`~fedra.linux.Cgroup` with the memory, CPU and process limits asked for. The group is
  entered by a tiny ``sh`` before it ``exec``\\ s bubblewrap, so every process of the sandbox starts inside
  it (a ``preexec_fn`` would do the same, but is unsafe in a client that already runs gRPC threads);
- it talks to its parent over one Unix socket (its number in ``FEDRA_SANDBOX_FD``); the seccomp filter
  (:func:`~fedra.linux.install_seccomp_filter`) is installed by the worker itself, before the user's code.

Why bubblewrap rather than ``unshare(2)`` through ctypes: Python 3.11 has no ``os.unshare``, and a
correct mount setup (new root, ``pivot_root``, uid maps, a reaper as pid 1, death with the parent) is
exactly what bubblewrap is: small, audited, packaged everywhere (``apt-get install bubblewrap``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import final

from fedra.errors import FedraError
from fedra.linux._cgroups import Cgroup, Limits
from fedra.linux._seccomp import seccomp_unavailable_reason

__all__ = ["SANDBOX_FD_ENV", "SandboxConfig", "SandboxError", "SandboxProcess", "bwrap_argv",
           "sandbox_unavailable_reason"]

#: The environment variable that tells the sandboxed command the number of its socket to the parent.
SANDBOX_FD_ENV = "FEDRA_SANDBOX_FD"

#: Read-only in every sandbox when they exist (the minimum a dynamically linked Python needs from /etc).
_SYSTEM_PATHS = ("/usr", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
                 "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/alternatives", "/opt/conda")
_TOP_LINKS = ("/bin", "/lib", "/lib32", "/lib64", "/libx32", "/sbin")
#: Passed from the client's environment into the sandbox, with every ``FEDRA_*`` variable (fedra's own
#: namespace); everything else (tokens, proxies, cloud credentials) stays out.
_ENV_PASSED = ("LANG", "LC_ALL", "TZ", "PYTHONHASHSEED", "PYTHONPATH", "OMP_NUM_THREADS",
               "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

# sh enters the cgroups (one procs file per argument, up to "--"), then becomes bubblewrap
_ENTER = 'while [ "$1" != "--" ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


class SandboxError(FedraError):
    """The sandbox cannot be made here, or its process failed to start."""

    exit_code = 71  # EX_OSERR


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """What a sandbox may see and use.

    Parameters
    ----------
    work_dir
        The only writable directory (made if missing); the command starts in it and it is ``$HOME``.
    read_only
        Files or directories visible read-only at the same path: the user's module, the data partition.
    limits
        Memory, CPU and process limits (cgroups); all ``None`` makes no cgroup.
    env
        Extra environment variables for the command.
    """

    work_dir: Path
    read_only: tuple[Path, ...] = ()
    limits: Limits = field(default_factory=Limits)
    env: Mapping[str, str] = field(default_factory=dict)


@functools.cache
def sandbox_unavailable_reason() -> str | None:
    """Why this host or user cannot run sandboxes, or ``None`` when it can.

    Checks the platform, bubblewrap, seccomp, and makes one throwaway sandbox (a few milliseconds; the
    answer is cached). Resource limits are checked apart: :func:`~fedra.linux.cgroup_unavailable_reason`.
    """
    if not sys.platform.startswith("linux"):
        return f"sandboxing needs Linux namespaces; this is {sys.platform}"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return ("bubblewrap (bwrap) is not installed: apt-get install bubblewrap (Debian/Ubuntu), "
                "dnf install bubblewrap (Fedora)")
    reason = seccomp_unavailable_reason()
    if reason is not None:
        return reason
    probe = [bwrap, *_NAMESPACES, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap could not be run: {exc}"
    if done.returncode != 0:
        return (f"bubblewrap cannot create namespaces here ({done.stderr.strip() or done.returncode}); "
                "user namespaces may be off (sysctl user.max_user_namespaces, "
                "kernel.unprivileged_userns_clone, or an AppArmor/container policy)")
    return None


_NAMESPACES = ("--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
               "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--cap-drop", "ALL")


def _python_paths() -> list[Path]:
    """The Python installation and every import path, so the sandboxed interpreter finds what we find."""
    found = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix),
             Path(os.path.realpath(sys.executable)).parent.parent]
    found += [Path(p) for p in sys.path if p and os.path.isabs(p)]  # "" (the cwd) is not wanted inside
    return found


def _covering(paths: Sequence[Path]) -> list[Path]:
    """Existing paths, resolved, without those already inside another one (one bind covers them)."""
    real = sorted({Path(os.path.realpath(p)) for p in paths if os.path.exists(p)}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for p in real:
        if not any(p == k or k in p.parents for k in kept):
            kept.append(p)
    return kept


def _bind(how: str, path: Path) -> list[str]:
    """Bind ``path`` where the command will look for it, and where its symlinks lead, if elsewhere."""
    real, given = os.path.realpath(path), os.path.abspath(path)
    return [how, real, given] + ([how, real, real] if real != given else [])


def bwrap_argv(config: SandboxConfig, command: Sequence[str], *, fd: int) -> list[str]:
    """The bubblewrap command line that runs ``command`` in the sandbox ``config`` describes."""
    bwrap = shutil.which("bwrap") or "bwrap"
    work = Path(os.path.abspath(config.work_dir))
    argv = [bwrap, *_NAMESPACES, "--tmpfs", "/", "--dev", "/dev", "--tmpfs", "/dev/shm", "--proc", "/proc",
            "--tmpfs", "/tmp"]
    for top in _TOP_LINKS:
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for path in _covering([*map(Path, _SYSTEM_PATHS), *_python_paths()]):
        argv += ["--ro-bind", str(path), str(path)]
    for path in config.read_only:
        if not os.path.exists(path):
            raise SandboxError(f"sandbox: expected {path} to exist (it is to be visible read-only), "
                               "found nothing there")
        argv += _bind("--ro-bind", Path(path))
    # last: the work directory is writable even when it lies under a read-only path. /tmp only holds
    # mount points, read-only like the root: temporary files go to the work directory (TMPDIR).
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    argv += [*_bind("--bind", work), "--remount-ro", "/tmp", "--remount-ro", "/dev", "--remount-ro", "/",
             "--chdir", str(work)]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work / "tmp"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.update({k: v for k, v in os.environ.items() if k in _ENV_PASSED or k.startswith("FEDRA_")})
    env.update(config.env)
    env[SANDBOX_FD_ENV] = str(fd)
    argv.append("--clearenv")
    for key, value in env.items():
        argv += ["--setenv", key, value]
    return [*argv, "--", *command]


@final
class SandboxProcess:
    """A command running in a sandbox, with a connected Unix socket (``sock``) to it.

    Use :meth:`start`; end it with :meth:`close`, which kills what is left and removes its cgroup.
    """

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket, cgroup: Cgroup | None,
                 config: SandboxConfig, *, owns_cgroup: bool = True) -> None:
        self.proc = proc
        self.sock = sock
        self.cgroup = cgroup
        self.config = config
        self._owns_cgroup = owns_cgroup
        self._oom_base = cgroup.oom_kills() if cgroup is not None else 0

    @classmethod
    def start(cls, command: Sequence[str], config: SandboxConfig, *, cgroup: Cgroup | None = None) -> SandboxProcess:
        """Start ``command`` in a new sandbox.

        Parameters
        ----------
        cgroup
            An empty group to run in, kept (emptied) at :meth:`close`: one group serves every sandbox a
            client starts in turn, so its cgroup id, which the traffic monitor watches, stays the same.
            By default a group with ``config.limits`` is made, and removed at :meth:`close`.

        Raises
        ------
        SandboxError
            bubblewrap could not be started.
        CgroupError
            The limits cannot be applied.
        """
        Path(config.work_dir).mkdir(parents=True, exist_ok=True)
        owns = cgroup is None
        if cgroup is None and config.limits.controllers:
            cgroup = Cgroup.create(config.limits)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            argv = bwrap_argv(config, command, fd=theirs.fileno())
            enter = [str(p) for p in cgroup.procs_files] if cgroup is not None else []
            proc = subprocess.Popen(["/bin/sh", "-c", _ENTER, "sh", *enter, "--", *argv],
                                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                    start_new_session=True)  # the client's Ctrl-C is the client's to handle
        except BaseException as exc:
            ours.close()
            if cgroup is not None and owns:
                cgroup.close()
            if isinstance(exc, OSError):
                raise SandboxError(f"cannot start the sandbox: {exc}") from exc
            raise
        finally:
            theirs.close()
        return cls(proc, ours, cgroup, config, owns_cgroup=owns)

    @property
    def pid(self) -> int:
        """The process id of the sandbox (bubblewrap's, in the host's pid namespace)."""
        return self.proc.pid

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of this sandbox for exceeding its memory limit."""
        return self.cgroup is not None and self.cgroup.oom_kills() > self._oom_base

    def wait(self, timeout: float | None = None) -> int | None:
        """The sandbox's exit status once it ended (137 when killed by SIGKILL), or ``None`` at timeout."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self, *, timeout: float = 5.0) -> None:
        """Close the socket, give the command ``timeout`` seconds to exit, then kill the whole sandbox.

        Its cgroup is removed if :meth:`start` made it, else emptied."""
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.wait(timeout) is None:
            with contextlib.suppress(ProcessLookupError):
                # bubblewrap's reaper dies with it (--die-with-parent), and the pid namespace with the reaper
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if self.cgroup is not None:
            if self._owns_cgroup:
                self.cgroup.close()
            else:
                self.cgroup.kill()
