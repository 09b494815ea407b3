"""Upgrades, update domain by update domain (and the walk a settings change shares).

An upgrade (a new package) or a settings change (reconfigure.py) makes a new generation and
walks the update domains: Auto walks them in order, each domain out of rotation while it
changes and the next only once the previous runs its role again; Manual waits for
WalkUpgradeDomain per domain; Simultaneous changes every domain at once. A package upgrade
restarts each instance with the new package; a settings change raises RoleEnvironment
changing/changed in each instance (recycling it only when a changing handler cancels).
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import msgspec

from fabric.controller import lifecycle, shared_folder
from fabric.controller.commands import Commands, each_instance, ensure_idle
from fabric.controller.generations import (
    drop_unused,
    load_generation,
    remove_unused_packages,
    stage_package,
    write_config_off_loop,
)
from fabric.controller.messages import (
    ControllerError,
    OperationAccepted,
    UpgradeDeployment,
    WalkUpgradeDomain,
)
from fabric.controller.model import Deployment, Generation, Instance
from fabric.controller.state import ControllerState, unchanged_on_failure
from fabric.controller.store import GenerationRecord, UpgradeRecord
from roles.protocol import Change

log = logging.getLogger("fabric.controller")

MODES = ("Auto", "Manual", "Simultaneous")


def check_mode(mode: str) -> None:
    """Refuse an upgrade mode other than Auto, Manual or Simultaneous."""
    if mode not in MODES:
        raise ControllerError(
            "BadRequest", f"upgrade mode {mode!r} is not valid; use Auto, Manual or Simultaneous"
        )


def setting_changes(old: Generation, new: Generation, role: str) -> list[Change]:
    """The settings and certificates of ``role`` whose values differ between generations."""
    changes = []
    a, b = old.settings_of(role), new.settings_of(role)
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            changes.append(Change(kind="setting", name=name))
    ca, cb = old.certificates_of(role), new.certificates_of(role)
    for name in sorted(set(ca) | set(cb)):
        if ca.get(name) != cb.get(name):
            changes.append(Change(kind="certificate", name=name))
    return changes


def upgrade_problem(old: Generation, new: Generation) -> str | None:
    """Why a package cannot replace the running one in place (a VIP swap can), or None."""
    before = {r.name: r for r in old.definition.roles}
    after = {r.name: r for r in new.definition.roles}
    if set(before) != set(after):
        return f"the roles change ({', '.join(sorted(before))} -> {', '.join(sorted(after))})"
    for name, role in after.items():
        was = before[name]
        if role.vm_size != was.vm_size:
            return f"role {name} changes vmsize ({was.vm_size} -> {role.vm_size})"
        if role.endpoint_names != was.endpoint_names:
            return f"role {name} changes its endpoints"
        if [(e.protocol, e.port) for e in role.input_endpoints] != [
            (e.protocol, e.port) for e in was.input_endpoints
        ]:
            return f"role {name} changes an input endpoint's port or protocol"
        if new.instance_count(name) != old.instance_count(name):
            return f"role {name} changes its instance count (change the configuration for that)"
    return None


class Upgrades:
    """Runs upgrades and configuration changes for one controller."""

    def __init__(self, commands: Commands) -> None:
        self.commands = commands
        self.state: ControllerState = commands.state

    async def notify(self, dep: Deployment, inst: Instance, changes: list[Change], generation: int) -> None:
        """Tell one instance of a configuration or topology change; move it to ``generation``."""
        await lifecycle.apply(self.state, dep, inst, changes, generation)

    # -- upgrade ----------------------------------------------------------------------------------

    async def upgrade(self, cmd: UpgradeDeployment) -> OperationAccepted:
        """Check and stage a new package; walk the update domains (or wait for walks)."""
        state = self.state
        dep = state.get(cmd.service, cmd.slot)
        check_mode(cmd.mode)
        ensure_idle(dep)
        old = dep.current
        if cmd.role is not None and cmd.role not in {r.name for r in old.definition.roles}:
            raise ControllerError("BadRequest", f"role {cmd.role!r} is not in deployment {dep.name}")
        number = max(dep.generations) + 1
        configuration = cmd.configuration if cmd.configuration is not None else old.record.configuration
        name = cmd.configuration_name if cmd.configuration is not None else old.record.configuration_name
        path = await write_config_off_loop(dep.folder, number, configuration, name)
        pkg: Path | None = None
        try:
            pkg = await stage_package(cmd.package_path, dep.folder, number, path, name)
            roles = [r.name for r in old.definition.roles]
            packages = {r: str(pkg) if cmd.role in (None, r) else old.package_of(r) for r in roles}
            record = GenerationRecord(
                deployment_id=dep.id,
                number=number,
                packages=packages,
                main=str(pkg),
                configuration=configuration,
                configuration_name=name,
            )
            new = await load_generation(record, dep.folder)
            problem = upgrade_problem(old, new)
            if problem:
                raise ControllerError(
                    "BadRequest", f"cannot upgrade in place: {problem}; deploy to staging and swap"
                )
            ensure_idle(dep)
        except BaseException:
            shared_folder.remove(path)
            if pkg is not None:
                await anyio.to_thread.run_sync(_rmtree, pkg)
            raise
        try:
            with unchanged_on_failure(dep):
                dep.generations[number] = new
                dep.generation = number
                if cmd.label:
                    dep.label = cmd.label
                dep.upgrade = UpgradeRecord(
                    kind="package",
                    mode=cmd.mode,
                    generation=number,
                    role=cmd.role,
                    domain_count=domain_count(dep),
                )
                async with state.store.transaction() as tx:
                    tx.put(record)
                    state.write_deployment(tx, dep)
                    target = f"{dep.service}/{dep.slot}"
                    request_id = self.commands.ops.record(tx, "UpgradeDeployment", target)
        except BaseException:  # not stored: its staged files go
            shared_folder.remove(path)
            if pkg is not None:
                await anyio.to_thread.run_sync(_rmtree, pkg)
            raise
        return await self.commands.accept(
            "UpgradeDeployment",
            dep,
            lambda: self.walk_or_wait(dep),
            phase="RunningTransitioning",
            request_id=request_id,
        )

    # -- walking ----------------------------------------------------------------------------------

    async def walk(self, cmd: WalkUpgradeDomain) -> OperationAccepted:
        """Upgrade the next domain of a Manual upgrade (domains go in order)."""
        dep = self.state.get(cmd.service, cmd.slot)
        upgrade = dep.upgrade
        if upgrade is None or upgrade.mode != "Manual":
            raise ControllerError("BadRequest", f"deployment {dep.name} has no Manual upgrade in progress")
        ensure_idle(dep, allow_upgrade=True)
        if cmd.upgrade_domain != upgrade.next_domain:
            raise ControllerError(
                "BadRequest",
                f"update domain {cmd.upgrade_domain} cannot be walked now; the next one is {upgrade.next_domain}",
            )

        async def act() -> str:
            await self._walk_domain(dep, cmd.upgrade_domain)
            return await self._advance(dep, cmd.upgrade_domain)

        return await self.commands.accept("WalkUpgradeDomain", dep, act, phase="RunningTransitioning")

    async def walk_or_wait(self, dep: Deployment) -> str:
        upgrade = dep.upgrade
        assert upgrade is not None
        if upgrade.mode == "Manual":
            return f"ready for a Manual walk: walk update domain {upgrade.next_domain} next"
        if upgrade.mode == "Simultaneous":
            await self._walk_domain(dep, None)
            return await self._finish(dep)
        text = ""
        for domain in range(upgrade.next_domain, upgrade.domain_count):
            await self._walk_domain(dep, domain)
            text = await self._advance(dep, domain)
        return text

    async def _advance(self, dep: Deployment, domain: int) -> str:
        upgrade = dep.upgrade
        assert upgrade is not None
        nxt = domain + 1
        if nxt >= upgrade.domain_count:
            return await self._finish(dep)
        dep.upgrade = msgspec.structs.replace(upgrade, next_domain=nxt)
        await self.state.save_deployment(dep)
        return f"update domain {domain} done; {'walk' if upgrade.mode == 'Manual' else 'next'} domain {nxt}"

    async def _finish(self, dep: Deployment) -> str:
        upgrade = dep.upgrade
        dep.upgrade = None
        await self.state.save_deployment(dep)
        self.commands.spawn(remove_unused_packages, *await drop_unused(self.state.store, dep))
        what = "upgrade" if upgrade is None or upgrade.kind == "package" else "configuration change"
        return f"{what} complete"

    async def _walk_domain(self, dep: Deployment, domain: int | None) -> None:
        """Move the instances of one update domain (None: all) to the target generation."""
        upgrade = dep.upgrade
        assert upgrade is not None
        target = dep.generations[upgrade.generation]
        insts = [
            i
            for i in dep.ordered()
            if (domain is None or i.update_domain == domain) and i.generation != upgrade.generation
        ]
        if not insts:
            return
        label = f"update domain {domain}" if domain is not None else "the upgrade"
        self.state.events.record(
            "upgrade", f"{dep.name}: walking {label} ({len(insts)} instance(s))", dep=dep
        )
        if upgrade.kind == "config":
            await self.reconfigure(dep, insts, target, label)
        else:
            await self._replace(dep, insts, label)

    async def _replace(self, dep: Deployment, insts: list[Instance], label: str) -> None:
        """Restart the instances whose role gets a new package; tell the others (a one-role
        upgrade) of any settings the new configuration changes for them."""
        state = self.state
        upgrade = dep.upgrade
        assert upgrade is not None
        target = dep.generations[upgrade.generation]
        changing, told = [], []
        for inst in insts:
            current = dep.generations[inst.generation]
            if current.package_of(inst.role) != target.package_of(inst.role):
                changing.append(inst)
                # Moved before the restart, so that healing, too, boots the new version.
                inst.generation = upgrade.generation
                await state.save_instance(inst)
            elif dep.goal == "Running" and setting_changes(current, target, inst.role):
                told.append(inst)
            else:
                inst.generation = upgrade.generation
                await state.save_instance(inst)
        if dep.goal != "Running":
            return
        if told:
            await self.reconfigure(dep, told, target, label)
        if not changing:
            return
        log.info("%s: upgrading %s (%s)", dep.name, label, ", ".join(i.id for i in changing))
        async with lifecycle.leaving_rotation(state, dep, changing):
            await each_instance(changing, lambda i: lifecycle.restart(state, dep, i, new_config=True))
            await lifecycle.wait_up(state, dep, changing, label)

    async def reconfigure(
        self, dep: Deployment, insts: list[Instance], target: Generation, label: str
    ) -> None:
        state = self.state
        upgrade = dep.upgrade
        assert upgrade is not None
        changed = []
        for inst in insts:
            changes = setting_changes(dep.generations[inst.generation], target, inst.role)
            if changes and dep.goal == "Running":
                changed.append((inst, changes))
            else:
                inst.generation = upgrade.generation
                await state.save_instance(inst)
        log.info("%s: new configuration for %s", dep.name, label)
        await each_instance(
            [i for i, _ in changed], lambda i: self.notify(dep, i, dict(changed)[i], upgrade.generation)
        )
        await lifecycle.wait_up(state, dep, [i for i, _ in changed], label)

    async def resume(self, dep: Deployment) -> str:
        """Carry on an Auto or Simultaneous walk the fabric's restart interrupted."""
        return await self.walk_or_wait(dep)


def domain_count(dep: Deployment) -> int:
    """Update domains in use: the highest domain of any instance, plus one."""
    return max((i.update_domain for i in dep.instances.values()), default=0) + 1


def _rmtree(path: Path) -> None:
    shared_folder.remove(path)
