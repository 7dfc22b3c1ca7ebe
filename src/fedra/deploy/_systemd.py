"""systemd units for a job: the server, a client template, their environment, and the service user.

:func:`render_systemd` is pure: a job spec and :class:`SystemdOptions` in, file names and texts out.
:func:`write_units` is the only function that writes, and :func:`interpreter_paths` the only one that
reads (the ``fedra`` script's interpreter line). What the files are:

=========================  ==========================================================================
``fedra-server.service``   ``fedra server`` as ``Type=notify`` with a watchdog, restarted on failure;
                           it resumes from the checkpoint in its state directory
``fedra-client@.service``  ``fedra client``, one instance per client name (its certificate's name):
                           ``systemctl start fedra-client@site-01``
``fedra.env``              paths and addresses both units read (``EnvironmentFile=``)
``client-NAME.env``        one per client given: where that client's data is
``fedra.sysusers.conf``    the dedicated system user, for ``/etc/sysusers.d/`` (``systemd-sysusers``)
=========================  ==========================================================================

Every unit is hardened; each setting that is left open is, in the unit itself, next to a comment that
says why. ``systemd-analyze security --offline`` (systemd 252) rates the server unit 1.1 (the tests hold
it at or below that, and the issue's bar is 3.0), and the client unit 2.5: higher because training
runs in a bubblewrap sandbox (:mod:`fedra.linux`), which needs what a unit could otherwise forbid: new
user, mount and network namespaces, ``mount``/``pivot_root``, ``seccomp``, netlink (to bring up the
sandbox's loopback), and a delegated, writable cgroup subtree (``Delegate=memory cpu pids``,
``ProtectControlGroups=no``) for the sandbox's own limits. A job with ``sandbox.enabled = "off"`` gets
a client unit as tight as the server's (1.1), and its training then has only the unit for a wall.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import fedra as fedra_package
from fedra.address import check_address
from fedra.errors import ConfigError
from fedra.job import JobSpec

__all__ = [
    "CLIENT_TEMPLATE",
    "ENV_FILE",
    "SERVER_UNIT",
    "SYSUSERS_FILE",
    "ClientData",
    "SystemdOptions",
    "client_unit_name",
    "heartbeat_window",
    "home_paths",
    "interpreter_paths",
    "render_systemd",
    "write_units",
]

SERVER_UNIT = "fedra-server.service"
CLIENT_TEMPLATE = "fedra-client@.service"
ENV_FILE = "fedra.env"
SYSUSERS_FILE = "fedra.sysusers.conf"
#: directories ``ProtectHome=`` hides; an installation inside one of them is bound back read-only
_HOMES = ("/root", "/home", "/run/user")
#: directories ``PrivateTmp=`` replaces: an installation there (a CI checkout, say) is bound back too
_TMPS = ("/tmp", "/var/tmp")


def _under(path: str, tops: Iterable[str]) -> bool:
    return any(path == t or path.startswith(t + "/") for t in tops)
#: grace after a round's own deadlines (aggregation, evaluation, the checkpoint) before the watchdog fires
_GRACE_S = 120.0


@dataclass(frozen=True, slots=True)
class ClientData:
    """One client: its name (its certificate's, and the unit instance's) and its data.

    Exactly one of ``data`` (an ``.npz`` path on the client's host) or ``partition`` (partition N of
    the job's own dataset: demos and tests).
    """

    name: str
    data: str | None = None
    partition: int | None = None

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() or c in "/%\\" for c in self.name):
            raise ConfigError(f"client name: expected a certificate name without spaces, '/', '%' or '\\', "
                              f"got {self.name!r}")
        if (self.data is None) == (self.partition is None):
            raise ConfigError(f"client {self.name}: expected exactly one of an .npz data path or a "
                              f"partition number")
        if self.data is not None:
            _check_path(self.data, f"client {self.name} data")

    @classmethod
    def parse(cls, spec: str) -> ClientData:
        """``NAME=/path/data.npz`` or ``NAME=partition:N``."""
        name, sep, where = spec.partition("=")
        if not sep or not where:
            raise ConfigError(f"--client: expected NAME=/path/to/data.npz or NAME=partition:N, got {spec!r}")
        if where.startswith("partition:"):
            number = where.removeprefix("partition:")
            if not number.isdigit():
                raise ConfigError(f"--client {spec}: expected partition:N with N a number, got {number!r}")
            return cls(name, partition=int(number))
        return cls(name, data=where)

    def arguments(self) -> str:
        """The client's data arguments, as its environment file gives them to ``fedra client``."""
        return f"--data {self.data}" if self.data is not None else f"--partition {self.partition}"


@dataclass(frozen=True, slots=True)
class SystemdOptions:
    """Where things are on the host the units are installed on.

    Parameters
    ----------
    fedra
        The ``fedra`` executable (absolute).
    job
        The job spec file (absolute). The user's module must sit where the spec says, relative to it.
    certs
        The federation directory (``fedra certs``); the service user must be able to read it.
    bind
        The server's listening address.
    server
        The server's ``HOST:PORT`` as the clients reach it (a name in the server certificate).
    cert_name
        The server certificate's name in the federation directory.
    config_dir
        Where the environment files are installed.
    run_dir
        The server's run directory (default: ``/var/lib/fedra/JOBNAME``, in its ``StateDirectory``).
    wait_clients
        Seconds the server waits for ``strategy.min_clients`` clients before each round.
    clients
        Clients whose environment files to write.
    read_only_paths
        Paths under home directories the services must read (the Python installation, say): bound
        read-only into an otherwise empty ``/home`` and ``/root`` (see :func:`home_paths`).
    watchdog_sec
        ``WatchdogSec=``: how long a silent service lives. The processes feed it only while their main
        loop keeps its promises (:class:`~fedra.deploy.Notifier`).
    """

    fedra: str
    job: str
    certs: str
    bind: str = "0.0.0.0:7788"
    server: str = "localhost:7788"
    cert_name: str = "server"
    config_dir: str = "/etc/fedra"
    run_dir: str | None = None
    wait_clients: float = 300.0
    clients: tuple[ClientData, ...] = ()
    read_only_paths: tuple[str, ...] = ()
    watchdog_sec: int = 30

    def __post_init__(self) -> None:
        for what, value in (("fedra", self.fedra), ("job", self.job), ("certs", self.certs),
                            ("config_dir", self.config_dir), ("run_dir", self.run_dir),
                            *(("read_only_paths", p) for p in self.read_only_paths)):
            if value is not None:
                _check_path(value, what)
        for what, value in (("bind", self.bind), ("server", self.server)):
            check_address(value, what=what, listen=False)  # a unit listens on a port known to its clients
        if not self.wait_clients > 0:
            raise ConfigError(f"wait_clients: expected a positive number of seconds, got {self.wait_clients}")
        if self.watchdog_sec < 2:
            raise ConfigError(f"watchdog_sec: expected at least 2 seconds, got {self.watchdog_sec}")
        names = [c.name for c in self.clients]
        if len(set(names)) != len(names):
            raise ConfigError(f"clients: expected distinct names, got {names}")


def _check_path(value: str, what: str) -> None:
    """Refuse a path a unit or environment file cannot name as one word."""
    # the units and environment files name these paths unquoted: whitespace would split them, and '%'
    # is a unit specifier
    if not os.path.isabs(value) or any(c.isspace() or c in "%\"'\\$" for c in value):
        raise ConfigError(f"{what}: expected an absolute path without spaces, quotes, '%', '$' or "
                          f"backslashes, got {value!r}")


def client_unit_name(name: str) -> str:
    """The unit that runs client ``name``: ``fedra-client@NAME.service``."""
    return f"fedra-client@{name}.service"


def home_paths(paths: Iterable[str]) -> tuple[str, ...]:
    """Those of ``paths`` that ``ProtectHome=`` or ``PrivateTmp=`` would hide, without duplicates or nested
    ones."""
    inside = [os.path.normpath(p) for p in paths if _under(os.path.normpath(p), (*_HOMES, *_TMPS))]
    kept: list[str] = []
    for p in sorted(set(inside), key=lambda q: (q.count("/"), q)):
        if not any(p == k or p.startswith(k + "/") for k in kept):
            kept.append(p)
    return tuple(kept)


def interpreter_paths(fedra: str | os.PathLike[str]) -> tuple[str, ...]:
    """The directories a ``fedra`` console script needs to run: its environment and its interpreter's.

    Reads the script's ``#!`` line; for a virtual environment that is the environment's ``python``, a
    link to the base installation's, which lives elsewhere (under ``/root/.pyenv``, say). For the
    environment running this, also the directory fedra's code is imported from (an editable install's
    source tree lies outside the environment).
    """
    script = Path(fedra)
    try:
        with script.open("rb") as f:
            first = f.readline(4096)
    except OSError as exc:
        raise ConfigError(f"fedra: cannot read {script}: {exc.strerror or exc}") from exc
    found = [str(script.resolve().parent.parent)]
    if first.startswith(b"#!"):
        interpreter = first[2:].strip().split(b" ")[0].decode(errors="replace")
        if os.path.isabs(interpreter):
            found.append(str(Path(interpreter).parent.parent))
            found.append(str(Path(os.path.realpath(interpreter)).parent.parent))
    if Path(sys.prefix).resolve() == script.resolve().parent.parent:
        # the environment running this: fedra may be installed in editable mode, its code outside it
        found.append(str(Path(fedra_package.__file__).resolve().parent.parent))
    return tuple(dict.fromkeys(found))


def _env_file(values: Mapping[str, str]) -> str:
    """An ``EnvironmentFile=``: one quoted ``KEY="value"`` a line."""
    lines = [f'{key}="{value}"' for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _limits(memory_mib: int, cpu: float, tasks: int) -> str:
    """The resource settings of a unit (no swap: a limit that swaps is a slow limit)."""
    return (f"MemoryMax={memory_mib}M\n"
            "MemorySwapMax=0\n"
            f"CPUQuota={round(cpu * 100)}%\n"
            f"TasksMax={tasks}\n")


def _home(read_only: tuple[str, ...]) -> str:
    """``ProtectHome=``, with the paths the service needs from home directories (or /tmp) bound back."""
    if not read_only:
        return "ProtectHome=yes\n"
    binds = " ".join(read_only)
    if not any(_under(p, _HOMES) for p in read_only):
        return ("ProtectHome=yes\n"
                "# what the service runs from lives under /tmp, which PrivateTmp= replaces: bound back, read-only\n"
                f"BindReadOnlyPaths={binds}\n")
    return ("# ProtectHome=tmpfs, not yes: what the service runs from lives under a home directory, so every\n"
            "# home is an empty tmpfs and only these paths are bound back, read-only.\n"
            "ProtectHome=tmpfs\n"
            f"BindReadOnlyPaths={binds}\n")


_COMMON = """\
User={user}
Group={user}
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
PrivateIPC=yes
PrivateMounts=yes
ProtectHostname=yes
# ProtectClock= adds DeviceAllow=char-rtc r (reading the clock); PrivateDevices= hides /dev/rtc anyway
ProtectClock=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectProc=invisible
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
KeyringMode=private
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
SystemCallErrorNumber=EPERM
"""

_SERVER = """\
# fedra aggregation server for job {job_name}. Generated by `fedra deploy systemd` from the job spec.
[Unit]
Description=fedra aggregation server (job {job_name})
Documentation=https://github.com/fedra/fedra
After=network-online.target
Wants=network-online.target

[Service]
# fedra tells systemd when it listens (READY=1), what round it is in (STATUS=), and feeds the watchdog
# only while its round loop keeps its deadlines: a stalled server is killed and restarted, and resumes
# from the checkpoint of its last completed round.
Type=notify
NotifyAccess=main
WatchdogSec={watchdog}
TimeoutStartSec=300
Restart=on-failure
RestartSec=2
EnvironmentFile={env}
ExecStart={fedra} server ${{FEDRA_JOB}} --bind ${{FEDRA_BIND}} --certs ${{FEDRA_CERTS}} --cert-name ${{FEDRA_CERT_NAME}} --run-dir ${{FEDRA_RUN_DIR}} --wait-clients ${{FEDRA_WAIT_CLIENTS}} --quiet $FEDRA_SERVER_ARGS
# the run directory (checkpoints, state.db, metrics, the final model) is the only writable place
StateDirectory=fedra
StateDirectoryMode=0700
{limits}{common}{home}ProtectControlGroups=yes
PrivateUsers=yes
ProcSubset=pid
RestrictNamespaces=yes
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
# Exposure left open, each on purpose:
# - RestrictAddressFamilies= keeps AF_INET/AF_INET6 (the server accepts clients over gRPC) and AF_UNIX
#   (sd_notify, the journal).
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
# - PrivateNetwork= is off and no IPAddressDeny=/IPAddressAllow= is set: clients connect from wherever they are (behind
#   NAT, any site); mutual TLS and the federation's allow-list decide who is admitted. Narrow it with a
#   drop-in (IPAddressDeny=any plus IPAddressAllow=...) where the clients' networks are known.
# - RootDirectory=/RootImage= are not used: the server runs from the host's fedra installation, which
#   ProtectSystem=strict makes read-only.

[Install]
WantedBy=multi-user.target
"""

_CLIENT = """\
# fedra client for job {job_name}; the instance name is the client's name (its certificate's).
# Generated by `fedra deploy systemd` from the job spec. Start one per client: fedra-client@NAME.
[Unit]
Description=fedra client %i (job {job_name})
Documentation=https://github.com/fedra/fedra
After=network-online.target {server_unit}
Wants=network-online.target

[Service]
# READY=1 once training's sandbox is up and the task loop serves; the watchdog is fed only while the
# loop pulls tasks within what a round allows, so a hung task gets the client restarted.
Type=notify
NotifyAccess=main
WatchdogSec={watchdog}
TimeoutStartSec=300
Restart=on-failure
RestartSec=5
EnvironmentFile={env}
EnvironmentFile={config_dir}/client-%i.env
ExecStart={fedra} client --server ${{FEDRA_SERVER}} --job ${{FEDRA_JOB}} --name %i --certs ${{FEDRA_CERTS}} $FEDRA_CLIENT_DATA
# the unit's limits bound the client and its training together (the job's sandbox limits plus room for
# the client process); with the sandbox on, training gets its own limits too, in a cgroup of the
# subtree delegated below
{limits}{common}{home}{sandbox}
[Install]
WantedBy=multi-user.target
"""

_CLIENT_SANDBOXED = """\
# The sandbox's limits (the job's [sandbox] memory_mib, cpu, pids) are a cgroup the client makes below
# its own: on cgroup v2 it moves itself into the leaf <unit>/fedra-client and makes the sandbox's group
# beside it, which needs the unit's cgroup delegated (chowned to the service user) and writable.
Delegate=memory cpu pids
ProtectControlGroups=no
SystemCallFilter=@system-service @mount seccomp
SystemCallFilter=~@resources
# only the namespaces the sandbox makes (not time, say)
RestrictNamespaces=cgroup ipc mnt net pid user uts
# Exposure left open, each because training runs in a bubblewrap sandbox inside this unit:
# - Delegate= hands the unit's cgroup subtree to the client, with only the memory, cpu and pids
#   controllers (what the sandbox's limits use); the subtree stays inside the unit's own MemoryMax=,
#   CPUQuota= and TasksMax=, which bound everything below it. systemd delegates cgroup v2 only: on a
#   host with cgroup v1 controllers (hybrid, legacy) the client cannot make the sandbox's groups, says
#   so, and the unit's limits are training's only ones.
# - ProtectControlGroups= is off: with it /sys/fs/cgroup is read-only in the unit, delegated subtree
#   included (systemd 252 has no ProtectControlGroups=private); above the subtree the tree is root's
#   and stays unwritable to the service user.
# - RestrictNamespaces= allows the sandbox's: new user, pid, mount, network, ipc, uts and cgroup
#   namespaces, made without privilege (user namespaces), which is why CapabilityBoundingSet= can
#   still be empty.
# - PrivateUsers= is off: bubblewrap maps its own user namespace, and inside systemd's it never
#   started (measured on systemd 252: it hung until the start timeout).
# - SystemCallFilter= allows @mount (the sandbox's root is built with mount/pivot_root) and seccomp
#   (the training worker installs its own, stricter, filter before the user's code runs), and does
#   not deny @privileged: bubblewrap sets up its namespace with setuid/setgroups/capset, which that
#   group holds (measured: with ~@privileged the sandbox did not start).
# - ProcSubset=pid is off: bubblewrap reads /proc/sys/kernel/overflowuid to map users.
# - RestrictAddressFamilies= keeps AF_NETLINK (bubblewrap brings up the sandbox's loopback over
#   rtnetlink), AF_INET/AF_INET6 (the client connects out to the server) and AF_UNIX (sd_notify, the
#   journal, the sandbox's socket).
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
# - PrivateNetwork= is off and no IPAddressDeny=/IPAddressAllow= is set: the client connects out to its server
#   (narrow it with a drop-in, IPAddressDeny=any plus IPAddressAllow=SERVER, where the address is fixed).
# - RootDirectory=/RootImage= are not used: the client runs from the host's fedra installation.
"""

_CLIENT_UNSANDBOXED = """\
# The job turns the training sandbox off (sandbox.enabled = "off"): the unit is the only wall, as
# tight as the server's.
ProtectControlGroups=yes
PrivateUsers=yes
ProcSubset=pid
RestrictNamespaces=yes
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
# Exposure left open, each on purpose:
# - RestrictAddressFamilies= keeps AF_INET/AF_INET6 (the client connects out to the server) and AF_UNIX
#   (sd_notify, the journal).
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
# - PrivateNetwork= is off and no IPAddressDeny=/IPAddressAllow= is set: the client connects out to its server.
# - RootDirectory=/RootImage= are not used: the client runs from the host's fedra installation.
"""


def _unit_path(value: str) -> str:
    """A path as a unit file names it (``%`` is a specifier there)."""
    return value.replace("%", "%%")


def render_systemd(job: JobSpec, options: SystemdOptions) -> dict[str, str]:
    """The files that run ``job`` under systemd, by file name (see the module's table).

    Raises
    ------
    ConfigError
        An option is not usable in a unit (a relative path, a path with spaces, a bad address).
    """
    spec = job.deploy
    name = job.job.name
    run_dir = options.run_dir or f"/var/lib/fedra/{name}"
    if not (run_dir == "/var/lib/fedra" or run_dir.startswith("/var/lib/fedra/")):
        raise ConfigError(f"run_dir: expected a directory under /var/lib/fedra (the service's only "
                          f"writable place, StateDirectory=fedra), got {run_dir!r}")
    env_path = f"{options.config_dir}/{ENV_FILE}"
    home = _home(options.read_only_paths)
    common = _COMMON.format(user=spec.user)
    # the server's main loop promises to come back within one round: the wait for clients, the round's
    # deadline (the driver's default when the job sets none) and a grace for aggregation and checkpoint
    server = _SERVER.format(
        job_name=name, watchdog=options.watchdog_sec, env=env_path, fedra=_unit_path(options.fedra),
        limits=_limits(spec.server_memory_mib, spec.server_cpu, 4096), common=common, home=home)
    sandbox = job.sandbox
    client_memory = spec.client_memory_mib or (sandbox.memory_mib + 512 if sandbox.memory_mib else 2048)
    client_cpu = spec.client_cpu or (sandbox.cpu + 0.5 if sandbox.cpu else 2.0)
    client_tasks = (sandbox.pids or 512) + 512
    client = _CLIENT.format(
        job_name=name, watchdog=options.watchdog_sec, env=env_path, config_dir=options.config_dir,
        fedra=_unit_path(options.fedra), server_unit=SERVER_UNIT,
        limits=_limits(client_memory, client_cpu, client_tasks), common=common, home=home,
        sandbox=_CLIENT_UNSANDBOXED if sandbox.enabled == "off" else _CLIENT_SANDBOXED)
    env = _env_file({
        "FEDRA_JOB": options.job,
        "FEDRA_CERTS": options.certs,
        "FEDRA_CERT_NAME": options.cert_name,
        "FEDRA_BIND": options.bind,
        "FEDRA_SERVER": options.server,
        "FEDRA_RUN_DIR": run_dir,
        "FEDRA_WAIT_CLIENTS": f"{options.wait_clients:g}",
        # extra `fedra server` options, split on spaces: e.g. --state postgresql+psycopg://...
        "FEDRA_SERVER_ARGS": "",
    })
    files = {
        SERVER_UNIT: server,
        CLIENT_TEMPLATE: client,
        ENV_FILE: "# Read by fedra-server.service and fedra-client@.service.\n" + env,
        SYSUSERS_FILE: (f"# The dedicated user fedra's services run as; install in /etc/sysusers.d/ and run "
                        f"systemd-sysusers.\nu {spec.user} - \"fedra federated learning\" /var/lib/fedra\n"),
    }
    for c in options.clients:
        files[f"client-{c.name}.env"] = (f"# Read by {client_unit_name(c.name)}: this client's data.\n"
                                         + _env_file({"FEDRA_CLIENT_DATA": c.arguments()}))
    return files


def heartbeat_window(job: JobSpec, wait_clients: float) -> float:
    """Seconds within which a server's round loop must come back: one whole round, worst case."""
    return wait_clients + (job.strategy.round_timeout or 600.0) + _GRACE_S


def write_units(directory: str | os.PathLike[str], files: Mapping[str, str]) -> list[Path]:
    """Write ``files`` (from :func:`render_systemd`) into ``directory``; returns the paths written.

    Environment files are written readable by their owner only (they may carry a database URL).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = out / name
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.chmod(0o600 if name.endswith(".env") else 0o644)
        tmp.replace(path)
        written.append(path)
    return written
