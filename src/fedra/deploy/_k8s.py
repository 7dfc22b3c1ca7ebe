"""Kubernetes manifests for one federated job: what ``fedra deploy k8s JOB.toml`` writes.

Rendering is pure: a :class:`K8sInputs` (the job spec, the files the pods need, the certificates) and
:class:`K8sOptions` go in, a list of manifest dicts comes out (:func:`render_manifests`), and
:func:`to_yaml` writes them as one multi-document YAML file for ``kubectl apply -f``. Reading the job's
files and the federation directory is :func:`read_inputs`, apart, so tests render without a disk.

The objects, for a job named ``NAME`` (``app.kubernetes.io/instance: NAME`` on every one)::

    ConfigMap      NAME-job                 job.toml (module set to its file name) and the module file
    Secret         NAME-server-tls          CA certificate, server pair, allow-list, revocation list
    Secret         NAME-CLIENT-tls          CA certificate and that client's pair only (one per client)
    PersistentVolumeClaim NAME-server-state the server's run directory and state database (SQLite)
    Service        NAME-server              ClusterIP, the gRPC port
    Job            NAME-server              one pod (completions 1, parallelism 1, never two writers of one
                                            state): restartPolicy OnFailure restarts a crashed server in
                                            place, resuming from its checkpoint on the claim; a finished
                                            server exits 0 and the Job completes
    Job            NAME-CLIENT              one per client: each pod holds exactly one identity
    NetworkPolicy  NAME-server              ingress only from this job's clients, on the gRPC port; no egress
    NetworkPolicy  NAME-client              egress only to the server's gRPC port (and cluster DNS); no ingress

Every pod runs as uid 10001 (the image's ``fedra`` user) with ``runAsNonRoot``, a read-only root
filesystem, all capabilities dropped, no privilege escalation, the runtime's default seccomp profile and
no service-account token. Client resources come from the job's ``[sandbox]`` limits when set, since
in a pod the container is the sandbox (the image runs training with ``--sandbox off``; see
``deploy/container/entrypoint.sh``).

The Helm chart under ``deploy/helm/fedra`` renders the same objects from :func:`helm_values`.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedra.errors import ConfigError
from fedra.job import JobSpec

__all__ = [
    "APP_UID",
    "GRPC_PORT",
    "SERVER_BACKOFF_LIMIT",
    "ClientCert",
    "K8sInputs",
    "K8sOptions",
    "Resources",
    "client_resources",
    "helm_values",
    "read_inputs",
    "render_manifests",
    "to_yaml",
]

#: The image's unprivileged user and group (``useradd --uid 10001`` in the Dockerfile).
APP_UID = 10001
#: The server's gRPC port inside the pod and on the Service.
GRPC_PORT = 7788
#: How many times the server's Job restarts a failed server before the Job fails (see render_manifests).
SERVER_BACKOFF_LIMIT = 10

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class Resources:
    """A container's requests and limits, in Kubernetes quantities (``"500m"``, ``"1Gi"``)."""

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {"requests": {"cpu": self.cpu_request, "memory": self.memory_request},
                "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit}}


@dataclass(frozen=True, slots=True)
class K8sOptions:
    """What the job spec does not say about a deployment.

    ``clients`` are the client identities (certificate names, ``fedra certs issue client NAME``); client
    ``i`` trains on partition ``i`` of the job's dataset unless ``data_claim`` names a PersistentVolumeClaim
    pattern (``{client}`` is replaced), mounted read-only at ``/data`` and read as ``/data/data.npz``.
    ``server_host`` is the address clients dial (default: the Service's name, resolved by cluster DNS).
    """

    image: str
    clients: tuple[str, ...]
    name: str | None = None
    namespace: str = "default"
    server_host: str | None = None
    server_cert_name: str = "server"
    insecure: bool = False
    storage: str = "1Gi"
    storage_class: str | None = None
    server_resources: Resources = Resources("250m", "512Mi", "2", "2Gi")
    client_resources: Resources | None = None
    data_claim: str | None = None
    image_pull_policy: str = "IfNotPresent"
    wait_clients: float = 600.0


@dataclass(frozen=True, slots=True)
class ClientCert:
    """One client's certificate and private key (PEM)."""

    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class K8sInputs:
    """Everything read from disk: the job, its files for the ConfigMap, and the certificates.

    ``files`` maps a file name (a ConfigMap key) to its text; it holds ``job.toml`` and, when the job's
    module is a ``.py`` file, that file. ``server_cert``/``server_key``/``ca_cert`` are PEM text; they and
    ``client_certs`` are empty for an insecure deployment.
    """

    job: JobSpec
    files: Mapping[str, str]
    ca_cert: str = ""
    server_cert: str = ""
    server_key: str = ""
    allowlist: str = ""
    revoked: str | None = None
    client_certs: Mapping[str, ClientCert] = field(default_factory=dict)


def _dns_name(text: str, what: str) -> str:
    """``text`` as a DNS label (lowercase, ``_``/``.`` to ``-``), or a ConfigError naming ``what``."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if len(label) > 40 or _DNS_LABEL.fullmatch(label) is None:
        # 40, not 63: object names get suffixes such as "-server-state" and a client's name
        raise ConfigError(f"{what}: expected a name that makes a DNS label of at most 40 characters, "
                          f"got {text!r}; pass --name")
    return label


def read_inputs(job_file: Path, job: JobSpec, *, certs: Path | None, clients: Sequence[str],
                server_cert_name: str = "server") -> K8sInputs:
    """Read the job's files and, with ``certs``, the federation directory's CA, server and client pairs.

    The ConfigMap gets ``job.toml`` with ``job.module`` set to the module's file name, since the pod sees
    both in one flat directory. Raises ConfigError naming a missing file and the command that makes it.
    """
    try:
        raw = tomllib.loads(job_file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"job spec {job_file}: cannot read it: {exc}") from exc
    files: dict[str, str] = {}
    module = job.module_path()
    if module.endswith(".py"):
        path = Path(module)
        try:
            files[path.name] = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"job.module {job.job.module!r}: cannot read {path}: {exc}") from exc
        raw.setdefault("job", {})["module"] = path.name
    # data.path names a host directory that does not exist in the pod
    if isinstance(raw.get("data"), dict) and "path" in raw["data"]:
        raise ConfigError("data.path: a host path does not exist in the pods; ship the dataset in the "
                          "image or use per-client data (--data-claim)")
    import tomli_w

    files["job.toml"] = tomli_w.dumps(raw)
    if certs is None:
        return K8sInputs(job=job, files=files)

    def read(path: Path, hint: str) -> str:
        try:
            return path.read_text(encoding="ascii")
        except OSError as exc:
            raise ConfigError(f"--certs {certs}: cannot read {path} ({exc.strerror or exc}); {hint}") from exc

    issued = certs / "issued"
    client_certs = {
        c: ClientCert(cert=read(issued / f"{c}.crt", f"run `fedra certs issue client {c}`"),
                      key=read(issued / f"{c}.key", f"run `fedra certs issue client {c}`"))
        for c in clients}
    revoked_path = certs / "revoked.json"
    return K8sInputs(
        job=job, files=files,
        ca_cert=read(certs / "ca" / "ca.crt", "run `fedra certs init`"),
        server_cert=read(issued / f"{server_cert_name}.crt",
                         f"run `fedra certs issue server {server_cert_name} --san HOST`"),
        server_key=read(issued / f"{server_cert_name}.key",
                        f"run `fedra certs issue server {server_cert_name} --san HOST`"),
        allowlist=read(certs / "allowlist.txt", "issue client certificates with `fedra certs issue client`"),
        revoked=read(revoked_path, "") if revoked_path.exists() else None,
        client_certs=client_certs)


def _server_sans(pem: str) -> list[str]:
    """The DNS names and IP addresses a server certificate is valid for."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*ext.get_values_for_type(x509.DNSName), *(str(a) for a in ext.get_values_for_type(x509.IPAddress))]


def _labels(name: str, component: str | None = None, client: str | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": "fedra", "app.kubernetes.io/instance": name}
    if component is not None:
        labels["app.kubernetes.io/component"] = component
    if client is not None:
        labels["fedra.dev/client"] = client
    return labels


def _meta(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels}


def _pod_security() -> dict[str, Any]:
    # fsGroup makes the state volume writable by the image's user on every volume plugin that supports it
    return {"runAsNonRoot": True, "runAsUser": APP_UID, "runAsGroup": APP_UID, "fsGroup": APP_UID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "privileged": False,
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}


def _mib(value: int) -> str:
    return f"{value}Mi"


def _cpu(value: float) -> str:
    return f"{round(value * 1000)}m"


def client_resources(job: JobSpec, options: K8sOptions) -> Resources:
    """The client containers' resources: the option, else the job's sandbox limits, else 1 CPU and 1 GiB.

    Requests equal limits when they come from the job: the job's author sized training, and a pod
    scheduled on less than its limit would train slower than the round deadline assumes.
    """
    if options.client_resources is not None:
        return options.client_resources
    memory = _mib(job.sandbox.memory_mib) if job.sandbox.memory_mib is not None else "1Gi"
    cpu = _cpu(job.sandbox.cpu) if job.sandbox.cpu is not None else "1"
    return Resources(cpu_request=cpu, memory_request=memory, cpu_limit=cpu, memory_limit=memory)


def _check(inputs: K8sInputs, options: K8sOptions, name: str, server_host: str) -> None:
    if not options.clients:
        raise ConfigError("clients: expected at least one client name, got none")
    if len(set(options.clients)) != len(options.clients):
        raise ConfigError(f"clients: expected distinct names, got {list(options.clients)}")
    for c in options.clients:
        if _DNS_LABEL.fullmatch(c) is None or len(c) > 63 - len(name) - 5:
            raise ConfigError(f"client {c!r}: expected a DNS label (lowercase letters, digits, '-') short "
                              f"enough for the object name {name}-{c}-tls")
    need = inputs.job.strategy.min_clients
    if len(options.clients) < need:
        raise ConfigError(f"clients: strategy.min_clients = {need}, but only {len(options.clients)} "
                          "clients would be deployed; pass more (--clients N)")
    if options.data_claim is None and len(options.clients) > inputs.job.data.num_clients:
        raise ConfigError(f"clients: {len(options.clients)} clients train on partitions 0..N-1 of the job's "
                          f"dataset, which has data.num_clients = {inputs.job.data.num_clients}; pass fewer "
                          "or --data-claim")
    if options.insecure:
        return
    missing = [c for c in options.clients if c not in inputs.client_certs]
    if not inputs.server_cert or missing:
        raise ConfigError("certificates: expected the federation directory (--certs DIR) with the server's "
                          f"and every client's pair; missing: {'server' if not inputs.server_cert else ''}"
                          f"{' '.join(missing)}; or pass --insecure")
    sans = _server_sans(inputs.server_cert)
    if server_host not in sans:
        raise ConfigError(f"the server certificate {options.server_cert_name!r} is valid for {sans}, but "
                          f"clients will dial {server_host!r}; reissue it with `fedra certs issue server "
                          f"{options.server_cert_name} --san {server_host} --san {server_host}."
                          f"{options.namespace}.svc` (and --force)")


def render_manifests(inputs: K8sInputs, options: K8sOptions) -> list[dict[str, Any]]:
    """The manifests of the job, in apply order (config and secrets first, workloads, then policies)."""
    job = inputs.job
    name = _dns_name(options.name or job.job.name, "job.name")
    ns = options.namespace
    server = f"{name}-server"
    server_host = options.server_host or server
    _check(inputs, options, name, server_host)
    tls = not options.insecure
    out: list[dict[str, Any]] = []

    out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{name}-job", ns, _labels(name)),
                "data": dict(sorted(inputs.files.items()))})
    if tls:
        server_data = {"ca.crt": inputs.ca_cert, "tls.crt": inputs.server_cert, "tls.key": inputs.server_key,
                       "allowlist.txt": inputs.allowlist}
        if inputs.revoked is not None:
            server_data["revoked.json"] = inputs.revoked
        out.append({"apiVersion": "v1", "kind": "Secret",
                    "metadata": _meta(f"{server}-tls", ns, _labels(name, "server")),
                    "type": "Opaque", "stringData": server_data})
        for c in options.clients:
            pair = inputs.client_certs[c]
            out.append({"apiVersion": "v1", "kind": "Secret",
                        "metadata": _meta(f"{name}-{c}-tls", ns, _labels(name, "client", c)),
                        "type": "Opaque",
                        "stringData": {"ca.crt": inputs.ca_cert, "tls.crt": pair.cert, "tls.key": pair.key}})

    pvc_spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                                "resources": {"requests": {"storage": options.storage}}}
    if options.storage_class is not None:
        pvc_spec["storageClassName"] = options.storage_class
    out.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": _meta(f"{server}-state", ns, _labels(name, "server")), "spec": pvc_spec})
    out.append({"apiVersion": "v1", "kind": "Service", "metadata": _meta(server, ns, _labels(name, "server")),
                "spec": {"type": "ClusterIP", "selector": _labels(name, "server"),
                         "ports": [{"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc",
                                    "protocol": "TCP"}]}})

    job_volume = {"name": "job", "configMap": {"name": f"{name}-job"}}
    tmp_volume = {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}
    common_mounts = [{"name": "job", "mountPath": "/job", "readOnly": True},
                     {"name": "tmp", "mountPath": "/tmp"}]

    server_args = ["server", "/job/job.toml", "--bind", f"0.0.0.0:{GRPC_PORT}", "--run-dir",
                   "/var/lib/fedra/run", "--wait-clients", f"{options.wait_clients:g}"]
    server_volumes: list[dict[str, Any]] = [
        job_volume, tmp_volume, {"name": "state", "persistentVolumeClaim": {"claimName": f"{server}-state"}}]
    server_mounts = [*common_mounts, {"name": "state", "mountPath": "/var/lib/fedra"}]
    if tls:
        cn = options.server_cert_name
        items = [{"key": "ca.crt", "path": "ca/ca.crt"}, {"key": "tls.crt", "path": f"issued/{cn}.crt"},
                 {"key": "tls.key", "path": f"issued/{cn}.key"},
                 {"key": "allowlist.txt", "path": "allowlist.txt"}]
        if inputs.revoked is not None:
            items.append({"key": "revoked.json", "path": "revoked.json"})
        # 0440 with fsGroup: readable by the fedra group only (gRPC reads the key as that user)
        server_volumes.append({"name": "certs", "secret": {"secretName": f"{server}-tls", "items": items,
                                                          "defaultMode": 0o440, "optional": False}})
        server_mounts.append({"name": "certs", "mountPath": "/certs", "readOnly": True})
        server_args += ["--certs", "/certs", "--cert-name", cn]
    else:
        server_args.append("--insecure")
    tcp_probe = {"tcpSocket": {"port": "grpc"}}
    server_container = {
        "name": "server", "image": options.image, "imagePullPolicy": options.image_pull_policy,
        "args": server_args,
        "ports": [{"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"}],
        "env": [{"name": "FEDRA_PORT", "value": str(GRPC_PORT)}],
        "resources": options.server_resources.as_dict(),
        "readinessProbe": {**tcp_probe, "initialDelaySeconds": 2, "periodSeconds": 5, "timeoutSeconds": 3,
                           "failureThreshold": 3},
        "livenessProbe": {**tcp_probe, "initialDelaySeconds": 30, "periodSeconds": 20, "timeoutSeconds": 5,
                          "failureThreshold": 3},
        "securityContext": _container_security(),
        "volumeMounts": server_mounts,
    }
    # OnFailure: a crashed (or liveness-killed) server restarts in the same pod, on the same claim, and
    # resumes from its checkpoint; one that finished exits 0 and stays finished (a Deployment would
    # restart it forever)
    server_pod = {"restartPolicy": "OnFailure", "automountServiceAccountToken": False,
                  "enableServiceLinks": False, "securityContext": _pod_security(),
                  "containers": [server_container], "volumes": server_volumes}
    out.append({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": _meta(server, ns, _labels(name, "server")),
                # one pod at a time: two servers must never write one state volume.
                # backoffLimit: with OnFailure every in-place restart counts, over the job's whole life.
                # A restart costs at most the round in flight, so 10 lets a long job ride out crashes,
                # OOM kills and node trouble (the kubelet's back-off, up to 5 min each, spreads them over
                # half an hour or more); more failures than that are a fault that repeats (a bad spec, a
                # full volume, a corrupt checkpoint), and the Job fails visibly instead of looping.
                "spec": {"completions": 1, "parallelism": 1, "backoffLimit": SERVER_BACKOFF_LIMIT,
                         "template": {"metadata": {"labels": _labels(name, "server")}, "spec": server_pod}}})

    resources = client_resources(job, options).as_dict()
    health = {"exec": {"command": ["fedra-entrypoint", "health"]}}
    for i, c in enumerate(options.clients):
        args = ["client", "--server", f"{server_host}:{GRPC_PORT}", "--job", "/job/job.toml", "--name", c]
        volumes: list[dict[str, Any]] = [job_volume, tmp_volume]
        mounts = list(common_mounts)
        if options.data_claim is not None:
            volumes.append({"name": "data", "persistentVolumeClaim": {
                "claimName": options.data_claim.replace("{client}", c), "readOnly": True}})
            mounts.append({"name": "data", "mountPath": "/data", "readOnly": True})
            args += ["--data", "/data/data.npz"]
        else:
            args += ["--partition", str(i)]
        if tls:
            volumes.append({"name": "certs", "secret": {
                "secretName": f"{name}-{c}-tls", "defaultMode": 0o440, "optional": False,
                "items": [{"key": "ca.crt", "path": "ca/ca.crt"}, {"key": "tls.crt", "path": f"issued/{c}.crt"},
                          {"key": "tls.key", "path": f"issued/{c}.key"}]}})
            mounts.append({"name": "certs", "mountPath": "/certs", "readOnly": True})
            args += ["--certs", "/certs"]
        else:
            args.append("--insecure")
        container = {
            "name": "client", "image": options.image, "imagePullPolicy": options.image_pull_policy,
            "args": args, "env": [{"name": "FEDRA_SANDBOX", "value": "off"}],
            "resources": resources,
            "readinessProbe": {**health, "initialDelaySeconds": 2, "periodSeconds": 10, "timeoutSeconds": 5},
            "livenessProbe": {**health, "initialDelaySeconds": 10, "periodSeconds": 20, "timeoutSeconds": 5,
                              "failureThreshold": 3},
            "securityContext": _container_security(),
            "volumeMounts": mounts,
        }
        pod = {"restartPolicy": "OnFailure", "automountServiceAccountToken": False, "enableServiceLinks": False,
               "securityContext": _pod_security(), "containers": [container], "volumes": volumes}
        labels = _labels(name, "client", c)
        out.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": _meta(f"{name}-{c}", ns, labels),
                    "spec": {"backoffLimit": 6, "ttlSecondsAfterFinished": 86400,
                             "template": {"metadata": {"labels": labels}, "spec": pod}}})

    grpc_port = [{"protocol": "TCP", "port": GRPC_PORT}]
    out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": _meta(server, ns, _labels(name, "server")),
                "spec": {"podSelector": {"matchLabels": _labels(name, "server")},
                         "policyTypes": ["Ingress", "Egress"],
                         "ingress": [{"from": [{"podSelector": {"matchLabels": _labels(name, "client")}}],
                                      "ports": grpc_port}],
                         # no egress rule: the server dials nothing (its state is a local SQLite file)
                         "egress": []}})
    dns = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                   "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
           "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": _meta(f"{name}-client", ns, _labels(name, "client")),
                "spec": {"podSelector": {"matchLabels": _labels(name, "client")},
                         "policyTypes": ["Ingress", "Egress"],
                         "ingress": [],
                         # the server's gRPC port, and cluster DNS to resolve the Service's name
                         "egress": [{"to": [{"podSelector": {"matchLabels": _labels(name, "server")}}],
                                     "ports": grpc_port}, dns]}})
    return out


