"""Setting up a VM's guest OS (seed D.1, D.2, step 5): disk, code, configuration, storage,
certificates, user account and firewall rules; and how the VM's first process runs (for the
host agent and the standalone runner alike). Plain blocking functions: the guest agent runs
them in a worker thread."""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import msgspec

from actors import ProcessOptions, Template
from actors._zygote import available as template_available
from fabric.guest.account import secure_vm
from fabric.guest.certificates import install_certificates
from fabric.guest.disk import VmDisk
from fabric.guest.messages import GuestConfig
from fabric.model.definition import ServiceDefinition
from fabric.model.xml import definition_to_xml
from fabric.settings import Settings
from roles.protocol import RoleEnvironmentData

Log = Callable[[str], None]


def disk_of(config: GuestConfig) -> VmDisk:
    """The VM disk a GuestConfig describes."""
    return VmDisk(Path(config.vm_root), config.deployment_id, config.role.name, config.instance_id)


#: what a VM's processes take of the host agent's environment: the machine's basics and the
#: fabric's own knobs, never the rest (the operator's PGPASSWORD, cloud keys...: the VM runs a
#: tenant's code, which reads its own environment and memory)
VM_ENVIRONMENT = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TERM", "USER", "LOGNAME", "SHELL"})
VM_ENVIRONMENT_PREFIXES = ("LC_", "PYTHON", "REDDOG_", "ACTORS_", "SSL_CERT_", "COVERAGE_", "COV_CORE_")


def vm_environment() -> dict[str, str]:
    """The environment a VM's processes start with: VM_ENVIRONMENT's part of ours."""
    return {
        name: value
        for name, value in os.environ.items()
        if name in VM_ENVIRONMENT or name.startswith(VM_ENVIRONMENT_PREFIXES)
    }


def guest_options(config: GuestConfig, settings: Settings) -> ProcessOptions:
    """How a VM's first process runs under a host agent.

    Its own session, so that a reboot kills the whole guest OS at once. No link pings: the
    host's heartbeat is the VM's liveness check, and the seed gives a silent guest ten
    minutes (guest_heartbeat_timeout) before its OS is restarted; a link ping would kill it
    after seconds. The polite stop leaves room for the role's OnStop inside the guest.
    """
    _preload_guest_code()
    disk = disk_of(config)
    disk.logs.mkdir(parents=True, exist_ok=True)
    return ProcessOptions(
        log_path=disk.logs / "Guest.out.log",
        env=vm_environment(),
        inherit_env=False,
        new_session=True,
        ping_interval=None,
        stop_timeout=settings.on_stop_timeout + 2 * settings.process_stop_timeout,
        term_timeout=settings.process_stop_timeout,
    )


#: What a host's guest template imports: the VM's own code and every kind of role host's.
GUEST_TEMPLATE_PRELOAD = (
    "fabric.guest.app_agent",
    "fabric.guest.bootstrapper",
    "roles.hosts.worker",
    "roles.hosts.iis",
    "roles.hosts.hwc",
    "roles.hosts.w3wp",
)
#: ``0`` turns the host's guest template off: VMs are forked from the host agent as before.
GUEST_TEMPLATE_ENV = "REDDOG_GUEST_TEMPLATE"


async def start_guest_template() -> Template | None:
    """A host's guest template (``GuestTemplate``): an interpreter exec'd as root that imports
    the VM's code and the role hosts' and is given nothing else (no configuration, no setting,
    no certificate: only the basics of the host agent's environment). Each VM's first process is forked
    from it, and plants a seed that becomes its bootstrapper, which plants one that becomes its
    role host template (actors/_zygote.py): so every process of every VM of the host shares
    the template's pages, and none execs an interpreter. None when templates cannot run here,
    are turned off (also by ``REDDOG_ROLE_HOST_TEMPLATE=0``), or this one did not start.
    """
    from fabric.guest.role_launch import TEMPLATE_ENV

    if not template_available() or "0" in (os.environ.get(GUEST_TEMPLATE_ENV), os.environ.get(TEMPLATE_ENV)):
        return None
    try:
        return await Template.start(
            "GuestTemplate",
            run_as=os.geteuid(),
            sandbox=None,
            preload=GUEST_TEMPLATE_PRELOAD,
            env=vm_environment(),  # every VM is cloned from it: none of the rest in its memory
            seeds=True,
        )
    except OSError:
        return None


