"""The fabric's live process tree as chaos sees it: the scan and signals of fabric.host.processes
(the same code a joined host's agent runs on its machine), and each process as the API shows it."""

from __future__ import annotations

from fabric.controller.chaos.messages import ProcessView
from fabric.host.processes import (
    ROLE_HOSTS,
    Proc,
    ProcessMap,
    actor_name,
    fabric_pid,
    same_process,
    scan,
    still_alive,
)

__all__ = [
    "ROLE_HOSTS",
    "Proc",
    "ProcessMap",
    "actor_name",
    "fabric_pid",
    "same_process",
    "scan",
    "still_alive",
    "view",
]


def view(p: Proc, instance_ids: dict[str, str] | None = None) -> ProcessView:
    """As the API shows it (``instance_ids`` maps VM names to instance ids)."""
    instance = (instance_ids or {}).get(p.instance, p.instance)
    return ProcessView(
        pid=p.pid,
        ppid=p.ppid,
        pgid=p.pgid,
        name=p.name,
        started=p.started,
        place=p.place,
        instance=instance,
        host=p.host,
    )
