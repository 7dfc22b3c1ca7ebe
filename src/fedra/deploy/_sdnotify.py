"""sd_notify(3) without libsystemd: readiness, status and a watchdog fed only while the main loop lives.

systemd starts a ``Type=notify`` service with ``$NOTIFY_SOCKET`` (a path, or ``@name`` for Linux's abstract
namespace) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC``. The protocol is one ``AF_UNIX`` datagram per
message of ``KEY=VALUE`` lines, so it needs no library. Without ``$NOTIFY_SOCKET`` (a shell, a test, a
container without systemd) every call is a no-op.

The watchdog is the point of care. A thread that pinged ``WATCHDOG=1`` on a timer would keep a deadlocked
server alive forever. Here the thread pings only while the *main loop's promise* holds: the loop calls
:meth:`Notifier.beat` with the longest it may legitimately take before it beats again (a round's deadline,
a wait for clients), and once that promise has passed the pings stop, systemd's watchdog fires, and
``Restart=on-failure`` brings the process back to resume from its checkpoint.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, final

if TYPE_CHECKING:
    from fedra.runtime import RoundRecord, RunInfo

__all__ = ["Connection", "Notifier", "NotifyObserver", "WatchedConnection"]

log = logging.getLogger("fedra.deploy")

_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _address(value: str) -> str | bytes:
    """The socket address ``$NOTIFY_SOCKET`` names: ``@name`` is abstract (a leading NUL byte)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


@final
class Notifier:
    """Talks to the service manager that started this process, if one did.

    Parameters
    ----------
    environ
        Where to read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (default: ``os.environ``,
        from which they are then removed, so that children, such as a training sandbox, do not inherit
        the right to speak for this service).
    clock
        Monotonic seconds (tests pass a fake clock).

    Use it as a context manager: :meth:`ready` starts the watchdog thread, leaving the ``with`` block
    sends ``STOPPING=1`` and stops it.
    """

    def __init__(self, environ: dict[str, str] | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        env = os.environ if environ is None else environ
        socket_name = env.get("NOTIFY_SOCKET", "")
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if environ is None:
            for key in _ENV:
                os.environ.pop(key, None)
        self._clock = clock
        self._address: str | bytes | None = _address(socket_name) if socket_name else None
        # WATCHDOG_PID names the process the watchdog is meant for: a child that inherited the variables
        # must not feed its parent's watchdog (sd_watchdog_enabled(3) does the same check)
        for_us = not pid or pid == str(os.getpid())
        self.watchdog_interval: float | None = (
            int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and for_us and self._address else None)
        self._deadline = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """Whether a service manager is listening (``$NOTIFY_SOCKET`` was set)."""
        return self._address is not None

    def send(self, **fields: str | int) -> bool:
        """Send one message, e.g. ``send(STATUS="round 3")``; ``False`` when there is nobody to tell."""
        if self._address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self._address)
        except OSError as exc:
            # the service manager is gone or busy: losing a notification must not kill the job
            log.warning("sd_notify %s: %s", sorted(fields), exc)
            return False
        return True

    def status(self, text: str) -> None:
        """Show ``text`` as the service's status line (``systemctl status``)."""
        self.send(STATUS=text)

    def beat(self, within: float) -> None:
        """The main loop is alive and will beat again within ``within`` seconds (else: let it die)."""
        with self._lock:
            self._deadline = max(self._deadline, self._clock() + within) if within > 0 else self._clock()

    def alive(self) -> bool:
        """Whether the main loop's last promise still holds (what the watchdog thread checks)."""
        with self._lock:
            return self._clock() < self._deadline

    def ready(self, status: str, *, within: float) -> None:
        """Tell the manager the service is up (``READY=1``) and start feeding the watchdog.

        ``within`` is the first promise: how long until the main loop beats next.
        """
        self.beat(within)
        self.send(READY=1, STATUS=status, MAINPID=os.getpid())
        if self.watchdog_interval is not None and self._thread is None:
            self._thread = threading.Thread(target=self._feed, name="sd-watchdog", daemon=True)
            self._thread.start()

    def ping(self) -> bool:
        """One ``WATCHDOG=1``, only if the main loop is alive; whether it was sent."""
        return self.alive() and self.send(WATCHDOG=1)

    def _feed(self) -> None:
        assert self.watchdog_interval is not None
        # half the interval, as sd_watchdog_enabled(3) advises: one late ping is not yet a missed one
        period = self.watchdog_interval / 2
        lapsed = False
        while not self._stop.wait(period):
            fed = self.ping()
            if not fed and not lapsed:
                log.warning("the main loop missed its heartbeat: no longer feeding the systemd watchdog")
            lapsed = not fed

    def close(self) -> None:
        """Say ``STOPPING=1`` and stop the watchdog thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.send(STOPPING=1)

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


_T_co = TypeVar("_T_co", covariant=True)


class Connection(Protocol[_T_co]):
    """A client's connection to its server: what ``fedra.runtime.serve`` pulls tasks from."""

    def pull(self, wait: float) -> _T_co: ...

    @property
    def push(self) -> Callable[..., Any]: ...

    def close(self) -> None: ...


