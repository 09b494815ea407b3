"""A configuration change storm: ChangeConfiguration after ChangeConfiguration, one setting of a
role toggled between its value and a chaos value, each change waited for.

The storm runs in the chaos agent's background and asks the controller like any client; the
setting ends at its first value (undo restores it when the storm is cut short).
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import msgspec

from actors import ActorError, AskTimeout
from fabric.controller.chaos import targets
from fabric.controller.chaos.faults import Applied, World
from fabric.controller.chaos.messages import ConfigStorm, Hit
from fabric.controller.client import ask, wait_operation
from fabric.controller.messages import ChangeConfiguration, ControllerError
from fabric.controller.model import Deployment
from fabric.model.configuration import ConfigurationSetting, ServiceConfiguration
from fabric.model.xml import configuration_to_xml

#: One change may take this long (settings changes walk update domains; a recycle runs OnStop).
CHANGE_TIMEOUT = 120.0


def _role_and_setting(dep: Deployment, fault: ConfigStorm) -> tuple[str, str, str]:
    config = dep.current.main.configuration
    t = fault.target
    role = t.role or (dep.find(t.instance).role if t.instance else None)
    candidates = [r for r in config.roles if role in (None, r.name)]
    if role is not None and not candidates:
        raise targets.refuse(f"deployment {dep.name} has no role {role!r}", "ResourceNotFound", 404)
    for rc in candidates:
        settings = rc.setting_values()
        if fault.setting is not None:
            if fault.setting in settings:
                return rc.name, fault.setting, settings[fault.setting]
            continue
        for name, value in settings.items():
            if not name.startswith("Microsoft."):
                return rc.name, name, value
    raise targets.refuse(
        f"no setting {fault.setting or '(any)'} in role {role or '(any)'}: name a setting the role declares"
    )


def _with_value(config: ServiceConfiguration, role: str, setting: str, value: str) -> bytes:
    roles = tuple(
        msgspec.structs.replace(
            rc,
            settings=tuple(
                ConfigurationSetting(name=s.name, value=value) if s.name == setting else s
                for s in rc.settings
            ),
        )
        if rc.name == role
        else rc
        for rc in config.roles
    )
    return configuration_to_xml(msgspec.structs.replace(config, roles=roles))


def storm(world: World, fault: ConfigStorm) -> Applied:
    """Plan the storm; its changes run in the background (``Applied.background``)."""
    if fault.count < 1:
        raise targets.refuse("a configuration storm needs count >= 1")
    t = fault.target
    dep = targets.deployment(world.state, t.service, t.slot)
    role, setting, original = _role_and_setting(dep, fault)
    service, slot = dep.service, dep.slot
    current = {"value": original}

    async def change(value: str) -> str:
        live = world.state.get(service, slot)
        command = ChangeConfiguration(
            service=service,
            slot=slot,
            configuration=_with_value(live.current.main.configuration, role, setting, value),
            configuration_name="ServiceConfiguration.cscfg",
        )
        try:
            accepted = await ask(world.controller, command, timeout=30.0)
            view = await wait_operation(world.controller, accepted.request_id, timeout=CHANGE_TIMEOUT)
        except (ControllerError, ActorError, AskTimeout, TimeoutError) as exc:
            return f"refused: {getattr(exc, 'message', exc)}"
        if view.status != "Succeeded":
            return f"failed: {view.error_message}"
        current["value"] = value
        return "ok"

    async def run(progress: Callable[[str], None]) -> None:
        done = refused = 0
        for i in range(fault.count):
            value = f"{original} (chaos {i // 2 + 1})" if i % 2 == 0 else original
            outcome = await change(value)
            done, refused = (done + 1, refused) if outcome == "ok" else (done, refused + 1)
            progress(f"{done} of {fault.count} changes applied, {refused} refused ({outcome})")
            if fault.interval:
                await anyio.sleep(fault.interval)
        if current["value"] != original:
            progress(
                f"{done} of {fault.count} changes applied, {refused} refused; restoring: {await change(original)}"
            )

    async def undo() -> str:
        if current["value"] == original:
            return f"{role}/{setting} is at its first value"
        return f"restoring {role}/{setting}: {await change(original)}"

    hit = Hit(
        what="deployment", name=f"{service}/{slot}", detail=f"{fault.count} changes of {role}/{setting}"
    )
    instances = [i.id for i in dep.by_role(role)]
    return Applied(
        [hit], instances, undo=undo, background=run, detail=f"toggling {role}/{setting} {fault.count} times"
    )
