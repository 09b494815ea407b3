"""The load balancers of every deployment, kept in step with instance status.

Each InputEndpoint of a deployment gets a load balancer on the public address (its port, or
the next free one); each InstanceInputEndpoint gets a one-instance forwarder per instance on a
port of its range. Backends follow the instances: an instance is in rotation while ReadyRole
(and not Busy), or whatever its status with ignoreRoleInstanceStatus; an instance whose update
domain is upgrading, or a suspended deployment, has no backend at all (open connections drain).
An instance that refuses connections although Ready is "refusing" until a trial connect passes
(the load balancer's passive health check); views show it (InstanceView.refusing).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import msgspec

from fabric.controller.messages import ControllerError, DeploymentView, PublicEndpoint
from fabric.controller.model import Deployment, Instance
from fabric.controller.store import PublicPortRecord
from fabric.model.definition import InputEndpoint, RoleDefinition, ServiceDefinition
from fabric.model.status import in_rotation
from fabric.network import (
    Backend,
    EndpointSpec,
    LoadBalancer,
    NetworkError,
    ProbeSpec,
    serve_load_balancer,
)

log = logging.getLogger("fabric.controller")

LOCALHOST = "127.0.0.1"
#: (role, endpoint, instance vm or "" for a load-balanced endpoint)
Key = tuple[str, str, str]
Starter = Callable[..., Awaitable[Any]]


@dataclass
class Balancer:
    """One open load balancer, the public port record it holds, and the backends it was given
    (by instance vm), so one instance's change is compared and passed on alone."""

    lb: LoadBalancer
    record: PublicPortRecord
    given: dict[str, Backend] = field(default_factory=dict)

    def give(self, backends: list[Backend]) -> None:
        """Replace the load balancer's backends."""
        self.given = {b.instance_id: b for b in backends}
        self.lb.set_backends(backends)

    def give_one(self, vm: str, backend: Backend | None) -> None:
        """Change one instance's backend (None: out of the pool): a change of status alone is an
        update of that one backend; an address, probe or membership change replaces the pool."""
        old = self.given.get(vm)
        if old == backend:
            return
        if old is not None and backend is not None and _same_but_status(old, backend):
            self.given[vm] = backend
            self.lb.update(vm, ready=backend.ready, busy=backend.busy)
            return
        if backend is None:
            del self.given[vm]
        else:
            self.given[vm] = backend
        self.lb.set_backends(list(self.given.values()))

    @property
    def key(self) -> Key:
        """Its place in a deployment."""
        return (self.record.role, self.record.endpoint, self.record.instance)


def probe_spec(definition: ServiceDefinition, ep: InputEndpoint) -> ProbeSpec | None:
    """The LoadBalancerProbe an input endpoint names, as the load balancer takes it."""
    if ep.load_balancer_probe is None:
        return None
    for p in definition.load_balancer_probes:
        if p.name == ep.load_balancer_probe:
            # port 0: each backend says where it answers (instances share one address).
            return ProbeSpec(
                protocol=p.protocol,
                port=0,
                path=p.path or "/",
                interval=float(p.interval_in_seconds),
                timeout=float(p.timeout_in_seconds),
            )
    return None


def probe_port(
    definition: ServiceDefinition, role: RoleDefinition, ep: InputEndpoint, inst: Instance
) -> int | None:
    """Where one instance answers its endpoint's probe: the probe's port names an endpoint of
    the role (as the definition saw the instance's own ports), which has its own local port here."""
    probe = next((p for p in definition.load_balancer_probes if p.name == ep.load_balancer_probe), None)
    if probe is None or probe.port is None:
        return None
    for other in role.input_endpoints:
        if probe.port in (other.port, other.fixed_local_port):
            return inst.ports.get(other.name, probe.port)
    for iep in role.internal_endpoints:
        if probe.port == iep.port:
            return inst.ports.get(iep.name, probe.port)
    return probe.port


