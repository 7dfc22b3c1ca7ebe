"""Simulation: many virtual clients on one machine, through the same round driver as deployments."""

from fedra.simulation._engine import (
    build_privacy,
    build_quarantine,
    build_secure,
    build_strategy,
    client_ids,
    driver_config,
    load_data,
    noise_seed,
    simulate,
)
from fedra.simulation._pool import ProcessPoolTransport, WorkerApp

__all__ = [
    "ProcessPoolTransport",
    "WorkerApp",
    "build_privacy",
    "build_quarantine",
    "build_secure",
    "build_strategy",
    "client_ids",
    "driver_config",
    "load_data",
    "noise_seed",
    "simulate",
]
