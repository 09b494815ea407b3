"""End to end, as root, real processes: each VM is an account of its own, and a limited role or
startup task of one service can reach nothing of another service, nor the fabric's secrets."""

from __future__ import annotations

import json
import os
import sqlite3
import textwrap
from pathlib import Path

import anyio
import psutil
import pytest

from fabric.guest.account import UID_FIRST, UID_LAST
from tests.integration.e2e_kit import Running, role_host_of, running_fabric

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="VM accounts and sandboxes need root"),
]

DEFINITION = """<?xml version="1.0" encoding="utf-8"?>
<ServiceDefinition name="{name}" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition">
  <WorkerRole name="{name}" vmsize="ExtraSmall">
    <Startup>{startup}</Startup>
    <ConfigurationSettings><Setting name="Targets" /></ConfigurationSettings>
    <LocalResources><LocalStorage name="Data" sizeInMB="10" cleanOnRoleRecycle="false" /></LocalResources>
    <Runtime><EntryPoint><NetFxEntryPoint assemblyName="role.py" /></EntryPoint></Runtime>
  </WorkerRole>
</ServiceDefinition>
"""
CONFIGURATION = """<?xml version="1.0" encoding="utf-8"?>
<ServiceConfiguration serviceName="{name}" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration">
  <Role name="{name}">
    <Instances count="1" />
    <ConfigurationSettings><Setting name="Targets" value="{targets}" /></ConfigurationSettings>
  </Role>
</ServiceConfiguration>
"""
#: Service A: a limited role that imports its own package and writes its LocalStorage.
KEEPER = """
from pathlib import Path

from keeperlib import VALUE
from roles import RoleEntryPoint, RoleEnvironment


class Keeper(RoleEntryPoint):
    async def on_start(self) -> bool:
        root = Path(RoleEnvironment.get_local_resource("Data").root_path)
        (root / "value.txt").write_text(VALUE)
        return True
"""
#: Service B: a limited startup task and a limited role that try to reach everything they can.
SNOOP_TASK = """<Task commandLine="sh snoop.sh" executionContext="limited" taskType="simple">
      <Environment><Variable name="TARGETS">
        <RoleInstanceValue xpath="/RoleEnvironment/CurrentInstance/ConfigurationSettings/ConfigurationSetting[@name='Targets']/@value" />
      </Variable></Environment>
    </Task>"""
SNOOP_SH = """
grep -E '^Cap(Inh|Prm|Eff|Amb)' /proc/self/status
for t in $TARGETS; do
  if [ "${t#pid:}" != "$t" ]; then
    kill -0 "${t#pid:}" 2>/dev/null && echo "reached signal $t"
  elif [ -d "$t" ]; then
    ls "$t" >/dev/null 2>&1 && echo "entries $t:" $(ls -A "$t")
    touch "$t/forged" 2>/dev/null && echo "reached create $t"
  else
    cat "$t" >/dev/null 2>&1 && echo "reached read $t"
    (echo forged >> "$t") 2>/dev/null && echo "reached write $t"
  fi
done
# Its own VM's configuration, agents' logs and code are root's: readable, not writable.
vm="${TEMP%%/C/Resources/*}"
for t in "$vm"/C/Config/*.xml "$vm"/C/Logs/WaAppAgent.log "$vm"/C/Resources/Directory/*.DiagnosticStore/WaHostBootstrapper.log "$vm"/E/approot/role.py; do
  cat "$t" >/dev/null 2>&1 || echo "cannot read own $t"
  (echo forged >> "$t") 2>/dev/null && echo "reached write own $t"
done
touch "$vm/E/approot/forged" 2>/dev/null && echo "reached create own approot"
# A process that leaves the task's process group: it must still end with the VM.
setsid sleep 300 >/dev/null 2>&1 </dev/null &
echo $! > "$TEMP/escaped.pid"
echo probed
"""
SNOOP = """
import json
import os
from pathlib import Path

from roles import RoleEntryPoint, RoleEnvironment


def reached(target: str) -> list[str]:
    found = []
    if target.startswith("pid:"):
        tries = [("signal", lambda: os.kill(int(target[4:]), 0))]
    elif os.path.isdir(target):
        try:
            found.append(f"entries {target}: " + " ".join(sorted(os.listdir(target))))
        except OSError:
            pass
        tries = [("create", lambda: open(os.path.join(target, "forged"), "wb").close())]
    else:
        tries = [("read", lambda: open(target, "rb").read(1)), ("write", lambda: open(target, "ab").write(b"x"))]
    for action, attempt in tries:
        try:
            attempt()
        except OSError:
            continue
        found.append(f"reached {action} {target}")
    return found


class Snoop(RoleEntryPoint):
    async def on_start(self) -> bool:
        status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
        targets = RoleEnvironment.get_config_setting("Targets").split()
        report = {
            "caps": {k: v.strip() for k, v in status.items() if k.startswith("Cap") and k != "CapBnd"},
            "reached": [r for t in targets for r in reached(t)],
        }
        root = Path(RoleEnvironment.get_local_resource("Data").root_path)
        (root / "report.json").write_text(json.dumps(report))
        return True
"""


def make_service(
    tmp_path: Path, name: str, files: dict[str, str], startup: str = "", targets: str = ""
) -> Path:
    """A service folder: a worker role ``name`` with ``files`` as its code."""
    folder = tmp_path / name
    (folder / name).mkdir(parents=True)
    (folder / "ServiceDefinition.csdef").write_text(DEFINITION.format(name=name, startup=startup))
    (folder / "ServiceConfiguration.Local.cscfg").write_text(CONFIGURATION.format(name=name, targets=targets))
    for path, text in files.items():
        target = folder / name / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))
    return folder