class Rotation:
    """Every load balancer of a controller, by deployment.

    Args:
        start: starts a long-running task and returns what it passes to task_status.started
            (the controller actor's ``start``), so balancers live in the actor's task group.
    """

    def __init__(self, start: Starter) -> None:
        self._start = start
        self._by_deployment: dict[str, dict[Key, Balancer]] = {}
        #: deployment id -> role -> the keys of its load-balanced endpoints (an instance's
        #: status change finds its balancers without looking at the others)
        self._role_keys: dict[str, dict[str, list[Key]]] = {}
        #: joined hosts whose instances are out of rotation (NotReady: fabric.controller.host_reach)
        self.hosts_out: set[str] = set()

    # -- opening and closing ------------------------------------------------------------------

    async def open(self, dep: Deployment, wanted: Mapping[Key, PublicPortRecord] | None = None) -> None:
        """Open every balancer of ``dep`` that is not open yet, on the ports in ``wanted`` when
        they are free (recovery), else the definition's (or the next free one).

        Raises:
            ControllerError: ConflictError when a port cannot be bound; whatever this call
                opened is closed again.
        """
        have = self._by_deployment.setdefault(dep.id, {})
        opened: list[Balancer] = []
        try:
            for role in dep.current.definition.roles:
                for ep in role.input_endpoints:
                    key = (role.name, ep.name, "")
                    if key not in have:
                        b = await self._open_input(dep, role, ep, (wanted or {}).get(key))
                        have[key] = b
                        opened.append(b)
            for inst in dep.ordered():
                for b in await self.open_instance(dep, inst, wanted):
                    opened.append(b)
        except BaseException:
            for b in opened:
                have.pop(b.key, None)
                await b.lb.aclose()
            raise
        self.refresh(dep)

    async def open_instance(
        self, dep: Deployment, inst: Instance, wanted: Mapping[Key, PublicPortRecord] | None = None
    ) -> list[Balancer]:
        """Open the instance input forwarders of one instance (a new instance, or recovery)."""
        have = self._by_deployment.setdefault(dep.id, {})
        role = dep.generations[inst.generation].role(inst.role)
        opened = []
        for xep in role.instance_input_endpoints:
            key = (inst.role, xep.name, inst.vm)
            if key in have:
                continue
            first, last = xep.allocate_public_port_from.min, xep.allocate_public_port_from.max
            requested = min(first + inst.index, last)
            previous = (wanted or {}).get(key)
            taken = {b.record.port for d in self._by_deployment.values() for b in d.values()}
            candidates = [requested, *range(first, last + 1)]
            if previous is not None:
                candidates.insert(0, previous.port)
            spec_name = f"{dep.service}/{inst.id}/{xep.name}"
            for port in dict.fromkeys(
                p for p in candidates if p not in taken or p == getattr(previous, "port", -1)
            ):
                spec = EndpointSpec(
                    name=spec_name, protocol=xep.protocol, public_port=port, ignore_role_instance_status=True
                )
                try:
                    lb = await self._serve(spec, keep_refused=True, port_attempts=1)
                except NetworkError:
                    continue
                record = PublicPortRecord(
                    deployment_id=dep.id,
                    role=inst.role,
                    endpoint=xep.name,
                    instance=inst.vm,
                    requested=requested,
                    port=lb.address[1],
                )
                have[key] = b = Balancer(lb, record)
                opened.append(b)
                break
            else:
                for b in opened:
                    have.pop(b.key, None)
                    await b.lb.aclose()
                raise ControllerError(
                    "ConflictError",
                    f"instance input endpoint {inst.role}/{xep.name}: every port of {first}-{last} is "
                    "in use; widen AllocatePublicPortFrom or free a port",
                    409,
                )
        return opened

    async def _open_input(
        self,
        dep: Deployment,
        role: RoleDefinition,
        ep: InputEndpoint,
        previous: PublicPortRecord | None,
        slot: str | None = None,
    ) -> Balancer:
        # Staging's address is not production's: from the port after the one asked for, even
        # while production is empty (a swap gives production's back to its deployment).
        staging = (slot or dep.slot) == "staging" and 0 < ep.port < 65535
        spec = EndpointSpec(
            name=f"{dep.service}/{role.name}/{ep.name}",
            protocol=ep.protocol,
            public_port=ep.port + 1 if staging else ep.port,
            probe=probe_spec(dep.current.definition, ep),
        )
        lb: LoadBalancer | None = None
        if previous is not None:
            # Back on the port it had, when that is still free (a restart keeps addresses).
            try:
                lb = await self._serve(_with_port(spec, previous.port), port_attempts=1)
            except NetworkError:
                lb = None
        if lb is None:
            try:
                lb = await self._serve(spec)
            except NetworkError as exc:
                raise ControllerError("ConflictError", str(exc), 409) from None
        record = PublicPortRecord(
            deployment_id=dep.id, role=role.name, endpoint=ep.name, requested=ep.port, port=lb.address[1]
        )
        return Balancer(lb, record)

    async def _serve(self, spec: EndpointSpec, **options: Any) -> LoadBalancer:
        lb: LoadBalancer = await self._start(
            partial(serve_load_balancer, spec, (), host=LOCALHOST, **options)
        )
        return lb

    async def close_instance(self, dep_id: str, vm: str) -> None:
        """Close the forwarders of an instance that is gone."""
        have = self._by_deployment.get(dep_id, {})
        for key in [k for k in have if k[2] == vm]:
            await have.pop(key).lb.aclose()

    async def close(self, dep_id: str) -> None:
        """Close every balancer of a deployment (its connections end)."""
        self._role_keys.pop(dep_id, None)
        for b in self._by_deployment.pop(dep_id, {}).values():
            await b.lb.aclose()

    # -- backends ---------------------------------------------------------------------------

    def refresh(self, dep: Deployment) -> None:
        """Give every balancer of ``dep`` its backends as the instances stand now."""
        have = self._by_deployment.get(dep.id, {})
        keys: dict[str, list[Key]] = {}
        for (role_name, endpoint, vm), b in have.items():
            if vm:
                inst = dep.instances.get(vm)
                b.give([x] if (x := _forwarded(dep, inst, endpoint)) is not None else [])
                continue
            keys.setdefault(role_name, []).append((role_name, endpoint, vm))
            found = [_backend(dep, inst, endpoint, self.hosts_out) for inst in dep.by_role(role_name)]
            b.give([x for x in found if x is not None])
        self._role_keys[dep.id] = keys

    def refresh_instance(self, dep: Deployment, inst: Instance) -> None:
        """Pass one instance's change (status, host, held out) to its own balancers only: the
        load-balanced endpoints of its role and its instance input forwarders."""
        have = self._by_deployment.get(dep.id)
        if not have:
            return
        keys = self._role_keys.get(dep.id)
        if keys is None:
            self.refresh(dep)
            return
        for key in keys.get(inst.role, ()):
            b = have.get(key)
            if b is not None:
                b.give_one(inst.vm, _backend(dep, inst, key[1], self.hosts_out))
        for xep in dep.generations[inst.generation].role(inst.role).instance_input_endpoints:
            b = have.get((inst.role, xep.name, inst.vm))
            if b is not None:
                b.give_one(inst.vm, _forwarded(dep, inst, xep.name))

    async def drain(self, vms: Collection[str], timeout: float) -> int:
        """Wait until no load balancer has an open connection to ``vms`` (taken out of
        rotation before), up to ``timeout`` seconds; then reset what is left. Every
        deployment's balancers are watched: after a VIP swap, another owns the old ones.
        Returns how many connections were reset."""
        balancers = [b.lb for have in self._by_deployment.values() for b in have.values()]
        with anyio.move_on_after(timeout):
            for lb in balancers:
                await lb.wait_drained(vms)
        cut = sum(lb.cut(vms) for lb in balancers)
        for lb in balancers:
            await lb.wait_cut()  # the kernel path's resets are done before the instance stops
        return cut

    # -- views and the VIP swap ---------------------------------------------------------------

    def records(self, dep_id: str) -> list[PublicPortRecord]:
        """The public ports a deployment holds, for the store."""
        return [b.record for b in self._by_deployment.get(dep_id, {}).values()]

    def endpoints(self, dep: Deployment) -> list[PublicEndpoint]:
        """PublicEndpoint views: load-balanced ones, then each instance's forwarded ports."""
        out = []
        for (role, endpoint, vm), b in sorted(self._by_deployment.get(dep.id, {}).items()):
            name = endpoint
            if vm:
                inst = dep.instances.get(vm)
                name = f"{endpoint}.{inst.id if inst else vm}"
            out.append(
                PublicEndpoint(
                    role=role,
                    name=name,
                    protocol=b.lb.spec.protocol,
                    host=b.lb.address[0],
                    port=b.record.port,
                    requested_port=b.record.requested if b.record.requested != b.record.port else 0,
                )
            )
        return out

    def refusing(self, dep: Deployment) -> dict[str, list[str]]:
        """The input endpoints whose load balancer finds each instance refusing, by instance id."""
        found: dict[str, list[str]] = {}
        for (_, endpoint, vm), b in sorted(self._by_deployment.get(dep.id, {}).items()):
            if vm:
                continue  # an instance's own forwarder keeps trying it: never refusing
            for refusing_vm in b.lb.refusing():
                inst = dep.instances.get(refusing_vm)
                found.setdefault(inst.id if inst else refusing_vm, []).append(endpoint)
        return found

    def with_passive_state(self, dep: Deployment, view: DeploymentView) -> DeploymentView:
        """``view`` with each instance's ``refusing`` endpoints (the load balancers' passive health)."""
        refusing = self.refusing(dep)
        if not refusing:
            return view
        instances = [
            msgspec.structs.replace(i, refusing=refusing[i.id]) if i.id in refusing else i
            for i in view.instances
        ]
        return msgspec.structs.replace(view, instances=instances)

    def address(self, dep_id: str, role: str, endpoint: str) -> tuple[str, int] | None:
        """Where a load-balanced endpoint listens, or None."""
        b = self._by_deployment.get(dep_id, {}).get((role, endpoint, ""))
        return None if b is None else b.lb.address

    def balancers(self) -> list[LoadBalancer]:
        """Every load balancer open now (input endpoints and instance input forwarders)."""
        return [b.lb for have in self._by_deployment.values() for b in have.values()]

    def balancer(self, dep_id: str, role: str, endpoint: str) -> LoadBalancer | None:
        """The load balancer of an input endpoint (for stats and toxics)."""
        b = self._by_deployment.get(dep_id, {}).get((role, endpoint, ""))
        return None if b is None else b.lb

    def swap_problem(self, a: Deployment, b: Deployment) -> str | None:
        """Why the two deployments cannot exchange their public ports, or None."""
        ka = {k: v for k, v in self._by_deployment.get(a.id, {}).items() if not k[2]}
        kb = {k: v for k, v in self._by_deployment.get(b.id, {}).items() if not k[2]}
        for key in sorted(set(ka) ^ set(kb)):
            has, lacks = (a, b) if key in ka else (b, a)
            return (
                f"{has.slot} has input endpoint {key[0]}/{key[1]} that {lacks.slot} lacks; "
                "give both deployments the same input endpoints to swap them"
            )
        for key in sorted(ka):
            pa, pb = ka[key].lb.spec.protocol, kb[key].lb.spec.protocol
            if (pa == "udp") != (pb == "udp"):
                return f"input endpoint {key[0]}/{key[1]} is {pa} in {a.slot} but {pb} in {b.slot}"
        return None

    async def swap(self, a: Deployment, b: Deployment) -> None:
        """VIP swap: the load-balanced endpoints of ``a`` and ``b`` change owners, ports and
        all, so clients of a port reach the other deployment without a reconnect gap."""
        ha, hb = self._by_deployment.setdefault(a.id, {}), self._by_deployment.setdefault(b.id, {})
        for key in [k for k in ha if not k[2]]:
            ba, bb = ha[key], hb[key]
            ha[key] = Balancer(bb.lb, _owned(bb.record, a.id))
            hb[key] = Balancer(ba.lb, _owned(ba.record, b.id))
        for dep, have in ((a, ha), (b, hb)):
            for key, bal in list(have.items()):
                if key[2]:
                    continue
                ep = next(e for e in dep.current.definition.role(key[0]).input_endpoints if e.name == key[1])
                probe = probe_spec(dep.current.definition, ep)
                if bal.lb.spec.probe != probe or bal.lb.spec.protocol != ep.protocol:
                    # The new owner's probe, taken in place: connections open through the port
                    # go on (a reopened balancer would cut them).
                    spec = bal.lb.spec
                    bal.lb.set_spec(
                        EndpointSpec(
                            name=spec.name, protocol=ep.protocol, public_port=spec.public_port, probe=probe
                        )
                    )
            self.refresh(dep)

    async def change_slot(self, dep: Deployment, to: str) -> None:
        """A VIP swap with the other slot empty: ``dep``'s load-balanced endpoints move to the
        address of slot ``to`` (as each slot keeps its VIP in Azure), so the one it leaves
        answers nothing. Each reopens before the old one closes: towards production on the port
        the definition asks for, towards staging on the next free one after it.

        Raises:
            ControllerError: ConflictError when no port can be bound (nothing changed).
        """
        have = self._by_deployment.setdefault(dep.id, {})
        keys = [k for k in have if not k[2]]
        fresh: dict[Key, Balancer] = {}
        try:
            for key in keys:
                role = dep.current.definition.role(key[0])
                ep = next(e for e in role.input_endpoints if e.name == key[1])
                fresh[key] = await self._open_input(dep, role, ep, None, slot=to)
        except BaseException:
            for b in fresh.values():
                await b.lb.aclose()
            raise
        old = [have[k] for k in keys]
        have.update(fresh)
        self.refresh(dep)
        for b in old:
            await b.lb.aclose()


