"""Finding what a fault aims at in the controller's live picture: the deployment, an instance
(named or drawn at random), a host, a load-balanced endpoint; and the whole TargetMap.

Refusals are ControllerErrors, so the API answers them as 4xx with a message saying what to
change.
"""

from __future__ import annotations

import os
import random

import anyio

from fabric.controller.chaos.messages import (
    EndpointTargets,
    HostTargets,
    InstanceTargets,
    Target,
    TargetMap,
)
from fabric.controller.chaos.tree import Proc, ProcessMap, view
from fabric.controller.messages import ControllerError
from fabric.controller.model import Deployment, Instance
from fabric.controller.state import ControllerState
from fabric.network import LoadBalancer


def refuse(message: str, code: str = "BadRequest", status: int = 400) -> ControllerError:
    """A request chaos cannot carry out, as the API will answer it."""
    return ControllerError(code, message, status)


def deployment(state: ControllerState, service: str | None, slot: str) -> Deployment:
    """The deployment a target names: its service's slot, or the pool's only deployment.

    Raises:
        ControllerError: none, or several and no service named.
    """
    if service is not None:
        found = state.find(service.lower(), slot)
        if found is None:
            raise refuse(
                f"hosted service {service!r} has no {slot} deployment in pool {state.pool}",
                "ResourceNotFound",
                404,
            )
        return found
    live = [d for d in state.deployments.values() if d.goal != "Deleting"]
    if len(live) == 1:
        return live[0]
    if not live:
        raise refuse(f"pool {state.pool} runs no deployment: deploy one first", "ResourceNotFound", 404)
    names = ", ".join(sorted(f"{d.service}/{d.slot}" for d in live))
    raise refuse(f"several deployments ({names}): name the service of the target")


def instance(dep: Deployment, target: Target) -> Instance:
    """The instance a target names, or one drawn at random (seeded) among the role's, or all.

    Raises:
        ControllerError: no such instance, or nothing to draw from.
    """
    if target.instance is not None and not target.random:
        return dep.find(target.instance)
    if not target.random:
        raise refuse(f"name an instance (e.g. {_example(dep)}) or ask for a random one of a role")
    candidates = dep.by_role(target.role) if target.role else dep.ordered()
    if not candidates:
        roles = ", ".join(r.name for r in dep.current.definition.roles)
        raise refuse(f"deployment {dep.name} has no instance of role {target.role!r}; its roles are {roles}")
    return random.Random(target.seed).choice(sorted(candidates, key=lambda i: i.id))


def host_id(state: ControllerState, dep: Deployment, target: Target) -> str:
    """The host a target names, or the host of the instance it names.

    Raises:
        ControllerError: an unknown or dead host, or an instance without one (it is moving).
    """
    if target.host is not None:
        host = state.hosts.hosts.get(target.host)
        if host is None or not host.alive:
            live = ", ".join(h.id for h in state.hosts.live()) or "none"
            raise refuse(f"no live host {target.host!r}; the live hosts are {live}", "ResourceNotFound", 404)
        return host.id
    inst = instance(dep, target)
    if not inst.host_id:
        raise refuse(f"instance {inst.id} has no host now (it is moving); try again", "ConflictError", 409)
    return inst.host_id


def balancer(state: ControllerState, dep: Deployment, endpoint: str | None) -> tuple[str, LoadBalancer]:
    """``Role/Endpoint`` and its load balancer (an endpoint name alone is enough when unique).

    Raises:
        ControllerError: no such load-balanced endpoint.
    """
    names = [f"{role}/{ep}" for role, ep in lb_endpoints(dep)]
    wanted = endpoint or (names[0] if len(names) == 1 else "")
    for name in names:
        role, ep = name.split("/")
        if wanted in (name, ep):
            lb = state.rotation.balancer(dep.id, role, ep)
            if lb is not None:
                return name, lb
    raise refuse(
        f"deployment {dep.name} has no load-balanced endpoint {endpoint!r}; "
        f"name one of: {', '.join(names) or '(none)'}",
        "ResourceNotFound",
        404,
    )


def lb_endpoints(dep: Deployment) -> list[tuple[str, str]]:
    """(role, endpoint) of every load-balanced input endpoint of the deployment."""
    return [(r.name, ep.name) for r in dep.current.definition.roles for ep in r.input_endpoints]


def in_rotation(state: ControllerState, dep: Deployment, inst: Instance) -> bool | None:
    """Whether new connections of the role's load-balanced endpoints may reach the instance
    (None when the role has none)."""
    found: bool | None = None
    for role, ep in lb_endpoints(dep):
        if role != inst.role:
            continue
        lb = state.rotation.balancer(dep.id, role, ep)
        if lb is not None:
            found = bool(found) or inst.vm in lb.rotation()
    return found


def _host_pid(local: int | None, agent: Proc | None) -> int:
    """A host agent's pid: a local one's process, a joined one's as its machine listed it."""
    return local or (agent.pid if agent is not None else 0)


def _example(dep: Deployment) -> str:
    first = next(iter(dep.ordered()), None)
    return first.id if first is not None else "Role_IN_0"


def target_map(state: ControllerState, dep: Deployment, procs: ProcessMap) -> TargetMap:
    """Everything a fault can hit in ``dep`` now."""
    ids = {i.vm: i.id for i in dep.ordered()}
    instances = []
    for inst in dep.ordered():
        found: dict[str, int] = {}
        for place in ("guest-agent", "bootstrapper", "role-host", "web-worker"):
            at = procs.of_vm(inst.vm, place)
            if at:
                found[place] = at[0].pid
        instances.append(
            InstanceTargets(
                id=inst.id,
                vm=inst.vm,
                role=inst.role,
                status=inst.status,
                host=inst.host_id,
                rotation=in_rotation(state, dep, inst),
                processes=found,
            )
        )
    hosts = [
        HostTargets(
            id=h.id,
            pid=_host_pid(h.ref.pid if h.ref is not None else None, procs.host_agent(h.id)),
            alive=h.alive,
            instances=[i.id for i in dep.ordered() if i.host_id == h.id],
        )
        for h in state.hosts.live()
    ]
    endpoints = []
    for role, ep in lb_endpoints(dep):
        lb = state.rotation.balancer(dep.id, role, ep)
        if lb is None:
            continue
        endpoints.append(
            EndpointTargets(
                name=f"{role}/{ep}",
                protocol=lb.spec.protocol,
                host=lb.address[0],
                port=lb.address[1],
                rotation=[ids.get(vm, vm) for vm in lb.rotation()],
                toxics=sorted(lb.toxics()),
            )
        )
    return TargetMap(
        pool=state.pool,
        service=dep.service,
        slot=dep.slot,
        deployment_id=dep.id,
        now=anyio.current_time(),
        instances=instances,
        hosts=hosts,
        endpoints=endpoints,
        processes=[view(p, ids) for p in procs.procs],
        fabric_pid=os.getpid(),
    )