def _preload_guest_code() -> None:
    """Import the VM's own code (AppAgent, bootstrapper) in the host before it forks a VM: the
    modules are then shared by every VM of the host instead of imported again in each VM's
    processes (about 0.9 MiB of private memory and a few milliseconds of CPU per VM)."""
    import fabric.guest.app_agent
    import fabric.guest.bootstrapper  # noqa: F401


def provision(config: GuestConfig, log: Log, *, fresh_role: bool = True) -> None:
    """Lay out the disk and everything the role needs before the bootstrapper starts.

    ``fresh_role`` is True when the role (re)starts: LocalStorage marked cleanOnRoleRecycle is
    emptied then; the rest is kept.
    """
    disk = disk_of(config)
    disk.create()
    copy_code(config, disk, log)
    write_configuration(config, disk, log)
    prepare_local_storage(config, disk, log, clean=fresh_role)
    place_certificates(config, disk, log)
    install_certificates(config, config.environment, disk, log)
    record_firewall_rules(config, disk, log)
    grant_account(config, disk, log)


def copy_code(config: GuestConfig, disk: VmDisk, log: Log) -> None:
    """The service package's role code to E/approot and each site to E/sitesroot/<index>."""
    shutil.rmtree(disk.approot, ignore_errors=True)
    shutil.copytree(config.role_code_dir, disk.approot, symlinks=False)
    log(f"copied the role's code from {config.role_code_dir} to {disk.approot}")
    for key, source in sorted(config.site_dirs.items()):
        index, _, app = key.partition("/")
        target = disk.site_root(int(index)) / app if app else disk.site_root(int(index))
        if not app:
            shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, dirs_exist_ok=True, symlinks=False)
        log(f"copied site {key} from {source} to {target}")
    definition = ServiceDefinition(name=config.deployment_id, roles=(config.role,))
    disk.role_model.write_bytes(definition_to_xml(definition))
    log(f"wrote the role model {disk.role_model}")


def write_configuration(config: GuestConfig, disk: VmDisk, log: Log) -> None:
    """The instance's configuration, as XML, to C/Config (seed step 5)."""
    disk.config_file.write_bytes(environment_xml(config.environment))
    log(f"wrote the configuration {disk.config_file}")


def environment_xml(env: RoleEnvironmentData) -> bytes:
    """The role environment document, shaped as /RoleEnvironment is for RoleInstanceValue."""
    root = ET.Element("RoleEnvironment")
    ET.SubElement(root, "Deployment", id=env.deployment_id, emulated=str(env.emulated).lower())
    me = env.current_instance
    current = ET.SubElement(
        root,
        "CurrentInstance",
        id=me.id,
        roleName=me.role_name,
        faultDomain=str(me.fault_domain),
        updateDomain=str(me.update_domain),
    )
    settings = ET.SubElement(current, "ConfigurationSettings")
    for name, value in sorted(env.settings.items()):
        ET.SubElement(settings, "ConfigurationSetting", name=name, value=value)
    resources = ET.SubElement(current, "LocalResources")
    for res in env.local_resources.values():
        ET.SubElement(
            resources, "LocalResource", name=res.name, path=res.root_path, sizeInMB=str(res.maximum_size_mb)
        )
    endpoints = ET.SubElement(current, "Endpoints")
    for ep in me.endpoints.values():
        ET.SubElement(
            endpoints, "Endpoint", name=ep.name, address=ep.host, port=str(ep.port), protocol=ep.protocol
        )
    roles = ET.SubElement(root, "Roles")
    for role_name, instances in sorted(env.roles.items()):
        role_el = ET.SubElement(roles, "Role", name=role_name)
        for inst in instances:
            inst_el = ET.SubElement(role_el, "Instance", id=inst.id)
            for ep in inst.endpoints.values():
                ET.SubElement(
                    inst_el,
                    "Endpoint",
                    name=ep.name,
                    address=ep.host,
                    port=str(ep.port),
                    protocol=ep.protocol,
                )
    ET.indent(root)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def prepare_local_storage(config: GuestConfig, disk: VmDisk, log: Log, *, clean: bool) -> None:
    """Create each LocalStorage folder; empty those marked cleanOnRoleRecycle on a role start."""
    for storage in config.role.local_storage:
        folder = disk.local_resource(storage.name)
        # The fabric's own DiagnosticStore (a LocalStorage may name it to size it) holds root's
        # logs, RemoteAccess's session log among them: never emptied by the role's definition.
        ours = folder == disk.diagnostic_store
        if clean and storage.clean_on_role_recycle and folder.exists() and not ours:
            shutil.rmtree(folder)
            log(f"cleaned LocalStorage {storage.name} (cleanOnRoleRecycle)")
        folder.mkdir(parents=True, exist_ok=True)
        log(f"LocalStorage {storage.name} at {folder}, {storage.size_in_mb} MB")