def vm_folder(fab: Running, role: str) -> Path:
    (found,) = (fab.state_dir / "vms").glob(f"*.{role}_IN_0")
    return found


def stored_uids(state_dir: Path) -> dict[str, int]:
    with sqlite3.connect(state_dir / "fabric.db") as db:
        return dict(db.execute("SELECT vm, uid FROM instances"))


async def test_a_limited_task_and_role_reach_nothing_of_another_service_and_uids_are_kept(
    tmp_path: Path,
) -> None:
    keeper = make_service(
        tmp_path, "Keeper", {"role.py": KEEPER, "keeperlib/__init__.py": "VALUE = 'kept by A'\n"}
    )
    shadow_before = Path("/etc/shadow").read_bytes() if Path("/etc/shadow").exists() else b""
    async with running_fabric(tmp_path) as fab:
        a_service, _ = await fab.deploy(keeper)
        await fab.all_ready(a_service, 1)
        a_vm = vm_folder(fab, "Keeper")
        a_files = {
            "folder": a_vm,
            "config": next((a_vm / "C" / "Config").glob("*.xml")),
            "role log": next(a_vm.rglob("WaWorkerHost.log")),
            "agent log": a_vm / "C" / "Logs" / "WaAppAgent.log",
            "storage": next(a_vm.rglob("*.Keeper.Data")),
        }
        secrets = [fab.state_dir / "token", fab.state_dir / "fabric.db", fab.state_dir, fab.state_dir / "vms"]
        a_role = role_host_of("Keeper_IN_0", "WaWorkerHost")
        targets = [*a_files.values(), *secrets, Path("/etc/shadow"), f"pid:{a_role.pid}"]
        snoop = make_service(
            tmp_path,
            "Snoop",
            {"role.py": SNOOP, "snoop.sh": SNOOP_SH},
            startup=SNOOP_TASK,
            targets=" ".join(str(t) for t in targets),
        )
        b_service, _ = await fab.deploy(snoop)
        await fab.all_ready(b_service, 1)
        b_vm = vm_folder(fab, "Snoop")

        # Service B's limited startup task: no capability, and nothing of A's or the fabric's.
        (task_log,) = b_vm.rglob("StartupTasks/0.log")
        lines = task_log.read_text().splitlines()
        assert "probed" in lines
        caps = {line.split(":")[0]: int(line.split(":")[1], 16) for line in lines if line.startswith("Cap")}
        assert caps == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapAmb": 0}
        # Of the state folder it sees only the way to its own VM's folder.
        assert [
            line for line in lines if line.startswith(("cannot", "reached write own", "reached create own"))
        ] == []
        seen = [line for line in lines if line.startswith(("reached", "entries"))]
        assert seen == [f"entries {fab.state_dir}: vms", f"entries {fab.state_dir / 'vms'}: {b_vm.name}"]
        # Service B's limited role: the same.
        report = json.loads(next(b_vm.rglob("*.Snoop.Data")).joinpath("report.json").read_text())
        assert {name: int(value, 16) for name, value in report["caps"].items()} == caps
        assert report["reached"] == seen
        # Nothing of A's was forged, and A's limited role wrote its storage with its own package.
        assert [p for p in a_vm.rglob("*") if p.is_file() and b"forged" in p.read_bytes()] == []
        assert not list(a_vm.rglob("forged"))
        assert Path("/etc/shadow").exists() is bool(shadow_before)
        value = a_files["storage"] / "value.txt"
        assert value.read_text() == "kept by A"

        # Each VM is an account of its own: the role runs as it, and its folder is root's and its.
        a_uid, b_uid = a_vm.stat().st_gid, b_vm.stat().st_gid
        assert a_uid != b_uid and {a_uid, b_uid} <= set(range(UID_FIRST, UID_LAST + 1))
        assert value.stat().st_uid == a_uid
        assert role_host_of("Snoop_IN_0", "WaWorkerHost").uids().real == b_uid
        assert [i.uid for i in await fab.instances(a_service)] == [a_uid]  # status --json shows it
        assert (a_vm.stat().st_uid, a_vm.stat().st_mode & 0o777) == (0, 0o750)
        uids = stored_uids(fab.state_dir)
        assert sorted(uids.values()) == sorted([a_uid, b_uid])
        (escaped_pid,) = b_vm.rglob("RoleTemp/escaped.pid")
        escaped = psutil.Process(int(escaped_pid.read_text()))
        assert escaped.uids().real == b_uid and escaped.pid not in {
            p.pid for p in psutil.Process().children(True)
        }
    # Stopping the fabric stopped every VM, and nothing runs as their accounts any more.
    with anyio.fail_after(10):
        while escaped.is_running() and escaped.status() != psutil.STATUS_ZOMBIE:
            await anyio.sleep(0.05)

    # A restarted fabric gives every VM the account the store kept for it.
    async with running_fabric(tmp_path) as fab:
        await fab.all_ready(a_service, 1)
        await fab.all_ready(b_service, 1)
        assert stored_uids(fab.state_dir) == uids
        assert (vm_folder(fab, "Keeper").stat().st_gid, vm_folder(fab, "Snoop").stat().st_gid) == (
            a_uid,
            b_uid,
        )
        assert role_host_of("Snoop_IN_0", "WaWorkerHost").uids().real == b_uid
