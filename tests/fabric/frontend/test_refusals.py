"""A controller's refusal keeps its type, code and HTTP status across a process link, up to
FFE's answer; a controller's bug stays a bug (an ActorError with its text)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors import ActorError, Ref, open_system
from fabric.controller import ControllerError, ask
from fabric.controller.messages import GetDeployment, ListDeployments
from fabric.frontend.api import ApiError
from fabric.frontend.ffe import Ffe, Forward, Pool

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def controller_and_ffe(tmp_path: Path) -> AsyncIterator[tuple[Ref, Ref]]:
    """A refusing controller in a child process, and an FFE in this one with it as its pool."""
    async with open_system() as system:
        controller = await system.spawn_process(
            "tests.fabric.frontend.refusing_controller:RefusingController", name="controller"
        )
        ffe = await system.spawn(lambda: Ffe([Pool("p1", controller)], tmp_path), name="FFE")
        yield controller, ffe


async def test_a_refusal_from_a_child_process_is_a_controller_error_with_its_code(
    controller_and_ffe: tuple[Ref, Ref],
) -> None:
    controller, _ = controller_and_ffe
    with pytest.raises(ControllerError) as caught:
        await ask(controller, GetDeployment(service="demo", slot="staging"))
    refusal = caught.value
    assert (refusal.code, refusal.status, refusal.message) == (
        "ResourceNotFound",
        404,
        "no deployment in demo/staging",
    )


async def test_ffe_refuses_with_the_code_and_status_from_a_child_process(
    controller_and_ffe: tuple[Ref, Ref],
) -> None:
    _, ffe = controller_and_ffe
    with pytest.raises(ActorError) as caught:
        await ffe.ask(Forward(pool="p1", command=GetDeployment(service="demo", slot="staging")))
    refusal = caught.value.caused_by(ApiError)
    assert refusal is not None
    assert (refusal.status, refusal.code, refusal.message) == (
        404,
        "ResourceNotFound",
        "no deployment in demo/staging",
    )


async def test_a_controller_bug_stays_an_actor_error_with_its_text(
    controller_and_ffe: tuple[Ref, Ref],
) -> None:
    controller, ffe = controller_and_ffe
    with pytest.raises(ActorError, match="a bug in the controller") as caught:
        await ask(controller, ListDeployments())
    assert caught.value.type_name == "KeyError"
    with pytest.raises(ActorError, match="a bug in the controller") as caught:
        await ffe.ask(Forward(pool="p1", command=ListDeployments()))
    assert caught.value.caused_by(ApiError) is None  # RDFE answers 500, not a refusal
