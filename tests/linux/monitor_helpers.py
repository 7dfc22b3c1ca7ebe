"""Shared by the traffic monitor tests: namespaces, a cgroup label, and small TCP peers run as processes.

Run as a script it is one of the peers, each printing one JSON line per connection:

- ``sink HOST PORT --conns N --reply M``: accepts N connections (bounded by ``--timeout``), reads each
  message (an 8-byte length, then the bytes), answers M bytes and waits for the client to close; prints
  ``{"peer": ..., "received": n}`` (n counts the length header too).
- ``send HOST PORT --bytes N --reply M --hold S``: connects, sends N bytes in all (header included),
  reads the M-byte reply, keeps the connection open S seconds (so a poller sees it), closes; prints
  ``{"local": ..., "sent": N, "received": m}``.
- ``knock HOST PORT --times N``: N connection attempts to a closed port (each refused with a reset).
- ``nosocket``: installs a seccomp filter denying socket() with EPERM, then tries to make a TCP socket.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

HELPER = str(Path(__file__).resolve())


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def netns_missing() -> str | None:
    """Why namespace tests cannot run here, or ``None``."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "nft", "ss"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install iproute2 nftables)"
    probe = subprocess.run(["ip", "netns", "add", f"fmprobe{os.getpid()}"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create network namespaces here: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", f"fmprobe{os.getpid()}"], check=False)
    return None


class Net:
    """A bridge namespace and one namespace per host (``srv`` gets .1); all deleted on exit."""

    def __init__(self, hosts: list[str], subnet: str = "10.231.9") -> None:
        tag = f"fm{os.getpid() % 100000}"
        self.br = f"{tag}br"
        self.ns = {h: f"{tag}{h}" for h in hosts}
        self.port = {h: f"q{tag}{h}"[:15] for h in hosts}
        self.ip = {h: f"{subnet}.{1 if h == 'srv' else 10 + i}" for i, h in enumerate(hosts)}

    def __enter__(self) -> Net:
        try:
            sh("ip", "netns", "add", self.br)
            sh("ip", "-n", self.br, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.br, "link", "set", "br0", "up")
            for host, ns in self.ns.items():
                sh("ip", "netns", "add", ns)
                sh("ip", "link", "add", "veth0", "netns", ns, "type", "veth", "peer", "name",
                   self.port[host], "netns", self.br)
                sh("ip", "-n", self.br, "link", "set", self.port[host], "master", "br0", "up")
                sh("ip", "-n", ns, "addr", "add", f"{self.ip[host]}/24", "dev", "veth0")
                sh("ip", "-n", ns, "link", "set", "veth0", "up")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in [*self.ns.values(), self.br]:  # deleting a namespace drops its nft tables too
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)

    def popen(self, host: str, *args: str, cgroup: Path | None = None) -> subprocess.Popen[str]:
        """Run this file as a peer in ``host``'s namespace (optionally inside ``cgroup``)."""
        cmd = ["ip", "netns", "exec", self.ns[host], sys.executable, HELPER, *args]

        def enter() -> None:
            if cgroup is not None:
                (cgroup / "cgroup.procs").write_text(str(os.getpid()))

        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=enter if cgroup is not None else None)


def results(proc: subprocess.Popen[str], timeout: float = 30.0) -> list[dict[str, object]]:
    """Wait for a peer and return its JSON lines; fail with its stderr if it failed."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"peer {proc.args!r} did not finish in {timeout} s: {err}") from None
    assert proc.returncode == 0, f"peer {proc.args!r} failed ({proc.returncode}): {err}"
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_listening(ns: str, port: int, timeout: float = 10.0) -> None:
    """Wait (bounded) until something listens on ``port`` in namespace ``ns``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sh("ip", "netns", "exec", ns, "ss", "-ltnH", f"sport = :{port}").strip():
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listened on port {port} in {ns} within {timeout} s")


