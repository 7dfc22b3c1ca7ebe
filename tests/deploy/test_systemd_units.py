"""The rendered systemd units: what they say, that ``systemd-analyze verify`` accepts every one of them
without a word, and what ``systemd-analyze security`` makes of their hardening."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fedra.deploy import (
    CLIENT_TEMPLATE,
    SERVER_UNIT,
    ClientData,
    SystemdOptions,
    client_unit_name,
    heartbeat_window,
    home_paths,
    interpreter_paths,
    render_systemd,
    write_units,
)
from fedra.errors import ConfigError
from fedra.job import JobSpec, load_job

FEDRA = str(Path(sys.executable).parent / "fedra")
TASK = Path(__file__).resolve().parents[1] / "simulation" / "softmax_task.py"
#: the server unit's exposure must stay at or below this (the issue's bar)
SERVER_MAX = 3.0
#: the figures measured when the units were written (systemd 252, ProtectHome=yes)
SERVER_EXPOSURE = 1.1
CLIENT_EXPOSURE = 2.5
CLIENT_NO_SANDBOX_EXPOSURE = 1.1

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (apt-get install systemd)")


def job_file(directory: Path, extra: str = "") -> Path:
    path = directory / "job.toml"
    path.write_text(f'''[job]
name = "units"
module = "{TASK}"
framework = "numpy"
rounds = 3
[data]
dataset = "digits"
num_clients = 3
[strategy]
min_clients = 3
round_timeout = 60
{extra}''')
    return path


def options(tmp_path: Path, **kw: object) -> SystemdOptions:
    base: dict[str, object] = {
        "fedra": FEDRA, "job": str(tmp_path / "job.toml"), "certs": "/etc/fedra/federation",
        "clients": (ClientData("site-01", partition=0), ClientData("site-02", data="/srv/site-02.npz")),
        "read_only_paths": home_paths(interpreter_paths(FEDRA))}
    base.update(kw)
    return SystemdOptions(**base)  # type: ignore[arg-type]


def rendered(tmp_path: Path, extra: str = "", **kw: object) -> tuple[JobSpec, dict[str, str]]:
    job = load_job(job_file(tmp_path, extra))
    return job, render_systemd(job, options(tmp_path, **kw))


def settings(unit: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit, by key (comments skipped)."""
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_server_unit_settings(tmp_path: Path) -> None:
    _, files = rendered(tmp_path, "[deploy]\nserver_memory_mib = 3000\nserver_cpu = 1.5\nuser = \"fl\"\n")
    s = settings(files[SERVER_UNIT])
    assert s["Type"] == ["notify"] and s["WatchdogSec"] == ["30"] and s["Restart"] == ["on-failure"]
    assert s["MemoryMax"] == ["3000M"] and s["CPUQuota"] == ["150%"]
    assert s["User"] == ["fl"] and s["Group"] == ["fl"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "CapabilityBoundingSet": "", "RestrictNamespaces": "yes", "PrivateUsers": "yes"}.items():
        assert s[key] == [value], key
    assert s["ProtectHome"][0] in ("yes", "tmpfs")
    assert s["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert s["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert s["StateDirectory"] == ["fedra"]
    assert s["ExecStart"][0].startswith(f"{FEDRA} server ${{FEDRA_JOB}} ")
    assert "--certs ${FEDRA_CERTS}" in s["ExecStart"][0] and "--insecure" not in files[SERVER_UNIT]
    assert "sysusers" in files["fedra.sysusers.conf"] and "u fl - " in files["fedra.sysusers.conf"]


def test_client_limits_follow_the_sandbox_spec(tmp_path: Path) -> None:
    _, files = rendered(tmp_path, "[sandbox]\nmemory_mib = 1000\ncpu = 1.0\npids = 100\n")
    s = settings(files[CLIENT_TEMPLATE])
    assert s["MemoryMax"] == ["1512M"] and s["CPUQuota"] == ["150%"] and s["TasksMax"] == ["612"]
    assert "--name %i" in s["ExecStart"][0]
    assert s["EnvironmentFile"] == ["/etc/fedra/fedra.env", "/etc/fedra/client-%i.env"]
    # the sandbox needs namespaces: the unit allows them, and says why
    assert s["RestrictNamespaces"] == ["cgroup ipc mnt net pid user uts"] and "@mount" in s["SystemCallFilter"][0]
    _, files = rendered(tmp_path, "[deploy]\nclient_memory_mib = 700\nclient_cpu = 0.25\n")
    s = settings(files[CLIENT_TEMPLATE])
    assert s["MemoryMax"] == ["700M"] and s["CPUQuota"] == ["25%"]


def test_only_the_sandboxed_client_gets_a_delegated_writable_cgroup_subtree(tmp_path: Path) -> None:
    # the sandbox's limits are a cgroup the client makes below its own: that needs the unit's subtree
    # delegated (only the controllers the limits use) and /sys/fs/cgroup not read-only
    _, files = rendered(tmp_path, "[sandbox]\nenabled = \"on\"\nmemory_mib = 256\ncpu = 0.5\n")
    s = settings(files[CLIENT_TEMPLATE])
    assert s["Delegate"] == ["memory cpu pids"]
    assert s["ProtectControlGroups"] == ["no"]
    comments = "\n".join(line for line in files[CLIENT_TEMPLATE].splitlines() if line.startswith("#"))
    assert "- Delegate=" in comments and "- ProtectControlGroups=" in comments
    server = settings(files[SERVER_UNIT])
    assert "Delegate" not in server and server["ProtectControlGroups"] == ["yes"]
    _, files = rendered(tmp_path, "[sandbox]\nenabled = \"off\"\n")
    s = settings(files[CLIENT_TEMPLATE])
    assert "Delegate" not in s and s["ProtectControlGroups"] == ["yes"]


def test_env_files(tmp_path: Path) -> None:
    _, files = rendered(tmp_path, bind="0.0.0.0:9000", server="agg.example.org:9000")
    env = files["fedra.env"]
    assert 'FEDRA_BIND="0.0.0.0:9000"' in env and 'FEDRA_SERVER="agg.example.org:9000"' in env
    assert 'FEDRA_RUN_DIR="/var/lib/fedra/units"' in env
    assert files["client-site-01.env"].endswith('FEDRA_CLIENT_DATA="--partition 0"\n')
    assert files["client-site-02.env"].endswith('FEDRA_CLIENT_DATA="--data /srv/site-02.npz"\n')


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="absolute path"):
        options(tmp_path, certs="relative/dir")
    with pytest.raises(ConfigError, match="absolute path"):
        options(tmp_path, job="/etc/my job.toml")
    with pytest.raises(ConfigError, match="HOST:PORT"):
        options(tmp_path, server="nohost")
    for port in ("99999", "0", "-1"):  # grpc would serve on 34463, on any free port, on 65535
        with pytest.raises(ConfigError, match=f"bind: expected HOST:PORT with a port from 1 to 65535, got '0.0.0.0:{port}'"):
            options(tmp_path, bind=f"0.0.0.0:{port}")
    with pytest.raises(ConfigError, match="distinct"):
        options(tmp_path, clients=(ClientData("a", partition=0), ClientData("a", partition=1)))
    with pytest.raises(ConfigError, match="under /var/lib/fedra"):
        rendered(tmp_path, run_dir="/srv/run")
    with pytest.raises(ConfigError, match="NAME="):
        ClientData.parse("site-01")
    with pytest.raises(ConfigError, match="partition:N"):
        ClientData.parse("a=partition:x")
    with pytest.raises(ConfigError, match="certificate name"):
        ClientData.parse("a/b=partition:1")
    assert ClientData.parse("a=partition:2") == ClientData("a", partition=2)
    assert ClientData.parse("a=/d/x.npz") == ClientData("a", data="/d/x.npz")