def storage_over_quota(config: GuestConfig) -> list[str]:
    """LocalStorage resources using more than their sizeInMB."""
    disk = disk_of(config)
    over = []
    for storage in config.role.local_storage:
        if folder_size(disk.local_resource(storage.name)) > storage.size_in_mb * 1024 * 1024:
            over.append(storage.name)
    return over


def folder_size(folder: Path) -> int:
    """Bytes used by the files under a folder (0 when it does not exist)."""
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue  # removed while we walked
    return total


def place_certificates(config: GuestConfig, disk: VmDisk, log: Log) -> None:
    """Each certificate as a PEM file readable by its owner only."""
    for cert in config.certificates:
        folder = disk.certificates_dir / cert.store_location / cert.store_name
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for level in (disk.certificates_dir, folder.parent, folder):  # mkdir's mode obeys the umask
            os.chmod(level, 0o700)
        path = folder / f"{cert.thumbprint}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(cert.pem)
        os.chmod(path, 0o600)
        log(f"placed certificate {cert.name} ({cert.thumbprint}) in {cert.store_location}/{cert.store_name}")


class FirewallRule(msgspec.Struct, frozen=True, kw_only=True):
    """One allowed port of the instance; everything else is closed."""

    endpoint: str
    protocol: str
    port: int
    direction: str = "in"


def record_firewall_rules(config: GuestConfig, disk: VmDisk, log: Log) -> None:
    """Only the role's own endpoints are open: write the rules to C/Config/Firewall.json."""
    rules = [
        FirewallRule(endpoint=ep.name, protocol=ep.protocol, port=ep.port)
        for ep in config.environment.current_instance.endpoints.values()
    ]
    document = {"default": "deny", "allow": msgspec.to_builtins(rules)}
    disk.firewall_file.write_text(json.dumps(document, indent=2) + "\n")
    log(f"firewall: default deny; allowed {', '.join(f'{r.protocol}/{r.port}' for r in rules) or 'nothing'}")


def grant_account(config: GuestConfig, disk: VmDisk, log: Log) -> None:
    """Set up the VM's user account (seed D.2): the folders it may read and write."""
    if config.vm_uid is None:
        log(
            f"user account: every task and the role run as uid {os.geteuid()}, the fabric's own "
            "user, without isolation (the fabric does not run as root)"
        )
        return
    # A LocalStorage may be declared to size a folder of the fabric's own (Azure's
    # DiagnosticStore): that one stays root's, as root's agents write their logs there (the
    # account could swap them for links to any file of the machine).
    writable = [
        folder
        for folder in (disk.local_resource(s.name) for s in config.role.local_storage)
        if folder != disk.diagnostic_store
    ]
    secure_vm(disk, config.vm_uid, [*writable, disk.role_temp, disk.iis_log_dir])
    grant_certificates(config, disk, config.vm_uid)
    log(
        f"user account: limited tasks, the role and its web workers run as uid {config.vm_uid}, "
        "which alone may write its LocalStorage, temp folder and logs; elevated ones run as root"
    )


def grant_certificates(config: GuestConfig, disk: VmDisk, uid: int) -> None:
    """Let the VM's account read the certificates whose permissionLevel is limitedOrElevated
    (those marked elevated stay root's only), as Azure lets limited role processes use them."""
    levels = {c.name: c.permission_level for c in config.role.certificates}
    for cert in config.certificates:
        if levels.get(cert.name, "limitedOrElevated") != "limitedOrElevated":
            continue
        folder = disk.certificates_dir / cert.store_location / cert.store_name
        for level in (disk.certificates_dir, folder.parent, folder):
            os.chown(level, 0, uid)
            os.chmod(level, 0o750)
        path = folder / f"{cert.thumbprint}.pem"
        os.chown(path, 0, uid)
        os.chmod(path, 0o640)
