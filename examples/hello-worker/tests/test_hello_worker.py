"""The hello-worker role, tested two ways: in this process on virtual time (milliseconds), and
deployed on a real fabric. Run with ``python -m pytest examples/hello-worker``."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from fabric.controller.chaos.messages import Inject, Kill, Target

SERVICE = Path(__file__).resolve().parents[1]


async def test_it_greets_every_five_seconds_until_stopped(role_harness, autojump_clock, capsys) -> None:
    # The role's real ServiceDefinition.csdef and ServiceConfiguration.Local.cscfg.
    async with role_harness.from_service(SERVICE, "HelloWorker") as role:
        assert await role.start()
        await anyio.sleep(12)  # virtual seconds: the test takes milliseconds
        assert await role.stop()
    assert capsys.readouterr().out.splitlines() == [
        "HelloWorker_IN_0: starting",
        "Hello from a worker role (beat 1)",
        "Hello from a worker role (beat 2)",
        "Hello from a worker role (beat 3)",
        "HelloWorker_IN_0: stopping",
    ]


async def test_the_greeting_comes_from_the_configuration(role_harness, autojump_clock, capsys) -> None:
    async with role_harness(SERVICE / "HelloWorker", role="HelloWorker", settings={"Greeting": "Hi"}) as role:
        assert await role.start()
    assert "Hi (beat 1)" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_on_the_fabric_a_killed_role_host_is_restarted(fabric_service) -> None:
    async with fabric_service(SERVICE) as service:
        [instance] = await service.instances()
        assert (instance.id, instance.status, instance.restarts) == ("HelloWorker_IN_0", "ReadyRole", 0)
        kill = Kill(target=Target(place="role-host", instance="HelloWorker_IN_0"))
        await service.chaos.inject(Inject(fault=kill))
        with anyio.fail_after(60):
            while True:  # the fabric's view, polled: it restarts the role host and reports Ready
                [instance] = await service.instances()
                if instance.restarts >= 1 and instance.status == "ReadyRole":
                    break
                await anyio.sleep(0.1)
