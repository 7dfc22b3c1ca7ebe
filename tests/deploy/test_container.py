"""The container image for real: built from the Dockerfile with rootful podman, a server and two clients
finish a job over mutual TLS, each container in its own network namespace on a bridge (three "hosts").

Also what the image promises: a non-root user, no compiler, a health check that fails when the server's
port is closed and passes when it listens, the two entry points. Skips without root or podman.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from container_image import ContainerImage, container_image, container_podman, container_run

__all__ = ["container_image", "container_podman"]  # fixtures, re-exported for pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SUBNET = "10.231.41"
HOSTS = {"srv": 1, "c0": 2, "c1": 3}
UID = 10001

JOB = """\
[job]
name = "container"
module = "task.py"
rounds = 2
seed = 3

[data]
dataset = "digits"
partition = "iid"
num_clients = 2

[strategy]
min_clients = 2
min_replies = 2
round_timeout = 120

[client]
epochs = 1
batch_size = 32
lr = 0.05
"""


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@pytest.fixture
def container_netns() -> Iterator[dict[str, str]]:
    """Three namespaces on a bridge in a fourth; ``{host: netns path}``. Removed afterwards."""
    tag = f"fct{os.getpid() % 100000}"
    br = f"{tag}-br"
    made: list[str] = []
    try:
        _sh("ip", "netns", "add", br)
        made.append(br)
        _sh("ip", "-n", br, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", br, "link", "set", "br0", "up")
        for host, n in HOSTS.items():
            ns = f"{tag}-{host}"
            _sh("ip", "netns", "add", ns)
            made.append(ns)
            _sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p-{host}", "netns", br)
            _sh("ip", "-n", br, "link", "set", f"p-{host}", "master", "br0", "up")
            _sh("ip", "-n", ns, "addr", "add", f"{SUBNET}.{n}/24", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield {host: f"/run/netns/{tag}-{host}" for host in HOSTS}
    finally:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def _federation(root: Path) -> Path:
    """A federation directory from `fedra certs`: CA, a server for the server's address, two clients."""
    fed = root / "federation"
    fedra = str(Path(sys.executable).parent / "fedra")
    for args in (["init"], ["issue", "server", "server", "--san", f"{SUBNET}.{HOSTS['srv']}"],
                 ["issue", "client", "site-0"], ["issue", "client", "site-1"]):
        subprocess.run([fedra, "certs", *args, "--dir", str(fed)], check=True, capture_output=True, timeout=60)
    # the containers run as the image's user; the keys stay 0600, owned by it
    for p in [fed, *fed.rglob("*")]:
        os.chown(p, UID, UID)
    return fed


def _logs(name: str) -> str:
    done = container_run("logs", name, check=False)
    return done.stdout + done.stderr


def test_image_is_slim_non_root_and_has_two_entry_points(container_image: ContainerImage) -> None:
    tag = container_image.tag
    cfg = container_run("image", "inspect", tag, "--format",
                        "{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Healthcheck.Test}}").stdout
    user, entrypoint, health = cfg.strip().split("|")
    assert user == f"{UID}:{UID}"
    assert entrypoint == '["fedra-entrypoint"]'
    assert "health" in health
    probe = ("id -u; for cc in gcc cc g++ clang make; do command -v $cc && echo HAS-$cc; done; "
             "/opt/fedra/bin/python -c 'import torch; print(torch.__version__)'; ls /opt/fedra/bin")
    out = container_run("run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", tag, "-c", probe).stdout
    assert out.splitlines()[0] == str(UID)
    assert "HAS-" not in out, out
    assert "+cpu" in out  # the CPU-only build of torch
    assert "pip" not in out.split()  # the build tools stayed in the build stage
    for role in ("server", "client"):
        help_text = container_run("run", "--rm", "--network", "none", tag, role, "--help").stdout
        assert "Usage: fedra " + role in help_text
    print(f"image size {container_image.size / 1e6:.0f} MB (podman image inspect .Size); "
          f"build {container_image.build_seconds:.0f} s")


def test_server_and_two_clients_finish_a_job_over_mtls(container_image: ContainerImage,
                                                       container_netns: dict[str, str], tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    (job / "job.toml").write_text(JOB)
    shutil.copy2(REPO / "examples" / "digits" / "task.py", job / "task.py")
    fed = _federation(tmp_path)
    names = [f"fct-{os.getpid()}-{h}" for h in HOSTS]
    common = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
              "-v", f"{job}:/job:ro", "-v", f"{fed}:/certs:ro"]
    srv, c0, c1 = names
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, UID, UID)
    try:
        container_run("run", "-d", "--name", srv, "--network", f"ns:{container_netns['srv']}", *common,
                      "--memory", "1g", "--pids-limit", "256", "-v", f"{state}:/var/lib/fedra",
                      container_image.tag, "server", "/job/job.toml", "--bind", f"{SUBNET}.1:7788",
                      "--certs", "/certs", "--run-dir", "/var/lib/fedra/run", "--wait-clients", "180")
        # unhealthy until the server listens, healthy once it does: the health check is real
        deadline = time.monotonic() + 180
        while container_run("healthcheck", "run", srv, check=False).returncode != 0:
            assert time.monotonic() < deadline, "the server never became healthy:\n" + _logs(srv)
            status = container_run("inspect", srv, "--format", "{{.State.Status}}").stdout.strip()
            assert status == "running", f"server {status}:\n{_logs(srv)}"
            time.sleep(2)
        for name, host, i in ((c0, "c0", 0), (c1, "c1", 1)):
            container_run("run", "-d", "--name", name, "--network", f"ns:{container_netns[host]}", *common,
                          "--memory", "1g", "--pids-limit", "256", container_image.tag, "client",
                          "--server", f"{SUBNET}.1:7788", "--job", "/job/job.toml", "--name", f"site-{i}",
                          "--certs", "/certs", "--partition", str(i))
        codes = container_run("wait", srv, c0, c1, timeout=240).stdout.split()
        logs = {n: _logs(n) for n in names}
        assert codes == ["0", "0", "0"], logs
        assert "final accuracy" in logs[srv] and "model digest" in logs[srv], logs[srv]
        assert "served 2 tasks" in logs[c0] and "served 2 tasks" in logs[c1], logs
        # the clients trained unsandboxed on purpose (the image's FEDRA_SANDBOX=off), so no warning
        assert "WITHOUT a sandbox" not in logs[c0]
        # the server kept its state on the volume, as its user
        run = state / "run"
        assert (run / "model.safetensors").stat().st_uid == UID
        assert (run / "state.db").exists()
        # a stopped server's health check fails
        assert container_run("healthcheck", "run", srv, check=False).returncode != 0
    finally:
        container_run("rm", "-f", "-v", *names, check=False)
