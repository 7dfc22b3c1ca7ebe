"""A user module whose training attacks its sandbox; ``config["attack"]`` picks the attack.

Each attack reports what happened as metrics (strings such as ``"ok"`` or ``"PermissionError:1"``), so
a test can assert on what the training code saw from inside. Without an attack, it trains normally.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket

import numpy as np


def model() -> dict[str, np.ndarray]:
    return {"w": np.zeros(4, np.float32)}


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    return f"{type(exc).__name__}:{getattr(exc, 'errno', '')}"


def _try(fn) -> str:  # type: ignore[no-untyped-def]
    try:
        fn()
    except Exception as exc:
        return _outcome(exc)
    return "ok"


def _connect(target: str) -> None:
    host, _, port = target.rpartition(":")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        s.connect((host.strip("[]"), int(port)))


def _write(path: str) -> None:
    with open(path, "w") as f:
        f.write("written from training code")


def _read(path: str) -> None:
    with open(path, "rb") as f:
        f.read(16)


def _fork_bomb(limit: int) -> tuple[int, str]:
    """Fork children that wait, until fork fails (or ``limit`` children): returns (children, error)."""
    r, w = os.pipe()
    children: list[int] = []
    error = "none"
    try:
        for _ in range(limit):
            pid = os.fork()
            if pid == 0:  # the child: block until the parent closes the pipe, then vanish
                os.close(w)
                os.read(r, 1)
                os._exit(0)
            children.append(pid)
    except OSError as exc:
        error = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    finally:
        os.close(w)
        os.close(r)
        for pid in children:
            os.waitpid(pid, 0)
    return len(children), error


def _libc_call(name: str, *args: int) -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    rc = getattr(libc, name)(*args)
    return "ok" if rc == 0 else f"errno:{errno.errorcode.get(ctypes.get_errno(), '?')}"


def train(m: dict[str, np.ndarray], data, config):  # type: ignore[no-untyped-def]
    attack = str(config.get("attack", ""))
    targets = [t for t in str(config.get("targets", "")).split(",") if t]
    if attack == "connect":
        return {t: _try(lambda t=t: _connect(t)) for t in targets}
    if attack == "write":
        return {t: _try(lambda t=t: _write(t)) for t in targets}
    if attack == "read":
        return {t: _try(lambda t=t: _read(t)) for t in targets}
    if attack == "procs":
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        cmdlines = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdlines.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
        host_pid = int(config.get("host_pid", 0))
        return {"pids": ",".join(map(str, pids)), "cmdlines": " | ".join(cmdlines),
                "me": os.getpid(), "signal_host_pid": _try(lambda: os.kill(host_pid, 0))}
    if attack == "forkbomb":
        children, error = _fork_bomb(int(config.get("limit", 1000)))
        return {"children": children, "error": error}
    if attack == "syscalls":
        return {
            "unshare_user": _libc_call("unshare", 0x10000000),
            "unshare_net": _libc_call("unshare", 0x40000000),
            "mount": _libc_call("mount", 0, 0, 0, 0, 0),
            "ptrace": _libc_call("ptrace", 0, 0, 0, 0),
            "inet_socket": _try(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()),
            "netlink_socket": _try(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW).close()),
            "unix_socket": _try(lambda: socket.socketpair()[0].close()),
        }
    if attack == "raise":
        raise ValueError("bad batch")
    if attack == "exit":
        os._exit(3)
    if attack == "spin":  # an endless loop: only a task timeout ends it
        while True:
            pass
    if attack == "hog":
        block = np.ones(int(config["mib"]) << 17)  # float64: MiB * 2**20 / 8 elements, every page touched
        return {"sum": float(block.sum())}
    m["w"] += 1.0
    return {"pid": os.getpid(), "rows": len(data.x) if hasattr(data, "x") else -1}


def evaluate(m: dict[str, np.ndarray], data):  # type: ignore[no-untyped-def]
    return {"accuracy": 1.0}