def helm_values(inputs: K8sInputs, options: K8sOptions) -> dict[str, Any]:
    """The values for ``deploy/helm/fedra`` under which ``helm template`` renders :func:`render_manifests`."""
    name = _dns_name(options.name or inputs.job.job.name, "job.name")
    server_host = options.server_host or f"{name}-server"
    _check(inputs, options, name, server_host)
    res = client_resources(inputs.job, options)
    values: dict[str, Any] = {
        "name": name, "namespace": options.namespace,
        "image": {"name": options.image, "pullPolicy": options.image_pull_policy},
        "serverHost": server_host, "waitClients": f"{options.wait_clients:g}",
        "insecure": options.insecure,
        "storage": {"size": options.storage, "className": options.storage_class or ""},
        "server": {"certName": options.server_cert_name, "resources": options.server_resources.as_dict()},
        "client": {"resources": res.as_dict(), "dataClaim": options.data_claim or ""},
        "files": dict(sorted(inputs.files.items())),
        "clients": [{"name": c} for c in options.clients],
    }
    if not options.insecure:
        values["tls"] = {"ca": inputs.ca_cert, "serverCert": inputs.server_cert, "serverKey": inputs.server_key,
                         "allowlist": inputs.allowlist, "revoked": inputs.revoked or ""}
        for entry in values["clients"]:
            pair = inputs.client_certs[entry["name"]]
            entry["cert"], entry["key"] = pair.cert, pair.key
    return values


