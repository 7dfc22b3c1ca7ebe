"""For real: the generated units on a Debian 12 machine booted with systemd-nspawn. The server unit and
three client units run a job over mutual TLS on the machine's loopback; the server is killed with SIGKILL
mid-job; systemd restarts it; it resumes from its checkpoint and the job completes.

The clients train in bubblewrap (nested user namespaces work under nspawn) inside a unit that delegates
its cgroup subtree (``Delegate=memory cpu pids``). Whether the sandbox's limits can be applied depends on
the host: on a pure cgroup v2 host the machine's systemd delegates a v2 subtree with those controllers,
the job sets ``sandbox.enabled = "on"`` and the test checks the client's leaf and the sandbox's group
beside it. On a hybrid host (v1 controllers, an empty cgroup2 tree; the machines these tests were
written on) no limit can be delegated: nspawn mounts the v1 trees read-only and systemd delegates only
cgroup v2, which has no controllers there. The job then says ``"auto"``, and the test checks that the
delegated v2 subtree is the service user's and writable in the unit, and that the client says exactly
why training runs without its own limits (the unit's limits still bound it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from systemd_nspawn import REPO, Machine, booted, unavailable_reason

from fedra.deploy import (
    ClientData,
    SystemdOptions,
    client_unit_name,
    home_paths,
    interpreter_paths,
    render_systemd,
    write_units,
)
from fedra.job import load_job

FEDRA = str(Path(sys.executable).parent / "fedra")
TASK = REPO / "tests" / "simulation" / "softmax_task.py"
ROUNDS = 6
CLIENTS = ("site-0", "site-1", "site-2")
JOB = f'''[job]
name = "nspawn"
module = "task.py"
framework = "numpy"
rounds = {ROUNDS}
seed = 5
[data]
dataset = "digits"
partition = "iid"
num_clients = 3
[strategy]
min_clients = 3
round_timeout = 60
[client]
batch_size = 16
'''
#: the controllers the sandbox's limits use (the job's default limit is pids = 512)
LIMIT_CONTROLLERS = {"memory", "cpu", "pids"}


def wait_for(what: str, check: object, timeout: float, machine: Machine) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.5)
    journal = machine.sh("journalctl --no-pager -n 80 -o cat -u fedra-server -u 'fedra-client@*'",
                         check=False).stdout
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; journal:\n{journal}")


def rounds_done(metrics: Path) -> list[int]:
    if not metrics.exists():
        return []
    return [json.loads(line)["round"] for line in metrics.read_text().splitlines() if line.strip()]


def certificates(directory: Path) -> None:
    def certs(*args: str) -> None:
        subprocess.run([FEDRA, "certs", *args, "--dir", str(directory)], check=True, capture_output=True,
                       timeout=60)

    certs("init")
    certs("issue", "server", "server", "--san", "127.0.0.1", "--san", "localhost")
    for name in CLIENTS:
        certs("issue", "client", name)
    # the CA's key stays with whoever issues certificates, never on the machines that run the services
    (directory / "ca" / "ca.key").unlink()


def check_delegation(machine: Machine, unit: str, unified: str, *, limits: bool) -> None:
    """The client unit's cgroup v2 subtree is delegated: the service user's, writable in the unit (and
    nothing above it); with ``limits``, the client sits in its leaf and the sandbox's group beside it."""
    assert machine.prop(unit, "Delegate") == "yes"
    assert set(machine.prop(unit, "DelegateControllers").split()) == LIMIT_CONTROLLERS
    group = unified + machine.prop(unit, "ControlGroup")
    assert machine.sh(f"stat -c %U '{group}'").stdout.strip() == "fedra"
    pid = machine.prop(unit, "MainPID")
    # in the unit's own mount namespace (ProtectControlGroups=no leaves /sys/fs/cgroup writable there),
    # as the service user
    inside = f"nsenter -t {pid} -m setpriv --reuid=fedra --regid=fedra --clear-groups"
    machine.sh(f"{inside} mkdir '{group}/fedra-test-probe' && rmdir '{group}/fedra-test-probe'")
    above = machine.sh(f"{inside} mkdir '{group.rsplit('/', 1)[0]}/fedra-test-probe'", check=False)
    assert above.returncode != 0 and "Permission denied" in above.stderr, above
    if limits:
        own = machine.sh(f"cat /proc/{pid}/cgroup").stdout
        assert any(line.startswith("0::") and line.endswith("/fedra-client") for line in own.splitlines()), own
        boxes = machine.sh(f"ls -d '{group}'/fedra-sandbox-{pid}-*").stdout.split()
        assert len(boxes) == 1, boxes
        assert machine.sh(f"cat '{boxes[0]}/pids.max'").stdout.strip() == "512"
        assert machine.sh(f"cat '{boxes[0]}/cgroup.procs'").stdout.split(), "the sandbox's group is empty"