def test_heartbeat_window_covers_one_whole_round(tmp_path: Path) -> None:
    job, _ = rendered(tmp_path)  # round_timeout = 60
    assert heartbeat_window(job, 300) == 300 + 60 + 120
    job = job.model_copy(update={"strategy": job.strategy.model_copy(update={"round_timeout": None})})
    assert heartbeat_window(job, 10) == 10 + 600 + 120  # the server's default round deadline


def test_home_paths() -> None:
    assert home_paths(["/usr/lib", "/root/.pyenv/x", "/root/.pyenv", "/home/u/a", "/homework"]) == (
        "/root/.pyenv", "/home/u/a")
    # PrivateTmp= hides /tmp and /var/tmp as ProtectHome= hides homes (a CI checkout under /tmp, say)
    assert home_paths(["/tmp/ci/.venv", "/var/tmp/x", "/tmpx/y"]) == ("/tmp/ci/.venv", "/var/tmp/x")


def test_an_installation_under_tmp_is_bound_back_without_opening_homes(tmp_path: Path) -> None:
    _, files = rendered(tmp_path, read_only_paths=("/tmp/ci/.venv",))
    unit = files[SERVER_UNIT]
    assert "ProtectHome=yes" in unit and "ProtectHome=tmpfs" not in unit
    assert "BindReadOnlyPaths=/tmp/ci/.venv" in unit and "PrivateTmp=yes" in unit


