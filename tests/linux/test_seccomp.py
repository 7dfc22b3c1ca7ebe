"""The seccomp filter on its own, in a fresh interpreter: what it denies, and that what training needs
(threads, fork, subprocesses, Unix sockets, files) still works under it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from fedra.linux import DENIED_SYSCALLS, seccomp_unavailable_reason

PROBE = textwrap.dedent("""\
    import ctypes, errno, json, os, socket, subprocess, sys, threading
    from fedra.linux import install_seccomp_filter

    def attempt(fn):
        try:
            fn()
        except OSError as exc:
            return errno.errorcode.get(exc.errno, str(exc.errno))
        return "ok"

    libc = ctypes.CDLL(None, use_errno=True)

    def call(name, *args):
        def fn():
            if getattr(libc, name)(*args) != 0:
                raise OSError(ctypes.get_errno(), name)
        return fn

    def probes(only=None):
        table = {
            "inet": lambda: socket.socket(socket.AF_INET).close(),
            "inet6": lambda: socket.socket(socket.AF_INET6).close(),
            "packet": lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close(),
            "unix": lambda: socket.socket(socket.AF_UNIX).close(),
            "unshare": call("unshare", 0x00020000),
            "ptrace": call("ptrace", 0, 0, 0, 0),
            "reboot": call("reboot", 0),
            "thread": lambda: [t.start() or t.join() for t in [threading.Thread(target=len, args=[()])]],
            "subprocess": lambda: subprocess.run(["true"], check=True),
            "file": lambda: open(os.devnull, "w").close(),
        }
        return {k: attempt(fn) for k, fn in table.items() if only is None or k in only}

    before = probes(("inet", "unix", "thread"))  # only harmless ones run unfiltered
    install_seccomp_filter()
    print(json.dumps({"before": before, "after": probes()}))
    """)


def test_the_filter_denies_network_and_kernel_calls_and_keeps_what_training_needs() -> None:
    reason = seccomp_unavailable_reason()
    if reason is not None:
        print(f"skipped: {reason}")
        pytest.skip(reason)
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=30, check=True)
    seen = json.loads(out.stdout)
    assert seen["before"] == {"inet": "ok", "unix": "ok", "thread": "ok"}  # the probes can succeed
    assert seen["after"] == {"inet": "EPERM", "inet6": "EPERM", "packet": "EPERM", "unix": "ok",
                             "unshare": "EPERM", "ptrace": "EPERM", "reboot": "EPERM", "thread": "ok",
                             "subprocess": "ok", "file": "ok"}


def test_the_deny_list_is_sorted_and_covers_the_issue() -> None:
    assert list(DENIED_SYSCALLS) == sorted(set(DENIED_SYSCALLS))
    for name in ("ptrace", "mount", "umount2", "init_module", "finit_module", "delete_module", "reboot",
                 "kexec_load", "bpf", "perf_event_open", "keyctl", "unshare", "setns", "io_uring_setup"):
        assert name in DENIED_SYSCALLS