@pytest.mark.slow
def test_units_run_a_job_and_the_server_resumes_after_sigkill(tmp_path: Path) -> None:
    reason = unavailable_reason()
    if reason is not None:
        print(f"skipped: {reason}")
        pytest.skip(reason)
    binds = [REPO, *(Path(p) for p in interpreter_paths(FEDRA) if not Path(p).is_relative_to(REPO))]
    with booted(tmp_path / "machine", binds=binds) as machine:
        root = machine.root
        etc = root / "etc" / "fedra"
        etc.mkdir(parents=True)
        # the client trains in a bubblewrap sandbox: the machine gets the host's bwrap (the cached root
        # filesystem has no bubblewrap package, and nothing can be installed without a network)
        bwrap = shutil.which("bwrap")
        if bwrap is not None:
            shutil.copy(bwrap, root / "usr" / "bin" / "bwrap")
        # the machine's cgroup v2 tree: /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified (hybrid)
        unified = "/sys/fs/cgroup" if machine.sh("test -e /sys/fs/cgroup/cgroup.controllers",
                                                 check=False).returncode == 0 else "/sys/fs/cgroup/unified"
        offered = machine.sh(f"cat {unified}/cgroup.controllers", check=False).stdout.split()
        limits_delegable = set(offered) >= LIMIT_CONTROLLERS
        # where the limits can be delegated, the sandbox must be on, limits and all (see the module notes)
        mode = "on" if limits_delegable and bwrap is not None else "auto"
        (etc / "job.toml").write_text(JOB + f'[sandbox]\nenabled = "{mode}"\n')
        shutil.copy(TASK, etc / "task.py")
        certificates(etc / "federation")
        job = load_job(etc / "job.toml")
        options = SystemdOptions(
            fedra=FEDRA, job="/etc/fedra/job.toml", certs="/etc/fedra/federation", bind="127.0.0.1:7788",
            server="127.0.0.1:7788", wait_clients=120, watchdog_sec=3,
            clients=tuple(ClientData(name, partition=i) for i, name in enumerate(CLIENTS)),
            read_only_paths=home_paths(interpreter_paths(FEDRA)))
        files = render_systemd(job, options)
        units = {k: v for k, v in files.items() if k.endswith(".service")}
        write_units(root / "etc" / "systemd" / "system", units)
        write_units(etc, {k: v for k, v in files.items() if k.endswith(".env")})
        (root / "etc" / "sysusers.d").mkdir(exist_ok=True)
        write_units(root / "etc" / "sysusers.d", {"fedra.conf": files["fedra.sysusers.conf"]})
        for name in CLIENTS:
            # each task sleeps a little, so that the server can be killed in the middle of the job
            with (etc / f"client-{name}.env").open("a") as f:
                f.write("FEDRA_TEST_SLOW=0.4\n")

        machine.sh("systemd-sysusers && chown -R root:fedra /etc/fedra && chmod -R g+rX,o-rwx /etc/fedra "
                   "&& systemctl daemon-reload")
        # Type=notify: `systemctl start` returns once the server said READY=1 (it listens)
        machine.sh("systemctl start fedra-server.service", timeout=300)
        assert machine.prop("fedra-server.service", "ActiveState") == "active"
        first_pid = machine.prop("fedra-server.service", "MainPID")
        machine.sh("systemctl start " + " ".join(client_unit_name(n) for n in CLIENTS), timeout=300)

        metrics = root / "var" / "lib" / "fedra" / "nspawn" / "metrics.jsonl"
        statuses: set[str] = set()

        def two_rounds() -> bool:
            # the server's STATUS= per round (sd_notify), as systemctl shows it
            statuses.add(machine.prop("fedra-server.service", "StatusText"))
            return len(rounds_done(metrics)) >= 2

        wait_for("round 2", two_rounds, 180, machine)
        if bwrap is not None:
            # the client unit's hardening leaves room for training's sandbox: each client's worker runs in
            # bubblewrap (a warm process, alive as long as its client serves)
            comms = machine.sh("cat /proc/[0-9]*/comm 2>/dev/null", check=False).stdout.split()
            assert comms.count("bwrap") >= len(CLIENTS), sorted(comms)
        for name in CLIENTS:
            check_delegation(machine, client_unit_name(name), unified, limits=mode == "on")
        machine.sh("systemctl kill --kill-whom=main -s KILL fedra-server.service")
        killed_after = len(rounds_done(metrics))

        def restarted() -> bool:
            pid = machine.prop("fedra-server.service", "MainPID")
            return (machine.prop("fedra-server.service", "NRestarts") == "1" and pid not in ("0", first_pid)
                    and machine.prop("fedra-server.service", "ActiveState") == "active")

        wait_for("systemd to restart the server", restarted, 120, machine)

        def finished() -> bool:
            return machine.prop("fedra-server.service", "ActiveState") in ("inactive", "failed")

        wait_for("the job to complete", finished, 240, machine)
        server_journal = machine.sh("journalctl --no-pager -o cat -u fedra-server", check=False).stdout
        assert machine.prop("fedra-server.service", "Result") == "success", server_journal
        # one restart, the one after the SIGKILL: the watchdog (3 s) never fired, so the processes fed it
        assert server_journal.count("Scheduled restart job") == 1, server_journal
        assert "watchdog" not in server_journal.lower(), server_journal
        assert any(re.fullmatch(rf"round \d+ of {ROUNDS} done: 3 updates", s) for s in statuses), statuses
        # resumed from its checkpoint: every round once, in order, the killed one's successors included
        assert rounds_done(metrics) == list(range(1, ROUNDS + 1)), server_journal
        assert 2 <= killed_after < ROUNDS
        run_dir = metrics.parent
        assert (run_dir / "model.safetensors").stat().st_size > 0
        for name in CLIENTS:
            unit = client_unit_name(name)
            wait_for(f"{unit} to finish", lambda u=unit: machine.prop(u, "ActiveState") == "inactive", 60, machine)
            journal = machine.sh(f"journalctl --no-pager -o cat -u {unit}", check=False).stdout
            assert machine.prop(unit, "Result") == "success", journal
            if bwrap is not None:
                assert "WITHOUT a sandbox" not in journal, journal
            if mode == "on":
                assert "WITHOUT resource limits" not in journal, journal
            elif bwrap is not None:
                # a hybrid host: the client says why training has no limits of its own, and what to do
                assert "sandboxed WITHOUT resource limits" in journal, journal
                assert "systemd delegates only cgroup v2" in journal, journal
        print(f"server killed after round {killed_after}, restarted by systemd, completed {ROUNDS} rounds")
