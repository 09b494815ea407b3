"""A worker that writes every RoleEnvironment event it sees to its LocalStorage (events.log)."""

from pathlib import Path

import anyio

from roles import RoleEntryPoint, RoleEnvironment


def record(line: str) -> None:
    root = Path(RoleEnvironment.get_local_resource("Events").root_path)
    with open(root / "events.log", "a") as out:
        out.write(line + "\n")


class Probe(RoleEntryPoint):
    async def on_start(self) -> bool:
        RoleEnvironment.changing.subscribe(self.changing)
        RoleEnvironment.changed.subscribe(self.changed)
        record(f"start {RoleEnvironment.get_config_setting('Color')}")
        return True

    async def run(self) -> None:
        await anyio.sleep_forever()

    def changing(self, args) -> None:
        record("changing " + ",".join(c.name for c in args.changes))
        if RoleEnvironment.get_config_setting("Color") == "red":
            args.cancel = True  # red to anything: recycle to apply

    def changed(self, args) -> None:
        record(f"changed {RoleEnvironment.get_config_setting('Color')}")
