"""A real network: a server and three clients, each in its own network namespace, joined by a bridge.

One client's link is rate-limited (tc tbf), another loses 10% of its packets (nftables); the job still
completes with the model of a loopback run. A client whose link is cut mid-round is dropped for that
round and takes part again once its link is back. Needs root, iproute2 and nftables; skips otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("grpc")

from net_helpers import FEDRA, write_job

from fedra.job import load_job
from fedra.simulation import simulate

SERVER_IP = "10.231.7.1"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "tc", "nft"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install iproute2 nftables)"
    probe = subprocess.run(["ip", "netns", "add", f"fdprobe{os.getpid()}"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create network namespaces here: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", f"fdprobe{os.getpid()}"], check=False)
    return None


_WHY_NOT = _missing()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_WHY_NOT is not None, reason=_WHY_NOT or "")]


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


class Net:
    """A bridge namespace and one namespace per host; everything is deleted on exit."""

    def __init__(self, hosts: list[str]) -> None:
        tag = f"fd{os.getpid() % 100000}"
        self.br = f"{tag}br"
        self.ns = {h: f"{tag}{h}" for h in hosts}
        self.port = {h: f"p{tag}{h}"[:15] for h in hosts}
        self.ip: dict[str, str] = {}

    def __enter__(self) -> Net:
        sh("ip", "netns", "add", self.br)
        sh("ip", "-n", self.br, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.br, "link", "set", "br0", "up")
        for i, (host, ns) in enumerate(self.ns.items()):
            ip = SERVER_IP if host == "srv" else f"10.231.7.{10 + i}"
            self.ip[host] = ip
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", "veth0", "netns", ns, "type", "veth", "peer", "name", self.port[host],
               "netns", self.br)
            sh("ip", "-n", self.br, "link", "set", self.port[host], "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "veth0")
            sh("ip", "-n", ns, "link", "set", "veth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in [*self.ns.values(), self.br]:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)

    def run(self, host: str, cmd: list[str], **kw: object) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", self.ns[host], *cmd], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]

    def link(self, host: str, up: bool) -> None:
        sh("ip", "-n", self.ns[host], "link", "set", "veth0", "up" if up else "down")


@pytest.fixture
def net() -> Iterator[Net]:
    with Net(["srv", "c0", "c1", "c2"]) as n:
        yield n


def start(net: Net, job: Path, tmp: Path, env: dict[str, str] | None = None
          ) -> tuple[subprocess.Popen[str], list[subprocess.Popen[str]]]:
    server = net.run("srv", [FEDRA, "server", str(job), "--bind", f"{SERVER_IP}:7788", "--insecure",
                             "--quiet", "--wait-clients", "60", "--run-dir", str(tmp / "run")])
    clients = [net.run(f"c{i}", [FEDRA, "client", "--server", f"{SERVER_IP}:7788", "--job", str(job),
                                 "--name", f"client-{i:04d}", "--partition", str(i), "--insecure"],
                       env={**os.environ, **(env or {})})
               for i in range(3)]
    return server, clients


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.communicate()  # reaps it and closes its pipes


def test_shaped_and_lossy_links_reach_the_loopback_model(net: Net, tmp_path: Path) -> None:
    job = write_job(tmp_path, name="netns", rounds=4, seed=9, round_timeout=60)
    # client 1: 2 Mbit/s towards it (shaped on its bridge port); client 2: 10 % of its packets dropped
    sh("ip", "netns", "exec", net.br, "tc", "qdisc", "add", "dev", net.port["c1"], "root", "tbf",
       "rate", "2mbit", "burst", "32kbit", "latency", "400ms")
    nft = ("ip", "netns", "exec", net.ns["c2"], "nft")
    sh(*nft, "add", "table", "inet", "chaos")
    sh(*nft, "add", "chain", "inet", "chaos", "out", "{ type filter hook output priority 0; }")
    sh(*nft, "add", "rule", "inet", "chaos", "out", "ip", "daddr", SERVER_IP, "numgen", "random", "mod", "100",
       "<", "10", "counter", "drop")
    server, clients = start(net, job, tmp_path)
    try:
        out, err = server.communicate(timeout=240)
        assert server.returncode == 0, err
        for c in clients:
            c.communicate(timeout=60)
            assert c.returncode == 0
    finally:
        stop([server, *clients])
    drops = subprocess.run(["ip", "netns", "exec", net.ns["c2"], "nft", "list", "table", "inet", "chaos"],
                           capture_output=True, text=True).stdout
    dropped = int(re.search(r"counter packets (\d+)", drops).group(1))  # type: ignore[union-attr]
    assert dropped > 0, "the lossy link dropped nothing: the test did not test loss"
    digest = re.search(r"model digest ([0-9a-f]{64})", out)
    assert digest is not None and digest.group(1) == simulate(load_job(job)).digest


def test_a_client_whose_link_is_cut_mid_round_is_dropped_then_rejoins(net: Net, tmp_path: Path) -> None:
    job = write_job(tmp_path, name="netns", rounds=6, seed=9, round_timeout=4)
    server, clients = start(net, job, tmp_path, env={"FEDRA_TEST_SLOW": "0.5"})
    metrics = tmp_path / "run" / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text().strip()):
            time.sleep(0.05)
        time.sleep(0.1)  # round 2 is under way: client 0 is training
        net.link("c0", up=False)
        time.sleep(6)  # longer than the round deadline
        net.link("c0", up=True)
        _, err = server.communicate(timeout=240)
        assert server.returncode == 0, err
        for c in clients:
            c.communicate(timeout=60)
    finally:
        stop([server, *clients])
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    accepted = [r["accepted"] for r in rows]
    assert len(rows) == 6 and all(r["completed"] for r in rows), rows
    cut = [i for i, a in enumerate(accepted) if a < 3]
    assert cut, f"no round lost client 0: {accepted}"
    assert accepted[-1] == 3 and max(cut) < len(accepted) - 1, f"client 0 did not rejoin: {accepted}"
