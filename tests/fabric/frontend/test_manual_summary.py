"""After `fabric upgrade --mode Manual` (and each `fabric walk`), the line an operation ends with
says which update domain to walk next, so the user is not left waiting on an upgrade that waits
for them."""

from __future__ import annotations

from fabric.commands.client_view import summary
from fabric.controller.messages import DeploymentView, InstanceView


def view(next_domain: int) -> DeploymentView:
    instances = [InstanceView(id=f"W_IN_{n}", role="W", status="ReadyRole") for n in range(2)]
    return DeploymentView(
        service="s", slot="production", name="d", id="0f", status="Running", instances=instances,
        upgrade_domain_count=2, next_upgrade_domain=next_domain,
    )  # fmt: skip


def test_a_manual_upgrade_says_which_domain_to_walk_next() -> None:
    assert summary(view(1)) == (
        "s/production d: Running, 2/2 instances ready; manual upgrade: walk update domain 1 next (`fabric walk 1`)"
    )


def test_without_a_manual_upgrade_the_line_is_as_before() -> None:
    assert summary(view(-1)) == "s/production d: Running, 2/2 instances ready"
