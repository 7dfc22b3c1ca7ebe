"""Checks every exchange applies to a reply before looking inside it, shared by the driver's rounds."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from fedra.runtime._events import RoundRecord
from fedra.transport.base import Reply, Task

__all__ = ["screen", "verdict"]

log = logging.getLogger("fedra.driver")


def verdict(reply: Reply, why: str | None) -> None:
    """Tell the transport (and through it the client) whether a reply was taken, and why not."""
    if reply.ack is not None:
        try:
            reply.ack(why)
        except Exception:
            log.exception("transport's ack callback failed; continuing")


def screen(reply: Reply, tasks: Sequence[Task], index: Mapping[str, int], done: Sequence[bool],
           rec: RoundRecord, rnd: int) -> int | None:
    """The index of the task ``reply`` answers, or ``None`` when it must be refused unread.

    Refused (recorded, logged, and told to the client): a reply to a task that was not sent to that
    client, and a second reply to a task already settled.
    """
    i = index.get(reply.task_id)
    if i is None or tasks[i].client_id != reply.client_id:
        rec.fail("reply to a task not sent to that client")
        log.warning("round %d: client %r replied to task %r, which was not sent to it; rejected",
                    rnd, reply.client_id, reply.task_id)
        verdict(reply, f"task {reply.task_id} was not sent to {reply.client_id}")
        return None
    if done[i]:
        rec.fail("duplicate reply")
        log.warning("round %d: duplicate reply from %r for task %r; rejected", rnd, reply.client_id, reply.task_id)
        verdict(reply, f"duplicate reply to task {reply.task_id}")
        return None
    return i
