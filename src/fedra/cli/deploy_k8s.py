"""``fedra deploy k8s JOB.toml``: write the Kubernetes manifests of a job (``kubectl apply -f`` them).

The manifests are rendered by :mod:`fedra.deploy._k8s`: the server as a Job (one pod) with a Service and a
PersistentVolumeClaim, one Job per client (one identity each), Secrets from the federation directory,
NetworkPolicies, probes, resources and a locked-down securityContext. ``--values FILE`` also writes the
values under which the Helm chart in ``deploy/helm/fedra`` renders the same objects.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from fedra import __version__
from fedra.cli import exit_codes
from fedra.cli.simulate import read_spec, write_atomic
from fedra.errors import ConfigError

__all__ = ["k8s"]


def _resources(text: str | None, what: str) -> tuple[str, str, str, str] | None:
    """``CPU_REQ,MEM_REQ,CPU_LIMIT,MEM_LIMIT`` from the command line, or None."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4 or not all(parts):
        raise ConfigError(f"{what}: expected CPU_REQUEST,MEMORY_REQUEST,CPU_LIMIT,MEMORY_LIMIT "
                          f"(e.g. 250m,512Mi,2,2Gi), got {text!r}")
    return parts[0], parts[1], parts[2], parts[3]


def k8s(
    job_file: Annotated[Path, typer.Argument(metavar="JOB.toml", show_default=False, help="The job spec.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The manifest file to write ('-': stdout).")] = Path(
        "federated-job.yaml"),
    image: Annotated[str, typer.Option("--image", help="The fedra image (see the Dockerfile).")] = f"fedra:{__version__}",
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="The namespace of every object.")] = "default",
    name: Annotated[str | None, typer.Option("--name", show_default=False,
                                             help="Prefix of the objects' names (default: job.name).")] = None,
    clients: Annotated[int | None, typer.Option(
        "--clients", min=1, show_default=False,
        help="Deploy N clients named CLIENT_PREFIX-0 .. -N-1 (default: strategy.min_clients).")] = None,
    client_prefix: Annotated[str, typer.Option("--client-prefix", help="Client names' prefix.")] = "site",
    client_names: Annotated[list[str] | None, typer.Option(
        "--client", show_default=False, help="A client's name (repeat); instead of --clients.")] = None,
    certs: Annotated[Path | None, typer.Option(
        "--certs", show_default=False,
        help="The federation directory (fedra certs): its CA, server and client pairs go into Secrets.")] = None,
    cert_name: Annotated[str, typer.Option("--cert-name", help="The server certificate's name.")] = "server",
    insecure: Annotated[bool, typer.Option("--insecure", help="Plain text, no certificates.")] = False,
    server_host: Annotated[str | None, typer.Option(
        "--server-host", show_default=False,
        help="The address clients dial (default: the Service's name, NAME-server).")] = None,
    storage: Annotated[str, typer.Option("--storage", help="Size of the server's state volume.")] = "1Gi",
    storage_class: Annotated[str | None, typer.Option("--storage-class", show_default=False)] = None,
    server_resources: Annotated[str | None, typer.Option(
        "--server-resources", show_default=False,
        help="CPU_REQ,MEM_REQ,CPU_LIMIT,MEM_LIMIT of the server (default 250m,512Mi,2,2Gi).")] = None,
    client_resources: Annotated[str | None, typer.Option(
        "--client-resources", show_default=False,
        help="The same for each client (default: the job's sandbox limits, else 1 CPU and 1Gi).")] = None,
    data_claim: Annotated[str | None, typer.Option(
        "--data-claim", show_default=False,
        help="A PersistentVolumeClaim per client holding data.npz ('{client}' is replaced); "
             "default: client i trains on partition i of the job's dataset.")] = None,
    values: Annotated[Path | None, typer.Option(
        "--values", show_default=False,
        help="Also write the Helm values (JSON, valid YAML) for deploy/helm/fedra.")] = None,
) -> None:
    """Write the Kubernetes manifests that run JOB.toml's server and clients."""
    with exit_codes():
        from fedra.deploy._k8s import (
            K8sOptions,
            Resources,
            helm_values,
            read_inputs,
            render_manifests,
            to_yaml,
        )

        if insecure == (certs is not None):
            raise ConfigError("expected exactly one of --certs DIR (mutual TLS; the certificates go into "
                              "Secrets) or --insecure (plain text, trusted test clusters only)")
        job = read_spec(job_file)
        path = job_file / "job.toml" if job_file.is_dir() else job_file
        if client_names and clients is not None:
            raise ConfigError("expected --clients N or --client NAME (repeated), not both")
        names = tuple(client_names) if client_names else tuple(
            f"{client_prefix}-{i}" for i in range(clients if clients is not None else job.strategy.min_clients))
        server_res = _resources(server_resources, "--server-resources")
        client_res = _resources(client_resources, "--client-resources")
        options = K8sOptions(
            image=image, clients=names, name=name, namespace=namespace, server_host=server_host,
            server_cert_name=cert_name, insecure=insecure, storage=storage, storage_class=storage_class,
            client_resources=Resources(*client_res) if client_res else None, data_claim=data_claim)
        if server_res is not None:
            options = replace(options, server_resources=Resources(*server_res))
        inputs = read_inputs(path, job, certs=certs, clients=names, server_cert_name=cert_name)
        text = to_yaml(render_manifests(inputs, options))
        if str(out) == "-":
            typer.echo(text, nl=False)
        else:
            write_atomic(out, text)
            typer.echo(f"wrote {out}: kubectl apply -f {out}", err=True)
        if values is not None:
            write_atomic(values, json.dumps(helm_values(inputs, options), indent=2) + "\n")
            typer.echo(f"wrote {values}: helm template deploy/helm/fedra -f {values}", err=True)
