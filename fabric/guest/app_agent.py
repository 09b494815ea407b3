"""WaAppAgent (seed C2): the VM's first process. It installs and starts the guest agent, can
replace it with a new version without restarting the role, and owns the bootstrapper process.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from actors import Actor, ActorDead, ProcessOptions, Ref, Template
from fabric.guest.agent import CurrentBootstrapper, GuestAgent, StartBootstrapper
from fabric.guest.messages import (
    ApplyEnvironment,
    GuestConfig,
    GuestStatus,
    Heartbeat,
    HeartbeatReply,
    InstanceStatus,
    RecycleRole,
    UpdateGuestAgent,
)
from fabric.guest.provision import disk_of
from fabric.logs import LogFile


class AppAgent(Actor):
    """The first process of a VM; its parent is the host agent (or a standalone runner)."""

    def __init__(self, config: GuestConfig) -> None:
        self.config = config
        self.disk = disk_of(config)
        self.agent: Ref | None = None
        self.agent_target = config.agent
        self.bootstrapper: Ref | None = None
        self.answer: Callable[[Heartbeat], HeartbeatReply] | None = None

    async def on_start(self) -> None:
        """Open the logs and install the guest agent."""
        self.disk.logs.mkdir(parents=True, exist_ok=True)
        self.runtime_log = LogFile(self.disk.app_agent_runtime_log)
        self.status_log = LogFile(self.disk.app_agent_log)
        self.runtime_log.write(f"WaAppAgent started for {self.config.instance_id} (pid {os.getpid()})")
        await self._install(self.agent_target)

    async def _install(self, target: str) -> None:
        agent_class = _load(target)
        agent = agent_class(self.config, self.ref, self.runtime_log, self.status_log)
        self.agent = await self.spawn(lambda: agent, name="GuestAgent")
        # The guest agent answers heartbeats, called here rather than asked through its
        # mailbox: the VM's one wakeup every guest_heartbeat_interval, without a task hop
        # (a quarter of that wakeup's CPU). A guest agent that is gone answers none.
        self.answer = agent.answer_heartbeat
        self.start_soon(self._forget_when_gone, self.agent, agent.answer_heartbeat)
        self.agent_target = target
        self.runtime_log.write(f"installed and started guest agent {target}")

    async def receive(self, message: Any) -> Any:
        """Route: heartbeats and changes down to the guest agent, status up to the host."""
        assert self.agent is not None
        match message:
            case Heartbeat():
                if self.answer is None:
                    raise ActorDead("the guest agent is gone: no heartbeat answered")
                return self.answer(message)
            case ApplyEnvironment():
                # Answered from a task of its own: a role's changing handler may take up to
                # status_check_timeout, and heartbeats must be answered meanwhile.
                self.answer_later(self.agent.ask(message, timeout=None))
            case InstanceStatus() | RecycleRole():
                await self.agent.tell(message)
            case GuestStatus():
                if self.parent is not None:
                    await self.parent.tell(message)
            case StartBootstrapper(config=config):
                if self.bootstrapper is None:
                    settings = config.settings
                    self.bootstrapper = await self.spawn_process(
                        "fabric.guest.bootstrapper:HostBootstrapper",
                        name="WaHostBootstrapper",
                        options=ProcessOptions(
                            log_path=self.disk.diagnostic_store / "WaHostBootstrapper.out.log",
                            # Pinged about once per status check interval, as it checks
                            # its role, rather than every link ping interval: a ping is due
                            # from half its interval on and rides on a heartbeat's wakeup
                            # here, but wakes the bootstrapper, whose answer wakes us again.
                            ping_interval=max(
                                settings.link_ping_interval, 2 * settings.status_check_interval
                            ),
                            ping_timeout=settings.link_ping_timeout,
                            # Its own stop covers the role's on_stop, which may take that long.
                            stop_timeout=settings.on_stop_timeout + settings.process_stop_timeout,
                            # The seed this VM planted at its birth, when it has one: the
                            # bootstrapper and its role host template are then copies of the
                            # host's template (see actors/_zygote.py), not of this process.
                            template=Template.seeded("WaHostBootstrapper"),
                        ),
                        args=(config,),
                    )
                return self.bootstrapper
            case CurrentBootstrapper():
                return self.bootstrapper
            case UpdateGuestAgent(agent=target):
                _load(target)  # refuse a version that cannot even load before stopping the old one
                self.runtime_log.write(f"updating the guest agent from {self.agent_target} to {target}")
                await self.agent.stop()
                await self._install(target)
                return target
            case _:
                return await super().receive(message)
        return None

    async def _forget_when_gone(self, agent: Ref, answer: Callable[[Heartbeat], HeartbeatReply]) -> None:
        await agent.join()
        if self.answer == answer:  # not replaced by a newer version meanwhile
            self.answer = None

    async def on_stop(self) -> None:
        """The VM stops: the bootstrapper and the agent stop first (they are our children)."""
        self.runtime_log.write(f"WaAppAgent stopping for {self.config.instance_id}")
        self.runtime_log.close()
        self.status_log.close()


def _load(target: str) -> type[GuestAgent]:
    module_name, _, name = target.partition(":")
    obj = getattr(importlib.import_module(module_name), name)
    if not (isinstance(obj, type) and issubclass(obj, GuestAgent)):
        raise TypeError(f"{target} is not a GuestAgent")
    return obj
