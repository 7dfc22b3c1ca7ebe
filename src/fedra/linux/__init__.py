"""Linux features: sandboxes for training (namespaces, seccomp), resource limits (cgroups v1 and v2),
and accounting of federation traffic (eBPF, with a sock_diag fallback).

This layer knows nothing of rounds or tasks: it starts a command in a sandbox and limits it, and it
counts bytes per connection and per cgroup. The client runtime (:mod:`fedra.runtime`) runs its training
worker with it; ``fedra monitor`` and ``fedra server --monitor`` run the :class:`Monitor`.
"""

from fedra.linux._bpf import bpf_unavailable_reason, cgroup_id
from fedra.linux._cgroups import Cgroup, CgroupError, Limits, cgroup_unavailable_reason
from fedra.linux._malloc import fix_mmap_threshold, limit_arenas, set_trim_threshold
from fedra.linux._monitor import Monitor
from fedra.linux._monitor_types import EVENT_KINDS, MonitorRules, TrafficEvent
from fedra.linux._sandbox import (
    SANDBOX_FD_ENV,
    SandboxConfig,
    SandboxError,
    SandboxProcess,
    bwrap_argv,
    sandbox_unavailable_reason,
)
from fedra.linux._seccomp import DENIED_SYSCALLS, install_seccomp_filter, seccomp_unavailable_reason

__all__ = [
    "DENIED_SYSCALLS",
    "EVENT_KINDS",
    "SANDBOX_FD_ENV",
    "Cgroup",
    "CgroupError",
    "Limits",
    "Monitor",
    "MonitorRules",
    "SandboxConfig",
    "SandboxError",
    "SandboxProcess",
    "TrafficEvent",
    "bpf_unavailable_reason",
    "bwrap_argv",
    "cgroup_id",
    "cgroup_unavailable_reason",
    "fix_mmap_threshold",
    "install_seccomp_filter",
    "limit_arenas",
    "sandbox_unavailable_reason",
    "seccomp_unavailable_reason",
    "set_trim_threshold",
]
