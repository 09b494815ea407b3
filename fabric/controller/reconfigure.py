"""Configuration changes: new setting values and instance counts for a running deployment.

Settings that change raise RoleEnvironment changing/changed in each instance of the role,
update domain by update domain as the mode says (see upgrade.py, which walks the domains).
A changed instance count adds instances (placed, given ports, started) or removes the
highest-numbered ones, and every other instance is told of the new topology at once.
"""

from __future__ import annotations

import logging

from fabric.controller import lifecycle, shared_folder
from fabric.controller.commands import Commands, each_instance, ensure_idle, start_all
from fabric.controller.generations import (
    drop_unused,
    load_generation,
    remove_unused_packages,
    write_config_off_loop,
)
from fabric.controller.messages import ChangeConfiguration, OperationAccepted
from fabric.controller.model import Deployment, Generation, Instance, vm_name
from fabric.controller.placement import PortAllocator, check_room, update_domain
from fabric.controller.state import ControllerState, instances_unchanged_on_failure, unchanged_on_failure
from fabric.controller.store import GenerationRecord, UpgradeRecord
from fabric.controller.upgrade import Upgrades, check_mode, domain_count, setting_changes
from fabric.model.definition import RoleDefinition
from roles.protocol import Change

log = logging.getLogger("fabric.controller")


class Reconfigure:
    """Runs configuration changes for one controller (walks go through ``upgrades``)."""

    def __init__(self, commands: Commands, upgrades: Upgrades) -> None:
        self.commands = commands
        self.upgrades = upgrades
        self.state: ControllerState = commands.state

    async def change_configuration(self, cmd: ChangeConfiguration) -> OperationAccepted:
        """Check a new configuration against the package; scale and notify in the background."""
        state = self.state
        dep = state.get(cmd.service, cmd.slot)
        check_mode(cmd.mode)
        ensure_idle(dep)
        old = dep.current
        number = max(dep.generations) + 1
        path = await write_config_off_loop(dep.folder, number, cmd.configuration, cmd.configuration_name)
        added: list[Instance] = []
        try:
            record = GenerationRecord(
                deployment_id=dep.id,
                number=number,
                packages=dict(old.record.packages),
                main=old.record.main,
                configuration=cmd.configuration,
                configuration_name=cmd.configuration_name,
            )
            new = await load_generation(record, dep.folder, state.settings.max_instances)
            ensure_idle(dep)  # nothing may have started while the files were read
            removed = await self._resize(dep, new, number, added)
            # Known (not current) while new instances get their ports and hosts.
            dep.generations[number] = new
            for inst in added:
                await state.rotation.open_instance(dep, inst)
            state.move_off_public_ports(added)
            new_hosts = self.commands.place(dep, added)
            settings_changed = any(setting_changes(old, new, r.name) for r in new.definition.roles)
            # One transaction: the new generation, the instances added and removed, and the
            # operation's record; when it does not land, nothing of it stays in memory either.
            with unchanged_on_failure(dep), instances_unchanged_on_failure(state, dep):
                dep.generation = number
                dep.upgrade = (
                    UpgradeRecord(
                        kind="config", mode=cmd.mode, generation=number, domain_count=domain_count(dep)
                    )
                    if settings_changed
                    else None
                )
                async with state.store.transaction() as tx:
                    for host in new_hosts:
                        tx.put(host)
                    tx.put(record)
                    for inst in removed:
                        state.remove_instance(dep, inst, tx)
                    for inst in added:
                        await state.add_instance(dep, inst, tx)
                    state.write_deployment(tx, dep)
                    target = f"{dep.service}/{dep.slot}"
                    request_id = self.commands.ops.record(tx, "ChangeDeploymentConfiguration", target)
        except BaseException:
            dep.generations.pop(number, None)
            shared_folder.remove(path)
            for inst in added:
                await state.rotation.close_instance(dep.id, inst.vm)
            raise
        state.rotation.refresh(dep)

        async def act() -> str:
            await self._apply_resize(dep, added, removed)
            if dep.upgrade is None:
                for inst in list(dep.instances.values()):
                    inst.generation = number
                    await state.save_instance(inst)
                await remove_unused_packages(*await drop_unused(state.store, dep))
                return _resize_text(added, removed) or "no change"
            return await self.upgrades.walk_or_wait(dep)

        return await self.commands.accept(
            "ChangeDeploymentConfiguration", dep, act, phase="RunningTransitioning", request_id=request_id
        )

    async def _resize(
        self, dep: Deployment, new: Generation, number: int, added: list[Instance]
    ) -> list[Instance]:
        """New instances (with ports, not placed) for roles that grow; the ones that go.

        The counts are checked as numbers (instance limit, cores, ports) before any is built.
        """
        state = self.state
        ports = PortAllocator(state.taken_ports())
        udc = new.definition.upgrade_domain_count
        removed: list[Instance] = []
        grow: list[tuple[RoleDefinition, int, int]] = []
        for role in new.definition.roles:
            have = dep.by_role(role.name)
            want = new.instance_count(role.name)
            removed.extend(i for i in have if i.index >= want)
            if want > len(have):
                grow.append((new.role(role.name), len(have), want))
        check_room(
            state.planner(),
            ports,
            [(role, want - count) for role, count, want in grow],
            total=sum(new.instance_count(r.name) for r in new.definition.roles),
            max_instances=state.settings.max_instances,
        )
        roles = [role for role, count, want in grow for _ in range(count, want)]
        given = iter(await ports.instance_ports_off_loop(roles))
        for role, count, want in grow:
            for index in range(count, want):
                added.append(
                    Instance(
                        vm=vm_name(dep.service, dep.name, role.name, index),
                        deployment_id=dep.id,
                        role=role.name,
                        index=index,
                        ports=next(given),
                        update_domain=update_domain(index, udc),
                        generation=number,
                        status="RoleStateUnknown" if dep.goal == "Running" else "StoppedVM",
                        detail="waiting for its host",
                    )
                )
        return removed

    async def _apply_resize(self, dep: Deployment, added: list[Instance], removed: list[Instance]) -> None:
        state = self.state
        if not added and not removed:
            return

        async def remove(inst: Instance) -> None:
            await lifecycle.drain(state, [inst])  # out of rotation since it left the deployment
            await state.rotation.close_instance(dep.id, inst.vm)
            await lifecycle.stop(state, dep, inst, delete_disk=True)

        await each_instance(removed, remove)
        if dep.goal == "Running":
            await start_all(state, dep, added)
        # Everyone else learns the new topology at once (their own settings change later).
        roles = sorted({i.role for i in [*added, *removed]})
        topology = [Change(kind="topology", name=r) for r in roles]
        others = [i for i in dep.ordered() if i not in added]
        await each_instance(others, lambda i: self.upgrades.notify(dep, i, topology, i.generation))


def _resize_text(added: list[Instance], removed: list[Instance]) -> str:
    parts = []
    if added:
        parts.append(f"added {', '.join(i.id for i in added)}")
    if removed:
        parts.append(f"removed {', '.join(i.id for i in removed)}")
    return "; ".join(parts)