class Cgroup2:
    """A cgroup v2 group used as a label (no controllers are needed), removed on exit."""

    def __init__(self, name: str) -> None:
        from fedra.linux._bpf import cgroup2_mount

        root = cgroup2_mount()
        if root is None:
            raise RuntimeError("no cgroup2 mount")
        self.path = root / f"{name}{os.getpid()}"

    def __enter__(self) -> Cgroup2:
        self.path.mkdir(exist_ok=True)
        return self

    @property
    def id(self) -> int:
        return os.stat(self.path).st_ino

    def __exit__(self, *exc: object) -> None:
        for _ in range(50):  # bounded: wait for the group's processes to be reaped
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


# -- the peers ---------------------------------------------------------------------------------------


def _read_exactly(c: socket.socket, n: int) -> int:
    got = 0
    while got < n:
        chunk = c.recv(min(1 << 16, n - got))
        if not chunk:
            break
        got += len(chunk)
    return got


def _sink(host: str, port: int, conns: int, reply: int, timeout: float) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(64)
    srv.settimeout(timeout)
    for _ in range(conns):
        c, peer = srv.accept()
        c.settimeout(timeout)
        (size,) = struct.unpack("!Q", c.recv(8, socket.MSG_WAITALL))
        n = 8 + _read_exactly(c, size)
        c.sendall(b"r" * reply)
        while c.recv(1 << 16):  # until the client closes: the connection stays open while it holds
            pass
        c.close()
        print(json.dumps({"peer": f"{peer[0]}:{peer[1]}", "received": n}), flush=True)


def _send(host: str, port: int, nbytes: int, reply: int, hold: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:  # bounded: the sink may not be listening yet
        try:
            s = socket.create_connection((host, port), timeout=timeout)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    local = s.getsockname()
    s.sendall(struct.pack("!Q", nbytes - 8))
    block = b"u" * (1 << 16)
    left = nbytes - 8
    while left:
        left -= s.send(block[: min(left, len(block))])
    got = _read_exactly(s, reply)
    time.sleep(hold)
    s.close()
    print(json.dumps({"local": f"{local[0]}:{local[1]}", "sent": nbytes, "received": got}), flush=True)


def _knock(host: str, port: int, times: int) -> None:
    refused = 0
    for _ in range(times):
        with contextlib.suppress(ConnectionRefusedError), socket.create_connection((host, port), timeout=2):
            pass
        refused += 1
    print(json.dumps({"refused": refused}), flush=True)


def deny_socket_seccomp() -> None:
    """Install a seccomp filter (raw classic BPF, x86-64) that fails socket() with EPERM."""
    def ins(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k)

    ld, jeq, ret = 0x20, 0x15, 0x06
    allow, errno_eperm = 0x7FFF0000, 0x00050000 | 1
    prog = (ins(ld, 0, 0, 4) + ins(jeq, 0, 3, 0xC000003E)  # arch == x86_64, else allow
            + ins(ld, 0, 0, 0) + ins(jeq, 0, 1, socket_nr()) + ins(ret, 0, 0, errno_eperm)
            + ins(ret, 0, 0, allow))
    buf = ctypes.create_string_buffer(prog)

    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = Fprog(len(prog) // 8, ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def socket_nr() -> int:
    return 41  # socket(2) on x86-64


def _nosocket() -> None:
    deny_socket_seccomp()
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except PermissionError:
        print(json.dumps({"denied": True}), flush=True)
        return
    print(json.dumps({"denied": False}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["sink", "send", "knock", "nosocket", "idle"])
    p.add_argument("host", nargs="?", default="127.0.0.1")
    p.add_argument("port", nargs="?", type=int, default=0)
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--reply", type=int, default=0)
    p.add_argument("--bytes", type=int, default=0)
    p.add_argument("--hold", type=float, default=0.0)
    p.add_argument("--times", type=int, default=1)
    p.add_argument("--timeout", type=float, default=20.0)
    a = p.parse_args()
    if a.what == "sink":
        _sink(a.host, a.port, a.conns, a.reply, a.timeout)
    elif a.what == "send":
        _send(a.host, a.port, a.bytes, a.reply, a.hold, a.timeout)
    elif a.what == "knock":
        _knock(a.host, a.port, a.times)
    elif a.what == "nosocket":
        _nosocket()
    else:  # idle: compute a little, use no network
        print(json.dumps({"sum": sum(range(100000))}), flush=True)


if __name__ == "__main__":
    main()