def _backend(
    dep: Deployment, inst: Instance, endpoint: str, hosts_out: Collection[str] = ()
) -> Backend | None:
    """An instance behind a load-balanced endpoint, or None while it has no place there (also
    while its host is in ``hosts_out``, whatever its status or probe says)."""
    if dep.goal != "Running" or not inst.host_id or inst.held_out or inst.host_id in hosts_out:
        return None
    gen = dep.generations[inst.generation]
    role = gen.role(inst.role)
    ep = next((e for e in role.input_endpoints if e.name == endpoint), None)
    port = inst.ports.get(endpoint)
    if ep is None or port is None:
        return None
    ignore = ep.ignore_role_instance_status
    return Backend(
        instance_id=inst.vm,
        host=inst.address or LOCALHOST,
        port=port,
        ready=in_rotation(inst.status, ignore_role_instance_status=ignore),
        busy=inst.status == "BusyRole" and not ignore,
        probe_port=probe_port(gen.definition, role, ep, inst),
    )


def _forwarded(dep: Deployment, inst: Instance | None, endpoint: str) -> Backend | None:
    """The one backend of an instance input forwarder, or None while it serves nothing."""
    if inst is None or dep.goal != "Running" or not inst.host_id or inst.held_out:
        return None
    port = inst.ports.get(endpoint, 0)
    return Backend(inst.vm, inst.address or LOCALHOST, port) if port else None


def _same_but_status(a: Backend, b: Backend) -> bool:
    """Whether two backends of an instance differ at most in ready and busy."""
    return (a.host, a.port, a.probe_port) == (b.host, b.port, b.probe_port)


def _with_port(spec: EndpointSpec, port: int) -> EndpointSpec:
    return EndpointSpec(
        name=spec.name,
        protocol=spec.protocol,
        public_port=port,
        ignore_role_instance_status=spec.ignore_role_instance_status,
        probe=spec.probe,
    )


def _owned(record: PublicPortRecord, dep_id: str) -> PublicPortRecord:
    return PublicPortRecord(
        deployment_id=dep_id,
        role=record.role,
        endpoint=record.endpoint,
        instance=record.instance,
        requested=record.requested,
        port=record.port,
    )
