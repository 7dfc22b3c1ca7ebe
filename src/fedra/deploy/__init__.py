"""Deployment: the same job spec that ``fedra simulate`` runs, rendered for the tools operators use.

``fedra deploy k8s`` renders the Kubernetes objects of a job (:func:`render_manifests`, written as one
multi-document file by :func:`to_yaml`; :func:`helm_values` gives the same objects through the chart
under ``deploy/helm/``). ``fedra deploy systemd`` renders hardened systemd units (:func:`render_systemd`, written by
:func:`write_units`); the server and client processes speak sd_notify through :class:`Notifier`
(readiness, status, and a watchdog fed only while their main loop keeps its deadlines). Rendering is
pure: a job spec and options in, file texts out; only ``write_units`` and ``interpreter_paths`` touch
the filesystem.
"""

from fedra.deploy._k8s import (
    APP_UID,
    GRPC_PORT,
    ClientCert,
    K8sInputs,
    K8sOptions,
    Resources,
    client_resources,
    helm_values,
    read_inputs,
    render_manifests,
    to_yaml,
)
from fedra.deploy._sdnotify import Connection, Notifier, NotifyObserver, WatchedConnection
from fedra.deploy._systemd import (
    CLIENT_TEMPLATE,
    ENV_FILE,
    SERVER_UNIT,
    SYSUSERS_FILE,
    ClientData,
    SystemdOptions,
    client_unit_name,
    heartbeat_window,
    home_paths,
    interpreter_paths,
    render_systemd,
    write_units,
)

__all__ = [
    "APP_UID",
    "CLIENT_TEMPLATE",
    "ENV_FILE",
    "GRPC_PORT",
    "SERVER_UNIT",
    "SYSUSERS_FILE",
    "ClientCert",
    "ClientData",
    "Connection",
    "K8sInputs",
    "K8sOptions",
    "Notifier",
    "NotifyObserver",
    "Resources",
    "SystemdOptions",
    "WatchedConnection",
    "client_resources",
    "client_unit_name",
    "heartbeat_window",
    "helm_values",
    "home_paths",
    "interpreter_paths",
    "read_inputs",
    "render_manifests",
    "render_systemd",
    "to_yaml",
    "write_units",
]
