"""`fabric status` says plainly when roles run without isolation (the fabric is not root)."""

from __future__ import annotations

from rich.console import Console

from fabric.commands.client_view import render_status
from fabric.controller.messages import DeploymentView, InstanceView

NOT_ISOLATED = "roles run as the fabric's own user without isolation: the fabric is not root"


def shown(*uids: int) -> str:
    instances = [
        InstanceView(id=f"W_IN_{n}", role="W", status="ReadyRole", uid=uid) for n, uid in enumerate(uids)
    ]
    view = DeploymentView(
        service="s", slot="production", name="d", id="0f", status="Running", instances=instances
    )
    console = Console(width=200, record=True)
    render_status(console, [view])
    return console.export_text()


def test_status_says_when_roles_run_as_the_fabrics_own_user() -> None:
    assert NOT_ISOLATED in shown(0)


def test_status_says_nothing_of_it_when_every_vm_has_its_own_account() -> None:
    assert NOT_ISOLATED not in shown(61184, 61185)
