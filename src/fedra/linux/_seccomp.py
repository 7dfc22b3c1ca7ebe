"""A seccomp filter for training code: deny the system calls training never needs.

Everything is allowed except a deny list, answered with ``EPERM`` (so Python raises ``PermissionError``
where the user's code can see it, rather than the process dying mid-round):

- network: ``socket``/``socketpair`` for any family but ``AF_UNIX`` (the worker's pipe to its parent is a
  Unix socket); ``io_uring`` (it can open sockets without calling ``socket``);
- other processes and the kernel: ``ptrace``, ``process_vm_readv``/``writev``, ``bpf``, ``perf_event_open``,
  kernel modules, ``reboot``, ``kexec``, keyrings, ``swapon``, clocks, ``syslog``, ``acct``;
- the sandbox itself: ``mount`` and the new mount API, ``pivot_root``, ``chroot``, ``unshare``, ``setns``,
  and ``clone`` with any namespace flag. ``clone3`` passes its flags in memory a filter cannot read, so it
  answers ``ENOSYS``, and the C library falls back to ``clone`` (the way container runtimes do it).

System calls of other architectures (32-bit calls from a 64-bit process) kill the process: libseccomp's
default for a foreign architecture. The filter also sets ``no_new_privs``. Built with PyPI ``pyseccomp``
(ctypes over the system's ``libseccomp.so.2``).
"""

from __future__ import annotations

import errno
import socket
from typing import Any

__all__ = ["DENIED_SYSCALLS", "install_seccomp_filter", "seccomp_unavailable_reason"]

#: System calls the filter answers with EPERM whatever their arguments.
DENIED_SYSCALLS: tuple[str, ...] = (
    "acct", "add_key", "adjtimex", "bpf", "chroot", "clock_adjtime", "clock_settime", "delete_module",
    "finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "init_module", "io_uring_enter",
    "io_uring_register", "io_uring_setup", "ioperm", "iopl", "kexec_file_load", "kexec_load", "keyctl",
    "lookup_dcookie", "mount", "mount_setattr", "move_mount", "name_to_handle_at", "open_by_handle_at",
    "open_tree", "perf_event_open", "pivot_root", "process_vm_readv", "process_vm_writev", "ptrace",
    "quotactl", "reboot", "request_key", "setns", "settimeofday", "swapoff", "swapon", "syslog",
    "umount2", "unshare", "userfaultfd", "vhangup",
)

# linux/sched.h: every flag that makes a new namespace
_CLONE_NEW_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
                    0x00000080)


def _library() -> Any:
    import pyseccomp  # type: ignore[import-untyped]  # ctypes binding without type information

    return pyseccomp


def seccomp_unavailable_reason() -> str | None:
    """Why a seccomp filter cannot be installed here, or ``None`` when it can."""
    try:
        lib = _library()
        lib.SyscallFilter(lib.ALLOW)
    except ImportError:
        return "the Python package pyseccomp is not installed: pip install pyseccomp"
    except OSError as exc:
        return (f"libseccomp cannot be loaded ({exc}): install it (Debian/Ubuntu: apt-get install "
                "libseccomp2; Fedora: dnf install libseccomp)")
    return None


def install_seccomp_filter() -> None:
    """Install the filter on the calling process (all its threads) and every process it starts.

    Irreversible. Call it in the sandboxed worker before any of the user's code runs.

    Raises
    ------
    OSError
        libseccomp refused to build or load the filter.
    """
    lib = _library()
    flt = lib.SyscallFilter(lib.ALLOW)
    with_tsync = getattr(lib.Attr, "CTL_TSYNC", None)
    if with_tsync is not None:
        flt.set_attr(with_tsync, 1)  # threads started before the filter get it too
    deny = lib.ERRNO(errno.EPERM)
    known = _known(lib)
    for name in DENIED_SYSCALLS:
        if name in known:
            flt.add_rule(deny, name)
    flt.add_rule(deny, "socket", lib.Arg(0, lib.NE, socket.AF_UNIX))
    flt.add_rule(deny, "socketpair", lib.Arg(0, lib.NE, socket.AF_UNIX))
    for flag in _CLONE_NEW_FLAGS:
        flt.add_rule(deny, "clone", lib.Arg(0, lib.MASKED_EQ, flag, flag))
    if "clone3" in known:
        flt.add_rule(lib.ERRNO(errno.ENOSYS), "clone3")
    flt.load()


def _known(lib: Any) -> set[str]:
    """The deny list's names this architecture and libseccomp know (older ones lack the newest calls)."""
    out = set()
    for name in (*DENIED_SYSCALLS, "clone3"):
        try:
            if lib.resolve_syscall(lib.Arch.NATIVE, name) >= 0:
                out.add(name)
        except (OSError, ValueError):
            continue
    return out
