"""One page of a deployment's view: at most ``limit`` instances, in role then index order,
after the instance a cursor names (`fabric status` and the API page large deployments)."""

from __future__ import annotations

import bisect

from fabric.controller.messages import ControllerError, DeploymentPage
from fabric.controller.model import Deployment
from fabric.controller.rotation import Rotation

#: instances one page holds at most
MAX_PAGE = 1000
#: a cursor's length at most (an instance id: a role name and an index)
MAX_CURSOR = 300
_MARK = "_IN_"


def cursor_key(cursor: str) -> tuple[str, int]:
    """The (role, index) a cursor (an instance id, ``<Role>_IN_<n>``) names.

    Raises:
        ControllerError: BadRequest for anything else.
    """
    role, mark, index = cursor.rpartition(_MARK)
    digits = index.isascii() and index.isdigit() and len(index) <= 9  # int() refuses other digits
    if len(cursor) > MAX_CURSOR or not mark or not role or not digits:
        raise ControllerError(
            "BadRequest", "cursor must be the next_cursor of a previous page (an instance id, Role_IN_n)"
        )
    return role, int(index)


def deployment_page(dep: Deployment, rotation: Rotation, limit: int, after: str = "") -> DeploymentPage:
    """The deployment's view with the page of instances after ``after`` ("": the first page).

    Raises:
        ControllerError: BadRequest for a limit outside 1..MAX_PAGE or a malformed cursor.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise ControllerError("BadRequest", f"limit must be a whole number from 1 to {MAX_PAGE}")
    ordered = dep.ordered()
    start = bisect.bisect_right(ordered, cursor_key(after), key=lambda i: (i.role, i.index)) if after else 0
    chosen = ordered[start : start + limit]
    ids = {i.id for i in chosen}
    # Load-balanced endpoints, and the forwarded ports of this page's instances only.
    endpoints = [e for e in rotation.endpoints(dep) if "." not in e.name or e.name.split(".", 1)[1] in ids]
    view = rotation.with_passive_state(dep, dep.view(endpoints, instances=chosen))
    more = start + limit < len(ordered)
    return DeploymentPage(deployment=view, total=len(ordered), next_cursor=chosen[-1].id if more else "")
