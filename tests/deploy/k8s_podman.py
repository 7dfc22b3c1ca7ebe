"""What ``podman kube play`` (podman 4.3, Debian 12) needs done to fedra's manifests, and nothing more.

podman 4.3's ``kube play`` plays Pods, Deployments, PersistentVolumeClaims, ConfigMaps and Secrets (its
manual lists Pod, Deployment, PersistentVolumeClaim and ConfigMap), and ignores the rest without a word.
For the rendered job that means:

- ``Job``: ignored (Job support came after podman 4.3). The server's Job and each client's Job are
  played as a bare ``Pod`` made from the Job's pod template (same labels, same spec, so the same
  ``restartPolicy: OnFailure``: podman restarts a container that fails, and leaves one that exits 0).
  The Job's own fields (completions, parallelism, backoffLimit, ttlSecondsAfterFinished) have no
  podman counterpart and are checked by validation and structural tests only.
- ``Service``, ``NetworkPolicy``: ignored (podman has no cluster DNS, no kube-proxy, no policy engine).
  All pods share one network namespace made by the test, and clients dial the server at 127.0.0.1
  (rendered with ``server_host``); these objects are checked by validation and structural tests only.
- ``Secret``: podman 4.3 mounts a secret's values still base64-encoded and ignores ``items`` (checked by
  :func:`podman_secret_bug`), so a secret volume cannot carry certificates. The test projects each Secret
  the way the kubelet does (every ``items`` key to its path, ``defaultMode``) into a host directory and
  mounts that (``hostPath``) in the secret volume's place: the keys and paths under test are the ones
  rendered. The Secret objects themselves are removed from what podman plays.
- ``ports``: podman publishes every containerPort on the host, impossible in a namespace network; they
  are dropped (a probe that names a port gets its number).
- ``PersistentVolumeClaim``: played as a podman named volume (no size, class or access mode enforced).
- ``securityContext``: runAsUser/Group, readOnlyRootFilesystem and dropped capabilities are applied;
  fsGroup and seccompProfile are not (podman uses its default seccomp profile anyway).
- probes: podman turns them into health checks that need systemd timers, which this machine lacks
  (PID 1 is not systemd): they are accepted, logged as unstartable, and not run.
"""

from __future__ import annotations

import base64
import copy
import os
from pathlib import Path
from typing import Any

__all__ = ["k8s_for_podman"]


def _project_secret(secret: dict[str, Any], source: dict[str, Any], root: Path) -> Path:
    """Write ``secret``'s keys where the kubelet would for the volume ``source``; return the directory."""
    data = dict(secret.get("stringData", {}))
    for key, value in secret.get("data", {}).items():
        data[key] = base64.b64decode(value).decode()
    out = root / source["secretName"]
    out.mkdir(parents=True)
    items = source.get("items") or [{"key": k, "path": k} for k in data]
    mode = source.get("defaultMode", 0o644)
    for item in items:
        path = out / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data[item["key"]], encoding="utf-8")
        path.chmod(item.get("mode", mode))
    # the pod's fsGroup owns projected files on a kubelet; podman ignores fsGroup, so chown by hand
    uid = 10001
    for p in [out, *out.rglob("*")]:
        os.chown(p, uid, uid)
    return out


def k8s_for_podman(manifests: list[dict[str, Any]], secrets_root: Path) -> list[dict[str, Any]]:
    """The objects podman 4.3 can play, made from ``manifests`` as the module docstring says."""
    secrets = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Secret"}
    out: list[dict[str, Any]] = []
    for m in manifests:
        kind = m["kind"]
        if kind in ("Service", "NetworkPolicy", "Secret"):
            continue
        m = copy.deepcopy(m)
        if kind == "Job":
            template = m["spec"]["template"]
            metadata = {**m["metadata"], "labels": template["metadata"]["labels"]}
            m = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
        spec = m["spec"]["template"]["spec"] if kind == "Deployment" else m.get("spec", {})
        for container in spec.get("containers", []):
            # podman publishes containerPorts on the host, which a namespace network cannot do
            names = {p["name"]: p["containerPort"] for p in container.pop("ports", [])}
            for probe in ("livenessProbe", "readinessProbe"):
                tcp = container.get(probe, {}).get("tcpSocket")
                if tcp is not None:
                    tcp["port"] = names.get(tcp["port"], tcp["port"])
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                path = _project_secret(secrets[volume["secret"]["secretName"]], volume.pop("secret"), secrets_root)
                volume["hostPath"] = {"path": str(path), "type": "Directory"}
        out.append(m)
    return out
