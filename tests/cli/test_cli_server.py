"""`fedra server` refuses what only a simulation can do, before it listens."""

from __future__ import annotations

import sys
from pathlib import Path

from fedra.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "transport"))
from net_helpers import write_job


def test_a_job_with_simulated_attackers_is_refused_by_the_server(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    job = write_job(tmp_path, name="attacked", rounds=1, seed=0)
    job.write_text(job.read_text() + '\n[attack]\nkind = "sign_flip"\nfraction = 0.2\n')
    result = cli("server", job, "--insecure", "--bind", "127.0.0.1:0", "--run-dir", tmp_path / "run")
    assert result.exit_code == ConfigError.exit_code
    assert "attacks are simulated by `fedra simulate` only" in result.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()



def test_a_port_grpc_would_wrap_stops_the_server_before_it_starts(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    job = write_job(tmp_path, name="badport", rounds=1, seed=0)
    result = cli("server", job, "--insecure", "--bind", "127.0.0.1:99999", "--run-dir", tmp_path / "run")
    assert result.exit_code == ConfigError.exit_code
    assert "--bind: expected HOST:PORT with a port from 0 to 65535" in result.stderr
    assert "the port 99999 is out of range" in result.stderr
    assert not (tmp_path / "run").exists()  # nothing was started or written


def test_a_server_address_without_a_port_stops_the_client_at_once(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    job = write_job(tmp_path, name="noport", rounds=1, seed=0)
    result = cli("client", "--server", "127.0.0.1", "--job", job, "--name", "c", "--insecure",
                 "--partition", "0", "--sandbox", "off")
    assert result.exit_code == ConfigError.exit_code
    assert "--server: expected HOST:PORT with a port from 1 to 65535" in result.stderr
    assert "there is no port" in result.stderr