_T = TypeVar("_T")


@final
class WatchedConnection(Generic[_T]):
    """A client connection whose every ``pull`` is a heartbeat of the client's task loop.

    The loop pulls, runs the task, pushes, and pulls again, so the time between two pulls is at most
    one ``pull`` wait plus one task and its push: ``within`` (what the job allows a round). A task that
    hangs longer stops the heartbeat, and systemd restarts the client.
    """

    def __init__(self, inner: Connection[_T], notifier: Notifier, *, within: float) -> None:
        self._inner = inner
        self._notifier = notifier
        self._within = within
        self._reached: bool | None = None

    def pull(self, wait: float) -> _T:
        """Pull through the wrapped connection, beating before and after."""
        self._notifier.beat(self._within + wait)
        try:
            pulled = self._inner.pull(wait)
        except Exception:
            self._notifier.beat(self._within + wait)
            if self._reached is not False:
                self._reached = False
                self._notifier.status("cannot reach the server; retrying")
            raise
        self._notifier.beat(self._within + wait)
        if self._reached is not True:
            self._reached = True
            self._notifier.status("connected to the server; serving tasks")
        return pulled

    @property
    def push(self) -> Callable[..., Any]:
        """The wrapped connection's ``push``."""
        return self._inner.push

    def close(self) -> None:
        """Close the wrapped connection."""
        self._inner.close()


@final
class NotifyObserver:
    """A round driver observer that reports each round to systemd and renews the loop's heartbeat.

    Every round end promises the next within ``within`` seconds (one whole round, worst case: see
    :func:`~fedra.deploy.heartbeat_window`); a driver stuck longer than that stops feeding the watchdog.
    """

    def __init__(self, notifier: Notifier, *, within: float) -> None:
        self._notifier = notifier
        self._within = within
        self._rounds = 0

    def on_run_start(self, info: RunInfo) -> None:
        """Beat, and show where the run starts (a resumed run starts after its checkpoint)."""
        self._rounds = info.rounds
        self._notifier.beat(self._within)
        self._notifier.status(f"round {info.start_round + 1} of {info.rounds}"
                              + (f" (resumed after round {info.start_round})" if info.start_round else ""))

    def on_round_end(self, record: RoundRecord) -> None:
        """Beat, and show the round just done."""
        self._notifier.beat(self._within)
        self._notifier.status(f"round {record.round} of {self._rounds} done: {record.accepted} updates"
                              + ("" if record.completed else " (not completed)"))

    def on_run_end(self, records: list[RoundRecord]) -> None:
        """Beat for the saving of the outputs."""
        self._notifier.beat(self._within)
        self._notifier.status(f"finished {self._rounds} rounds; saving the model")
