"""The rendered manifests for real: ``podman kube play`` runs the server and two clients to the end of a
job over mutual TLS, as the image's user, read-only root, no capabilities.

podman 4.3 ignores or mishandles some kinds (Job, Service, NetworkPolicy, Secret volumes): what the test
changes and why is in k8s_podman.py; those objects are covered by test_k8s.py's validation and structure
tests. The pods get static addresses on an internal podman network (no route out); netavark turns on
ip_forward for it, so the test puts the old value back. Skips without root or podman.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from container_image import ContainerImage, container_image, container_podman, container_run
from k8s_fixtures import k8s_federation, k8s_job_dir, k8s_render
from k8s_podman import k8s_for_podman

from fedra.deploy._k8s import to_yaml

__all__ = ["container_image", "container_podman"]  # fixtures, re-exported for pytest

pytestmark = pytest.mark.slow

SUBNET = "10.231.78"
SERVER_IP = f"{SUBNET}.2"
FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


@pytest.fixture
def k8s_podman_network(container_podman: None) -> Iterator[str]:
    name = f"fedra-kube-{os.getpid()}"
    forward = FORWARD.read_text()
    container_run("network", "create", "--internal", "--subnet", f"{SUBNET}.0/24", name)
    try:
        yield name
    finally:
        container_run("network", "rm", "-f", name, check=False)
        FORWARD.write_text(forward)


def test_kube_play_runs_the_job_to_the_end(container_image: ContainerImage, k8s_podman_network: str,
                                           tmp_path: Path) -> None:
    job = k8s_job_dir(tmp_path / "job")
    fed = k8s_federation(tmp_path, ("site-0", "site-1"), ("k8s-demo-server", SERVER_IP))
    manifests = k8s_render(job, fed, image=container_image.tag, server_host=SERVER_IP, wait_clients=180)
    played = k8s_for_podman(manifests, tmp_path / "secrets")
    # the server's Job and the clients' Jobs, each played as the Pod of its template (podman 4.3 has no Job)
    assert [m["kind"] for m in played] == ["ConfigMap", "PersistentVolumeClaim", "Pod", "Pod", "Pod"]
    assert played[2]["metadata"]["name"] == "k8s-demo-server"
    assert played[2]["spec"]["restartPolicy"] == "OnFailure"
    path = tmp_path / "play.yaml"
    path.write_text(to_yaml(played))
    server, clients = "k8s-demo-server-server", ["k8s-demo-site-0-client", "k8s-demo-site-1-client"]
    # addresses go to the pods in file order: the server's comes first
    ips = [a for i in range(3) for a in ("--ip", f"{SUBNET}.{i + 2}")]
    try:
        container_run("kube", "play", "--network", k8s_podman_network, *ips, "--log-driver", "k8s-file", str(path),
                      timeout=300)
        deadline = time.monotonic() + 240
        while True:
            # the server too: a finished server exits 0 and stays exited (a Job's pod, restartPolicy
            # OnFailure), where the Deployment it used to be would have restarted it
            states = [container_run("inspect", c, "--format",
                                    "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}").stdout.split()
                      for c in [server, *clients]]
            if all(s[0] == "exited" for s in states):
                break
            assert time.monotonic() < deadline, f"server and clients still running after 240 s: {states}"
            time.sleep(3)
        logs = {c: container_run("logs", c, check=False) for c in [server, *clients]}
        text = {c: d.stdout + d.stderr for c, d in logs.items()}
        assert [s[1] for s in states] == ["0", "0", "0"], text
        time.sleep(5)  # room for a restart that should not come
        again = container_run("inspect", server, "--format", "{{.State.Status}} {{.RestartCount}}").stdout.split()
        assert again == ["exited", "0"] and states[0][2] == "0", (again, text[server])
        for c in clients:
            assert "served 2 tasks" in text[c], text[c]
        assert "final accuracy" in text[server] and "model digest" in text[server], text[server]
        # what the manifests asked for, as podman applied it
        for c in [server, *clients]:
            cfg = container_run("inspect", c, "--format",
                                "{{.Config.User}}|{{.HostConfig.ReadonlyRootfs}}|{{json .HostConfig.CapDrop}}").stdout
            user, readonly, capdrop = cfg.strip().split("|")
            assert user.split(":")[0] == "10001" and readonly == "true", (c, cfg)
            assert "CAP_NET_RAW" in capdrop and "CAP_CHOWN" in capdrop, (c, cfg)
        memory = container_run("inspect", clients[0], "--format", "{{.HostConfig.Memory}}").stdout.strip()
        assert memory == str(768 * 2**20)  # the job's sandbox.memory_mib, as the pod's limit
    finally:
        container_run("kube", "down", str(path), check=False, timeout=120)
        # kube down leaves the claim's and the ConfigMap's volumes behind
        container_run("volume", "rm", "-f", "k8s-demo-server-state", "k8s-demo-job", check=False)
