"""``fedra deploy k8s``: every rendered object passes ``kubernetes-validate --strict``, and the objects say
what the issue asks (identities, NetworkPolicy, probes, limits from the job, a locked-down pod).

These run without a cluster. The real run (``podman kube play``) is in test_k8s_podman.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from k8s_fixtures import k8s_federation, k8s_job_dir, k8s_render
from typer.testing import CliRunner

from fedra.deploy._k8s import SERVER_BACKOFF_LIMIT, to_yaml
from fedra.errors import ConfigError

# the validator and a YAML reader are dev dependencies (pyproject's dev extra); skip, saying so, without them
yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install -c constraints.txt '.[dev]')")
kv = pytest.importorskip("kubernetes_validate",
                         reason="kubernetes-validate is not installed (pip install -c constraints.txt '.[dev]')")
validate = kv.validate

VERSIONS = ("1.32", kv.utils.latest_version())
CLIENTS = ("site-0", "site-1")


@pytest.fixture(scope="module")
def k8s_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("k8s")
    job = k8s_job_dir(root / "job")
    fed = k8s_federation(root, CLIENTS, ("k8s-demo-server", "k8s-demo-server.default.svc"))
    return job, fed


@pytest.fixture(scope="module")
def k8s_manifests(k8s_tls: tuple[Path, Path]) -> list[dict[str, Any]]:
    return k8s_render(*k8s_tls)


def _by(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def _pods(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod spec, by its workload's name."""
    out = {}
    for m in manifests:
        if m["kind"] == "Job":
            out[m["metadata"]["name"]] = m["spec"]["template"]["spec"]
    return out


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_passes_strict_validation(k8s_manifests: list[dict[str, Any]], version: str) -> None:
    kinds = sorted({m["kind"] for m in k8s_manifests})
    assert kinds == ["ConfigMap", "Job", "NetworkPolicy", "PersistentVolumeClaim", "Secret", "Service"]
    for m in k8s_manifests:
        validate(m, version, strict=True)


def test_strict_validation_catches_an_unknown_field(k8s_manifests: list[dict[str, Any]]) -> None:
    # the control for the test above: --strict really rejects what the API server would
    server = dict(_by(k8s_manifests, "Job")["k8s-demo-server"])
    server["spec"] = {**server["spec"], "completion": 1}
    with pytest.raises(kv.ValidationError):
        validate(server, "1.32", strict=True)


