"""Deployment: the same job spec that ``fedra simulate`` runs, rendered for the tools operators use.

``fedra deploy systemd`` renders hardened systemd units (:func:`render_systemd`, written by
:func:`write_units`); the server and client processes speak sd_notify through :class:`Notifier`
(readiness, status, and a watchdog fed only while their main loop keeps its deadlines). Rendering is
pure: a job spec and options in, file texts out; only ``write_units`` and ``interpreter_paths`` touch
the filesystem.
"""

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
    "CLIENT_TEMPLATE",
    "ENV_FILE",
    "SERVER_UNIT",
    "SYSUSERS_FILE",
    "ClientData",
    "Connection",
    "Notifier",
    "NotifyObserver",
    "SystemdOptions",
    "WatchedConnection",
    "client_unit_name",
    "heartbeat_window",
    "home_paths",
    "interpreter_paths",
    "render_systemd",
    "write_units",
]
