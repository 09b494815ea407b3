"""An instance's local ports on a joined host: chosen by that host, on the address it advertises
(the controller cannot probe another machine's ports); on a local host they stay as placed."""

from __future__ import annotations

import logging

from actors import ActorError, AskTimeout
from fabric.controller.messages import ControllerError
from fabric.controller.model import Deployment, Instance, topology_changed
from fabric.controller.state import ControllerState
from fabric.host.messages import ChoosePorts

log = logging.getLogger("fabric.controller")

#: how long a joined host may take to choose ports
PORTS_TIMEOUT = 30.0


async def choose_ports(state: ControllerState, dep: Deployment, inst: Instance, generation: int) -> None:
    """Before an instance boots: on a joined host, its ports are the host's choice on the host's
    address (the ones proposed are kept when free there); on a local host, 127.0.0.1.

    Raises:
        HostUnavailable: the joined host is gone.
        ControllerError: the host could not give it ports.
    """
    address = state.hosts.address_of(inst.host_id)
    if not address:
        if inst.address:
            inst.address = ""
        return
    role = dep.generations[generation].role(inst.role)
    protocols: dict[str, str] = {}
    fixed: dict[str, list[tuple[int, int]]] = {}
    for ep in role.input_endpoints:
        protocols[ep.name] = "udp" if ep.protocol == "udp" else "tcp"
    for xep in role.instance_input_endpoints:
        protocols[xep.name] = "udp" if xep.protocol == "udp" else "tcp"
    for iep in role.internal_endpoints:
        protocols[iep.name] = "udp" if iep.protocol == "udp" else "tcp"
        spans = [(p, p) for p in iep.fixed_ports] + [(r.min, r.max) for r in iep.fixed_port_ranges]
        if spans:
            fixed[iep.name] = spans
    ask = ChoosePorts(instance_id=inst.vm, proposed=dict(inst.ports), protocols=protocols, fixed=fixed)
    try:
        chosen = await state.hosts.ask(inst.host_id, ask, PORTS_TIMEOUT)
    except (ActorError, AskTimeout) as exc:
        message = exc.message if isinstance(exc, ActorError) else str(exc)
        raise ControllerError(
            "InternalError", f"host {inst.host_id} gave {inst.id} no ports: {message}", 500
        ) from None
    if inst.address != address:
        inst.address = address
    if chosen != inst.ports:
        log.info("%s: host %s chose ports %s", inst.id, inst.host_id, chosen)
        inst.ports = dict(chosen)
        topology_changed()
        await state.save_instance(inst)