def test_the_written_file_passes_the_validator_command(k8s_manifests: list[dict[str, Any]],
                                                       tmp_path: Path) -> None:
    path = tmp_path / "federated-job.yaml"
    path.write_text(to_yaml(k8s_manifests))
    tool = Path(sys.executable).parent / "kubernetes-validate"
    for version in VERSIONS:
        done = subprocess.run([str(tool), "-k", version, "--strict", str(path)], capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.count("passed for resource") + done.stderr.count("passed for resource") == len(
            k8s_manifests)


def test_yaml_reads_back_as_the_same_objects(k8s_manifests: list[dict[str, Any]]) -> None:
    text = to_yaml(k8s_manifests)
    assert list(yaml.safe_load_all(text)) == k8s_manifests
    # awkward scalars: YAML 1.1 booleans, numbers as strings, leading spaces, tabs, colons, unicode
    tricky = {"a": ["on", "no", "1", "0.5", " x", "a\tb", "k: v", "# c", "-", "ünï", "", "two\n\nlines\n",
                    "no newline\nend", "trailing\n\n", True, None, 3, 2.5, {}, []]}
    assert list(yaml.safe_load_all(to_yaml([tricky]))) == [tricky]


def test_each_client_holds_only_its_own_identity(k8s_manifests: list[dict[str, Any]],
                                                 k8s_tls: tuple[Path, Path]) -> None:
    _, fed = k8s_tls
    secrets = _by(k8s_manifests, "Secret")
    pods = _pods(k8s_manifests)
    for i, c in enumerate(CLIENTS):
        pod = pods[f"k8s-demo-{c}"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        secret = secrets[volumes["certs"]["secret"]["secretName"]]
        assert secret["stringData"]["tls.crt"] == (fed / "issued" / f"{c}.crt").read_text()
        assert secret["stringData"]["tls.key"] == (fed / "issued" / f"{c}.key").read_text()
        assert "ca.key" not in secret["stringData"]
        paths = {item["path"] for item in volumes["certs"]["secret"]["items"]}
        assert paths == {"ca/ca.crt", f"issued/{c}.crt", f"issued/{c}.key"}
        args = pod["containers"][0]["args"]
        assert args[args.index("--name") + 1] == c
        assert args[args.index("--partition") + 1] == str(i)
        assert args[args.index("--server") + 1] == "k8s-demo-server:7788"
    server = secrets["k8s-demo-server-tls"]["stringData"]
    assert server["allowlist.txt"] == (fed / "allowlist.txt").read_text()
    assert not any("PRIVATE KEY" in v and k != "tls.key" for k, v in server.items())


def test_pods_run_locked_down(k8s_manifests: list[dict[str, Any]]) -> None:
    for name, pod in _pods(k8s_manifests).items():
        assert pod["automountServiceAccountToken"] is False, name
        ctx = pod["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == 10001, name
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert "livenessProbe" in container and "readinessProbe" in container
            assert set(container["resources"]) == {"requests", "limits"}
            # a read-only root needs a writable /tmp
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_server_state_is_on_a_claim_and_probed_on_its_port(k8s_manifests: list[dict[str, Any]]) -> None:
    dep = _by(k8s_manifests, "Job")["k8s-demo-server"]
    pod = dep["spec"]["template"]["spec"]
    claim = {v["name"]: v for v in pod["volumes"]}["state"]["persistentVolumeClaim"]["claimName"]
    assert claim in _by(k8s_manifests, "PersistentVolumeClaim")
    container = pod["containers"][0]
    assert {"name": "state", "mountPath": "/var/lib/fedra"} in container["volumeMounts"]
    assert container["readinessProbe"]["tcpSocket"] == {"port": "grpc"}
    assert container["livenessProbe"]["tcpSocket"] == {"port": "grpc"}
    svc = _by(k8s_manifests, "Service")["k8s-demo-server"]
    assert svc["spec"]["selector"] == dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["ports"][0]["port"] == 7788


def test_server_is_a_job_that_completes_and_restarts_in_place(k8s_manifests: list[dict[str, Any]]) -> None:
    # a Deployment would restart a server whose job has finished, forever; a Job with one pod completes
    # when the server exits 0, and restarts a crashed one in the same pod (same claim, so it resumes)
    assert not _by(k8s_manifests, "Deployment") and not _by(k8s_manifests, "StatefulSet")
    server = _by(k8s_manifests, "Job")["k8s-demo-server"]
    spec = server["spec"]
    assert server["apiVersion"] == "batch/v1"
    assert spec["completions"] == 1 and spec["parallelism"] == 1
    assert spec["backoffLimit"] == SERVER_BACKOFF_LIMIT and SERVER_BACKOFF_LIMIT >= 3
    assert "selector" not in spec  # the Job controller makes a unique one; a hand-made one could adopt pods
    assert spec["template"]["spec"]["restartPolicy"] == "OnFailure"
    # the server's pod is told apart from the clients' by its component label, which the Job keeps
    assert spec["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "server"


def test_client_limits_come_from_the_job(k8s_manifests: list[dict[str, Any]]) -> None:
    # the job's [sandbox] memory_mib = 768, cpu = 0.5
    for name, pod in _pods(k8s_manifests).items():
        if name.endswith("-server"):
            continue
        res = pod["containers"][0]["resources"]
        assert res == {"requests": {"cpu": "500m", "memory": "768Mi"}, "limits": {"cpu": "500m", "memory": "768Mi"}}


def test_network_policies_admit_only_the_federation(k8s_manifests: list[dict[str, Any]]) -> None:
    policies = _by(k8s_manifests, "NetworkPolicy")
    server_labels = _by(k8s_manifests, "Job")["k8s-demo-server"]["spec"]["template"]["metadata"]["labels"]
    client_labels = [m["spec"]["template"]["metadata"]["labels"] for m in k8s_manifests
                     if m["kind"] == "Job" and m["metadata"]["name"] != "k8s-demo-server"]

    def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in selector["matchLabels"].items())

    srv = policies["k8s-demo-server"]["spec"]
    assert selects(srv["podSelector"], server_labels)
    assert not any(selects(srv["podSelector"], c) for c in client_labels)
    assert srv["policyTypes"] == ["Ingress", "Egress"] and srv["egress"] == []
    [rule] = srv["ingress"]
    [peer] = rule["from"]
    assert set(peer) == {"podSelector"}  # pods of this namespace only, no ipBlock, no other namespace
    assert all(selects(peer["podSelector"], c) for c in client_labels)
    assert not selects(peer["podSelector"], server_labels)
    assert rule["ports"] == [{"protocol": "TCP", "port": 7788}]

    cli = policies["k8s-demo-client"]["spec"]
    assert all(selects(cli["podSelector"], c) for c in client_labels)
    assert cli["ingress"] == [] and cli["policyTypes"] == ["Ingress", "Egress"]
    to_server, dns = cli["egress"]
    assert selects(to_server["to"][0]["podSelector"], server_labels) and to_server["ports"] == rule["ports"]
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert {p["port"] for p in dns["ports"]} == {53}


def test_configmap_carries_the_job_with_a_flat_module(k8s_manifests: list[dict[str, Any]],
                                                      k8s_tls: tuple[Path, Path]) -> None:
    job, _ = k8s_tls
    cm = _by(k8s_manifests, "ConfigMap")["k8s-demo-job"]["data"]
    assert cm["task.py"] == (job.parent / "task.py").read_text()
    import tomllib

    assert tomllib.loads(cm["job.toml"])["job"]["module"] == "task.py"


def test_insecure_has_no_secrets_and_says_so(k8s_tls: tuple[Path, Path]) -> None:
    job, _ = k8s_tls
    manifests = k8s_render(job, None, insecure=True)
    assert not _by(manifests, "Secret")
    for pod in _pods(manifests).values():
        assert "--insecure" in pod["containers"][0]["args"]
        assert "certs" not in {v["name"] for v in pod["volumes"]}
    for m in manifests:
        validate(m, "1.32", strict=True)


def test_refuses_a_server_certificate_clients_cannot_verify(tmp_path: Path) -> None:
    job = k8s_job_dir(tmp_path / "job")
    fed = k8s_federation(tmp_path, CLIENTS, ("agg.example.org",))
    with pytest.raises(ConfigError, match=r"--san k8s-demo-server"):
        k8s_render(job, fed)


def test_refuses_fewer_clients_than_min_clients(k8s_tls: tuple[Path, Path]) -> None:
    job, fed = k8s_tls
    with pytest.raises(ConfigError, match="min_clients = 2"):
        k8s_render(job, fed, clients=("site-0",))


def test_cli_writes_the_manifest_and_the_helm_values(k8s_tls: tuple[Path, Path], tmp_path: Path) -> None:
    from fedra.cli.deploy_k8s import k8s

    app = typer.Typer()
    app.command()(k8s)
    job, fed = k8s_tls
    out, values = tmp_path / "federated-job.yaml", tmp_path / "values.json"
    result = CliRunner().invoke(app, [str(job), "--certs", str(fed), "--out", str(out), "--values", str(values),
                                      "--image", "localhost/fedra:pytest", "--clients", "2"])
    assert result.exit_code == 0, result.output
    assert list(yaml.safe_load_all(out.read_text())) == k8s_render(job, fed)
    assert yaml.safe_load(values.read_text())["clients"][1]["name"] == "site-1"
    bad = CliRunner().invoke(app, [str(job), "--out", str(out)])
    assert bad.exit_code != 0 and "--insecure" in bad.output
