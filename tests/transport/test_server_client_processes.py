"""``fedra server`` and ``fedra client`` as separate processes on loopback: the job completes, the clients
exit when the server says it is finished, and the model equals the simulation's with the same seed."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("grpc")

from net_helpers import FEDRA, free_port, write_job

from fedra.job import load_job
from fedra.simulation import simulate


@pytest.mark.slow
@pytest.mark.parametrize("security", ["mtls", "insecure"])
def test_server_and_three_client_processes_complete_a_job(tmp_path: Path, security: str) -> None:
    job = write_job(tmp_path, name="net", rounds=3, seed=11)
    port = free_port()
    if security == "mtls":
        from fedra.pki import init_ca, issue

        fed = tmp_path / "federation"
        init_ca(fed)
        issue(fed, "server", "server", sans=["127.0.0.1", "localhost"])
        for i in range(3):
            issue(fed, "client", f"client-{i:04d}")
        how = ["--certs", str(fed)]
    else:
        how = ["--insecure"]
    server = subprocess.Popen([FEDRA, "server", str(job), "--bind", f"127.0.0.1:{port}", *how,
                               "--wait-clients", "60", "--output", str(tmp_path / "runs"), "--quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clients = [subprocess.Popen([FEDRA, "client", "--server", f"127.0.0.1:{port}", "--job", str(job),
                                 "--name", f"client-{i:04d}", "--partition", str(i), *how],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(3)]
    try:
        out, err = server.communicate(timeout=120)
        assert server.returncode == 0, err
        for i, c in enumerate(clients):
            cout, cerr = c.communicate(timeout=30)
            assert c.returncode == 0, cerr
            assert f"client-{i:04d}: served 3 tasks" in cout
    finally:
        for p in (server, *clients):
            if p.poll() is None:
                p.kill()
                p.communicate()  # reaps it and closes its pipes
    digest = re.search(r"model digest ([0-9a-f]{64})", out)
    assert digest is not None, out
    assert ("--insecure" in err) == (security == "insecure")  # the loud warning, only when insecure
    expected = simulate(load_job(job))
    assert digest.group(1) == expected.digest
    (run,) = (tmp_path / "runs").iterdir()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    assert (run / "model.safetensors").exists() and (run / "state.db").exists()
