"""Listing deployments without building every instance's view: FFE's pool probe and a hosted
service's delete check ask for summaries (counts by role), a hosted service's detail for its
own deployments only, so their cost does not grow with every instance of the pool."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.controller import ask, model
from fabric.controller.messages import InstanceView, ListDeployments, SummarizeDeployments
from fabric.frontend.ffe import Ffe, ListAll, Pool, SummarizeAll
from tests.fabric.controller.controller_kit import (
    ServiceFactory,
    create,
    free_port,
    open_controller,
    settings,
)
from tests.fabric.controller.controller_standin import World

pytestmark = pytest.mark.timeout(60)


async def test_summaries_and_one_services_listing_build_no_other_instance_view(
    service: ServiceFactory, world: World, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_controller(state_dir, world, settings(max_hosts=8)) as ref:
        await create(ref, service())  # demo: Front 2, Back 1
        await create(ref, service(port=free_port()), service="other", name="other-1")
        built: list[str] = []
        real = model.instance_view

        def counted(inst: model.Instance) -> InstanceView:
            built.append(inst.id)
            return real(inst)

        monkeypatch.setattr(model, "instance_view", counted)

        summaries = await ask(ref, SummarizeDeployments())
        assert [(s.service, s.slot, s.name, s.roles) for s in summaries] == [
            ("demo", "production", "demo-1", {"Front": 2, "Back": 1}),
            ("other", "production", "other-1", {"Front": 2, "Back": 1}),
        ]
        assert [s.service for s in await ask(ref, SummarizeDeployments(service="other"))] == ["other"]
        assert built == []

        # FFE: the pool probe counts instances from the summaries; a service's deployments only.
        ffe = Ffe([Pool("local", ref)], state_dir)
        assert await ffe._loads([ffe.pools["local"]]) == [6]
        assert [s.name for s in (await ffe.receive(SummarizeAll(service="demo")))["local"]] == ["demo-1"]
        assert built == []
        views = (await ffe.receive(ListAll(service="other")))["local"]
        assert [v.name for v in views] == ["other-1"] and len(views[0].instances) == 3
        assert len(built) == 3  # that deployment's instances only

        # Without a service: every deployment, every instance (the API's full listing).
        assert [v.service for v in await ask(ref, ListDeployments())] == ["demo", "other"]
        assert len(built) == 9