# ---- YAML output: a small emitter for the plain data above (no PyYAML dependency at run time) ----

_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*")
# words a YAML 1.1 reader (PyYAML, older Go readers) would take for booleans or null
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
            return value
        # a JSON string is a valid YAML double-quoted scalar
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _emit(value: object, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        for k, v in value.items():
            key = _scalar(str(k))
            if isinstance(v, dict) and v:
                lines.append(f"{pad}{key}:")
                _emit(v, indent + 2, lines)
            elif isinstance(v, list) and v:
                lines.append(f"{pad}{key}:")
                _emit(v, indent, lines)
            elif isinstance(v, str) and "\n" in v and v.endswith("\n") and not v.startswith((" ", "\n")) \
                    and all(ch == "\n" or ch.isprintable() for ch in v) and "\n\n\n" not in v[-3:]:
                # a literal block keeps certificates and source files readable (|: keep one final newline)
                lines.append(f"{pad}{key}: |{'+' if v.endswith(chr(10) * 2) else ''}")
                lines.extend(f"{pad}  {line}" if line else "" for line in v[:-1].split("\n"))
            else:
                lines.append(f"{pad}{key}: {_flow(v)}")
    elif isinstance(value, list):
        for item in value:
            sub: list[str] = []
            if isinstance(item, dict | list) and item:
                _emit(item, indent + 2, sub)
                first = sub[0][indent + 2:]
                lines.append(f"{pad}- {first}")
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {_flow(item)}")
    else:
        lines.append(f"{pad}{_scalar(value)}")


def _flow(value: object) -> str:
    if isinstance(value, dict):
        return "{}" if not value else "{" + ", ".join(f"{_scalar(str(k))}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _scalar(value)


def to_yaml(manifests: Sequence[Mapping[str, Any]]) -> str:
    """``manifests`` as one multi-document YAML stream (``---`` between documents)."""
    docs = []
    for m in manifests:
        lines: list[str] = []
        _emit(dict(m), 0, lines)
        docs.append("\n".join(lines) + "\n")
    return "---\n" + "---\n".join(docs)