def test_interpreter_paths_follow_the_script_to_its_python() -> None:
    found = interpreter_paths(FEDRA)
    assert str(Path(FEDRA).resolve().parent.parent) in found
    assert str(Path(sys.base_prefix).resolve()) in {str(Path(p).resolve()) for p in found}
    import fedra  # this environment's: its code may live outside it (an editable install)
    assert str(Path(fedra.__file__).resolve().parent.parent) in found


def test_write_units_and_cli(tmp_path: Path) -> None:
    from fedra.cli.deploy_systemd import systemd

    job = job_file(tmp_path)
    app = typer.Typer()
    app.command()(systemd)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [str(job), "--out", str(out), "--client", "c0=partition:0",
                                      "--server", "10.0.0.5:7788"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["client-c0.env", "fedra-client@.service", "fedra-server.service", "fedra.env",
                     "fedra.sysusers.conf"]
    assert (out / "fedra.env").stat().st_mode & 0o077 == 0
    assert f"ExecStart={FEDRA} server" in (out / SERVER_UNIT).read_text()
    bad = CliRunner().invoke(app, [str(job), "--out", str(out), "--client", "nonsense"])
    assert bad.exit_code == 78 and "NAME=" in bad.output
    written = write_units(tmp_path / "again", {"a.service": "x\n"})
    assert written == [tmp_path / "again" / "a.service"] and written[0].read_text() == "x\n"


def unit_files(tmp_path: Path, files: dict[str, str]) -> list[Path]:
    """The units on disk, the client template as an instance (verify needs a concrete unit)."""
    out = tmp_path / "units"
    out.mkdir(exist_ok=True)
    server = out / SERVER_UNIT
    server.write_text(files[SERVER_UNIT])
    client = out / client_unit_name("site-01")
    client.write_text(files[CLIENT_TEMPLATE])
    return [server, client]


@needs_analyze
@pytest.mark.parametrize("sandbox", ["auto", "off"])
def test_systemd_analyze_verify_is_silent(tmp_path: Path, sandbox: str) -> None:
    _, files = rendered(tmp_path, f"[sandbox]\nenabled = \"{sandbox}\"\n")
    for unit in unit_files(tmp_path, files):
        done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0 and done.stderr == "", f"{unit.name}: {done.stderr}"


def exposure(unit: Path) -> tuple[float, str]:
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    assert m is not None, done.stdout + done.stderr
    return float(m.group(1)), done.stdout


def open_items(report: str) -> list[str]:
    """The setting each item left open in a security report is about (``PrivateNetwork``, ...)."""
    return sorted({re.split(r"[=/ ]", line[2:].strip(), maxsplit=1)[0]
                   for line in report.splitlines() if line.startswith("✗")})


@needs_analyze
def test_security_exposure_and_every_open_item_is_justified(tmp_path: Path) -> None:
    # no home directory to bind back (ProtectHome=yes), so the figures do not depend on where this
    # machine's Python lives
    _, files = rendered(tmp_path, read_only_paths=())
    server, client = unit_files(tmp_path, files)
    figures = {}
    for unit in (server, client):
        score, report = exposure(unit)
        figures[unit.name] = score
        comments = "\n".join(line for line in unit.read_text().splitlines() if line.startswith("#"))
        unjustified = [item for item in open_items(report) if item not in comments]
        assert unjustified == [], f"{unit.name}: exposure left open without a comment saying why: {unjustified}"
    _, files = rendered(tmp_path, "[sandbox]\nenabled = \"off\"\n", read_only_paths=())
    (tmp_path / "off").mkdir()
    _, unsandboxed = unit_files(tmp_path / "off", files)
    figures["client without sandbox"], report = exposure(unsandboxed)
    comments = "\n".join(line for line in unsandboxed.read_text().splitlines() if line.startswith("#"))
    assert [item for item in open_items(report) if item not in comments] == []
    print("systemd-analyze security --offline exposure:", figures)
    assert figures[server.name] <= SERVER_MAX
    # no worse than when the units were written (systemd 252): a hardening setting lost fails here
    assert figures[server.name] <= SERVER_EXPOSURE
    assert figures[client.name] <= CLIENT_EXPOSURE
    assert figures["client without sandbox"] <= CLIENT_NO_SANDBOX_EXPOSURE
