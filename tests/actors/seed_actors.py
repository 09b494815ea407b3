"""Actors for the seed tests: a VM-like first process forked from a seeding template, its
bootstrapper-like child made from its seed, and that child's template adopted from its own."""

from __future__ import annotations

import os
from typing import Any

import msgspec

from actors import Actor, ProcessOptions, Ref, Sandbox, Template
from tests.actors.sample_actors import Pid


class StartChild(msgspec.Struct, frozen=True, tag=True):
    """Spawn a Child from this process's seed, handing it ``secret``; answer its pid, the
    seed's pid and whether a second seed was offered."""

    secret: str


class StartTemplate(msgspec.Struct, frozen=True, tag=True):
    """Adopt this process's seed as a template running as ``user`` in an empty sandbox, fork a
    Recorder from it; answer the template's pid and the Recorder's."""

    user: int


class First(Actor):
    """A VM's first process: holds a secret it was given after its birth."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.child: Ref | None = None

    async def receive(self, message: Any) -> Any:
        match message:
            case Pid():
                return os.getpid()
            case StartChild(secret=secret):
                seed = Template.seeded("Child")
                assert seed is not None, "no seed planted"
                self.child = await self.spawn_process(
                    "tests.actors.seed_actors:Child",
                    name="Child",
                    args=(secret,),
                    options=ProcessOptions(template=seed),
                )
                return {
                    "child": self.child.pid,
                    "seed": seed.pid,
                    "forks": seed.forks,
                    "again": Template.seeded("Child") is not None,
                }
            case StartTemplate():
                assert self.child is not None
                return await self.child.ask(message, timeout=30)
        return await super().receive(message)


class Child(Actor):
    """A bootstrapper: holds a secret given after its birth; adopts its seed as a template."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.template: Template | None = None

    async def receive(self, message: Any) -> Any:
        match message:
            case StartTemplate(user=user):
                self.template = await Template.adopt(
                    "SeedTemplate", run_as=user, sandbox=Sandbox(), preload=[]
                )
                assert self.template is not None, "no seed planted"
                options = ProcessOptions(run_as=user, sandbox=Sandbox(), template=self.template)
                limited = await self.spawn_process(
                    "tests.actors.sample_actors:Recorder", name="R", options=options
                )
                return {
                    "template": self.template.pid,
                    "limited": await limited.ask(Pid()),
                    "forks": self.template.forks,
                }
        return await super().receive(message)
