"""One VM without the control plane: boot a role instance from a service and watch its status.

``python -m fabric.guest SERVICE --role NAME [--index N]`` (or ``fabric guest ...``) plays the
host agent's part for a single guest: it starts the VM's first process, heartbeats it, prints
every status change, and on Ctrl-C stops the VM and leaves no process behind.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio

from actors import Actor, ActorSystem, Ref
from fabric.guest.instance import build_guest_config, instance_endpoints, instance_id
from fabric.guest.messages import GuestConfig, GuestStatus, Heartbeat, HeartbeatReply
from fabric.guest.provision import guest_options  # how the host agent runs a VM, too
from fabric.model.definition import RoleDefinition
from fabric.model.service import Service
from fabric.settings import Settings
from roles.protocol import InstanceInfo


def free_ports(role: RoleDefinition, host: str = "127.0.0.1") -> dict[str, int]:
    """A free local port for each endpoint of a role (the kernel's choice)."""
    ports: dict[str, int] = {}
    names = [e.name for e in role.input_endpoints]
    names += [e.name for e in role.internal_endpoints] + [e.name for e in role.instance_input_endpoints]
    for name in names:
        with socket.socket() as probe:
            probe.bind((host, 0))
            ports[name] = probe.getsockname()[1]
    return ports


def guest_config_for(
    service: Service,
    role: str,
    index: int,
    state_dir: Path,
    settings: Settings,
    deployment_id: str | None = None,
) -> GuestConfig:
    """The GuestConfig of one instance booted alone (its topology is itself)."""
    definition = service.definition.role(role)
    ports = free_ports(definition)
    me = InstanceInfo(
        id=instance_id(role, index),
        role_name=role,
        update_domain=0,
        fault_domain=0,
        endpoints=instance_endpoints(definition, ports),
    )
    return build_guest_config(
        service,
        role,
        index,
        deployment_id=deployment_id or uuid.uuid4().hex,
        state_dir=state_dir,
        ports=ports,
        topology={role: [me]},
        settings=settings,
    )


class StatusWatcher(Actor):
    """Receives the guest's pushed status and hands it to a callback."""

    def __init__(self, on_status: Callable[[GuestStatus], None]) -> None:
        self.on_status = on_status

    async def receive(self, message: Any) -> Any:
        """GuestStatus pushes from the VM."""
        if isinstance(message, GuestStatus):
            self.on_status(message)
        return None


async def boot_vm(system: ActorSystem, config: GuestConfig, parent: Ref, settings: Settings) -> Ref:
    """Start a VM's first process (the AppAgent) and return its Ref."""
    return await system.spawn_process(
        "fabric.guest.app_agent:AppAgent",
        name=f"guest:{config.instance_id}",
        args=(config,),
        parent=parent,
        options=guest_options(config, settings),
    )


async def heartbeat(vm: Ref, settings: Settings, on_reply: Callable[[HeartbeatReply | None], None]) -> None:
    """Heartbeat a guest for ever, reporting each reply (None: no reply in time)."""
    seq = 0
    while True:
        seq += 1
        try:
            reply = await vm.ask(Heartbeat(seq), timeout=settings.guest_heartbeat_interval * 4)
        except Exception:
            reply = None
        on_reply(reply)
        await anyio.sleep(settings.guest_heartbeat_interval)


def describe(status: GuestStatus, endpoints: Mapping[str, Any]) -> str:
    """One line for a status change."""
    line = f"{status.instance_id}: {status.status.status}"
    if status.status.detail:
        line += f" - {status.status.detail}"
    if status.status.status == "ReadyRole" and endpoints:
        line += "  [" + ", ".join(f"{n} {e.protocol}://{e.host}:{e.port}" for n, e in endpoints.items()) + "]"
    return line
