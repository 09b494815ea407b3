"""Role instance statuses: the Service Management API's own values."""

from __future__ import annotations

from typing import Final, Literal, get_args

RoleStatus = Literal[
    "CreatingVM",
    "StartingVM",
    "CreatingRole",
    "StartingRole",
    "ReadyRole",
    "BusyRole",
    "StoppingRole",
    "StoppingVM",
    "StoppedVM",
    "RestartingRole",
    "CyclingRole",
    "FailedStartingRole",
    "FailedStartingVM",
    "UnresponsiveRole",
    "RoleStateUnknown",
]

ALL_STATUSES: Final[tuple[RoleStatus, ...]] = get_args(RoleStatus)

#: The statuses in which an instance takes load-balanced traffic.
IN_ROTATION: Final[frozenset[RoleStatus]] = frozenset({"ReadyRole"})


def in_rotation(status: RoleStatus, *, ignore_role_instance_status: bool = False) -> bool:
    """Whether an instance in this status gets new load-balanced connections."""
    if ignore_role_instance_status:
        return status in ("ReadyRole", "BusyRole", "UnresponsiveRole")
    return status in IN_ROTATION
