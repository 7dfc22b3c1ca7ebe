"""``fedra monitor --port PORT``: account a federation's traffic and report anomalies, with eBPF or ss.

Runs :class:`fedra.linux._monitor.Monitor` for ``--duration`` seconds (or until Ctrl-C), prints each
anomaly as it is raised and a table of bytes per connection at the end; ``--jsonl`` keeps events and
counters as JSON lines.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedra.cli import exit_codes

__all__ = ["monitor"]


def monitor(
    port: Annotated[list[int], typer.Option(
        "--port", "-p", show_default=False, help="A federation port (the server's); repeat for several.")],
    expected_update_bytes: Annotated[int | None, typer.Option(
        "--expected-update-bytes", show_default=False,
        help="Size of one model update; turns on the exfiltration rule.")] = None,
    k: Annotated[float, typer.Option(
        "--k", help="Upload on a connection above k x the expected update size is an exfiltration.")] = 3.0,
    overhead_bytes: Annotated[int, typer.Option(
        "--overhead-bytes", help="Allowance per connection and round for protocol overhead.")] = 65536,
    duration: Annotated[float | None, typer.Option(
        "--duration", "-d", show_default=False, help="Seconds to run (default: until Ctrl-C).")] = None,
    interval: Annotated[float, typer.Option(
        "--interval", help="Seconds between counter snapshots; storm thresholds are per interval.")] = 1.0,
    admit: Annotated[list[str] | None, typer.Option(
        "--admit", show_default=False,
        help="An address allowed to connect to the federation port; repeat. Unset: the rule is off.")] = None,
    watch_cgroup: Annotated[list[Path] | None, typer.Option(
        "--watch-cgroup", show_default=False,
        help="A cgroup v2 group (directory, or path under the cgroup2 mount) whose processes must not use "
             "the network; repeat.")] = None,
    retransmit_threshold: Annotated[int, typer.Option(
        "--retransmit-threshold", help="Retransmits per connection per interval that make a storm.")] = 20,
    reset_threshold: Annotated[int, typer.Option(
        "--reset-threshold", help="Resets on federation ports per interval that make a storm.")] = 10,
    jsonl: Annotated[Path | None, typer.Option(
        "--jsonl", show_default=False, help="Append events and counters to this file (JSON lines).")] = None,
    fallback: Annotated[bool, typer.Option(
        "--fallback", help="Poll ss (sock_diag) instead of running bpftrace.")] = False,
    netns: Annotated[str | None, typer.Option(
        "--netns", show_default=False, help="With the ss fallback: the named network namespace to watch.")] = None,
) -> None:
    """Account bytes per federation connection and per cgroup, and report traffic anomalies."""
    console = Console()
    with exit_codes():
        # Imported here so `fedra --help` stays fast.
        from fedra.linux import Monitor, MonitorRules, TrafficEvent, cgroup_id

        rules = MonitorRules(ports=tuple(port), expected_update_bytes=expected_update_bytes, k=k,
                             overhead_bytes=overhead_bytes,
                             retransmit_threshold=retransmit_threshold, reset_threshold=reset_threshold,
                             admitted=None if admit is None else frozenset(admit),
                             watch_cgroups=frozenset(cgroup_id(p) for p in watch_cgroup or ()))

        def show(ev: TrafficEvent) -> None:
            who = f"pid {ev.pid} {ev.comm}" if ev.pid else "-"
            console.print(f"[bold red]{ev.kind}[/] {ev.detail} ({who}, peer {ev.peer or '-'})",
                          soft_wrap=True, highlight=False)

        mon = Monitor(rules, backend="ss" if fallback else "auto", interval=interval, on_event=[show],
                      jsonl=jsonl, netns=netns)
        mon.start()
        try:
            why = f" (eBPF not available: {mon.fallback_reason})" if mon.fallback_reason else ""
            console.print(f"monitoring ports {', '.join(map(str, port))} with {mon.backend}{why}",
                          soft_wrap=True, highlight=False)
            end = None if duration is None else time.monotonic() + duration
            try:
                while end is None or time.monotonic() < end:
                    time.sleep(0.1 if end is None else max(0.0, min(0.1, end - time.monotonic())))
            except KeyboardInterrupt:
                pass
        finally:
            mon.stop()
        counters = mon.counters()
        table = Table(title=f"federation connections ({mon.backend})")
        for col in ("client", "server port", "upload bytes", "download bytes"):
            table.add_column(col)
        for c in counters["connections"]:
            table.add_row(c["client"], str(c["server_port"]), str(c["upload"]), str(c["download"]))
        console.print(table)
        console.print(f"{len(mon.events)} anomal{'y' if len(mon.events) == 1 else 'ies'}", highlight=False)
