"""IISConfigurator (seed F, steps 6 and 8): a one-shot program the bootstrapper runs for full IIS roles.

    python -m fabric.guest.web_configurator < request.json

The request (a ConfiguratorRequest, JSON on stdin) says what to do:

- ``cleanup`` (step 6): start "the IIS services" and delete this role's app pools and sites
  from the VM's IIS configuration, ``D/Windows/System32/inetsrv/config/applicationHost.config``.
- ``configure`` (step 8): for each <Site>, make sure its files are in ``E/sitesroot/<index>``
  (the guest agent normally copied them; otherwise they are copied from the site's
  physicalDirectory inside E/approot, or from E/approot itself), add the role's app pool, the
  site with its bindings and virtual applications, the rewrite module and W3C logging to
  ``DiagnosticStore/LogFiles/W3SVC1``, and give the VM's account read access to the sites and
  write access to the log folder.

Every step is written to IISConfigurator.log in the role's resources folder. Exit 0 on success;
1 with a one-line reason on stderr when the role's sites cannot be configured.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath
from typing import Literal

import defusedxml.ElementTree as SafeET  # type: ignore[import-untyped]
import msgspec

from fabric.guest.account import own
from fabric.guest.disk import VmDisk
from fabric.logs import LogFile
from fabric.model.definition import RoleDefinition, Site
from roles.protocol import RoleEnvironmentData, SiteBinding, SiteInfo

EXIT_FAILED = 1


class ConfiguratorError(Exception):
    """The role's sites cannot be configured; the message says what to fix."""


class ConfiguratorRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What the bootstrapper asks IISConfigurator to do, on its stdin."""

    action: Literal["cleanup", "configure"]
    vm_root: str
    deployment_id: str
    instance_id: str
    role: RoleDefinition
    environment: RoleEnvironmentData
    vm_uid: int | None = None

    @property
    def disk(self) -> VmDisk:
        """The VM's disk."""
        return VmDisk(Path(self.vm_root), self.deployment_id, self.role.name, self.instance_id)


def application_host_config(disk: VmDisk) -> Path:
    """The VM's IIS configuration file, where Windows keeps it on the OS drive."""
    return disk.root / "D" / "Windows" / "System32" / "inetsrv" / "config" / "applicationHost.config"


def app_pool_name(deployment_id: str, role: str) -> str:
    """The role's app pool: one per role, as IISConfigurator made it."""
    return f"{deployment_id}.{role}"


def site_name(instance_id: str, site: Site) -> str:
    """IIS's name of a site: ``<instance id>_<site name>``, e.g. ``WebRole1_IN_0_Web``."""
    return f"{instance_id}_{site.name}"


def site_infos(role: RoleDefinition, disk: VmDisk) -> list[SiteInfo]:
    """The role's sites as web workers serve them, each rooted at E/sitesroot/<index>.

    A virtual application or directory lives at E/sitesroot/<index>/<name>, where the guest
    agent or ``configure`` put it.
    """
    infos: list[SiteInfo] = []
    for index, site in enumerate(role.sites):
        root = disk.site_root(index)
        names = [v.name for v in site.virtual_applications] + [v.name for v in site.virtual_directories]
        mounted = {_virtual_path(name): str(root / _relative(name)) for name in names}
        infos.append(
            SiteInfo(
                name=site.name,
                index=index,
                physical_path=str(root),
                bindings=[
                    SiteBinding(name=b.name, endpoint_name=b.endpoint_name, host_header=b.host_header or "")
                    for b in site.bindings
                ],
                virtual_applications=mounted,
            )
        )
    return infos


def _virtual_path(name: str) -> str:
    return "/" + name.replace("\\", "/").strip("/")


def _relative(name: str) -> PurePosixPath:
    return PurePosixPath(name.replace("\\", "/").strip("/"))


def site_source(role: RoleDefinition, declared: str | None, approot: Path) -> Path:
    """Where a site's (or application's) files are inside the role's code, when the guest did not
    place them: the physicalDirectory relative to approot, or relative to the service folder
    (``<Role>/sub`` is ``approot/sub``), or an absolute folder; no physicalDirectory: approot.

    Raises:
        ConfiguratorError: none of those exists.
    """
    if not declared:
        return approot
    path = PurePosixPath(declared.replace("\\", "/"))
    candidates = [Path(path)] if path.is_absolute() else [approot / path]
    if not path.is_absolute() and path.parts and path.parts[0] == role.name:
        candidates.append(approot.joinpath(*path.parts[1:]))
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise ConfiguratorError(
        f"physicalDirectory {declared!r} of role {role.name!r} is not in the role's code "
        f"({approot}) and was not placed in E/sitesroot; ship it with the role or fix the path"
    )


def _load(config: Path) -> ET.Element:
    if config.exists():
        root: ET.Element = SafeET.parse(config).getroot()
        return root
    root = ET.Element("configuration")
    host = ET.SubElement(root, "system.applicationHost")
    ET.SubElement(host, "applicationPools")
    ET.SubElement(host, "sites")
    return root


def _section(root: ET.Element, name: str) -> ET.Element:
    host = root.find("system.applicationHost")
    if host is None:
        host = ET.SubElement(root, "system.applicationHost")
    found = host.find(name)
    return found if found is not None else ET.SubElement(host, name)


def _save(root: ET.Element, config: Path) -> None:
    config.parent.mkdir(parents=True, exist_ok=True)
    ET.indent(root)
    partial = config.with_suffix(".tmp")
    partial.write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))
    partial.replace(config)


def _remove_role(root: ET.Element, owner: str, log: LogFile) -> None:
    pools, sites = _section(root, "applicationPools"), _section(root, "sites")
    for pool in list(pools):
        if pool.get("name") == owner:
            pools.remove(pool)
            log.write(f"deleted app pool {owner}")
    for site in list(sites):
        if site.get("role") == owner:
            sites.remove(site)
            log.write(f"deleted site {site.get('name')}")


def cleanup(request: ConfiguratorRequest, log: LogFile) -> None:
    """Step 6: start the IIS services and delete the role's existing app pools and sites."""
    disk = request.disk
    log.write("starting IIS services: WAS, W3SVC")
    config = application_host_config(disk)
    root = _load(config)
    _remove_role(root, app_pool_name(request.deployment_id, request.role.name), log)
    _save(root, config)
    log.write(f"no stale configuration left for role {request.role.name} in {config}")


def _place_site(request: ConfiguratorRequest, index: int, site: Site, log: LogFile) -> Path:
    disk, role = request.disk, request.role
    target = disk.site_root(index)
    if target.is_dir() and any(target.iterdir()):
        log.write(f"site {site.name}: files already in {target}")
    else:
        source = site_source(role, site.physical_directory, disk.approot)
        shutil.copytree(source, target, dirs_exist_ok=True)
        log.write(f"site {site.name}: copied {source} to {target}")
    mounts = [(v.name, v.physical_directory) for v in site.virtual_applications]
    mounts += [(v.name, v.physical_directory) for v in site.virtual_directories]
    for name, declared in mounts:
        folder = target / _relative(name)
        if not folder.is_dir():
            source = site_source(role, declared, disk.approot)
            shutil.copytree(source, folder, dirs_exist_ok=True)
            log.write(f"site {site.name}: copied {source} to {folder} for /{_relative(name)}")
    return target


def _grant(request: ConfiguratorRequest, sites: list[Path], log: LogFile) -> None:
    disk, uid = request.disk, request.vm_uid
    for folder in sites:
        for path in [folder, *folder.rglob("*")]:
            mode = path.stat().st_mode
            extra = stat.S_IROTH | (stat.S_IXOTH if path.is_dir() or mode & stat.S_IXUSR else 0)
            path.chmod(mode | extra)
    if uid is None or os.geteuid() != 0:
        log.write("permissions: the app pool runs as this account; nothing to grant")
        return
    disk.iis_log_dir.mkdir(parents=True, exist_ok=True)
    own(disk.iis_log_dir, uid, 0o700)
    log.write(f"permissions: uid {uid} may read the sites and write {disk.iis_log_dir}")


def configure(request: ConfiguratorRequest, log: LogFile) -> None:
    """Step 8: the app pool, each site at E/sitesroot/<index>, logging, rewrite and permissions."""
    disk, role = request.disk, request.role
    if not role.sites:
        raise ConfiguratorError(f"role {role.name!r} has no <Sites>: it is an HWC role, not full IIS")
    config = application_host_config(disk)
    root = _load(config)
    owner = app_pool_name(request.deployment_id, role.name)
    _remove_role(root, owner, log)  # configuring twice must not duplicate the role's entries
    identity = f"uid {request.vm_uid}" if request.vm_uid is not None else "ApplicationPoolIdentity"
    if role.runtime is not None and role.runtime.execution_context == "elevated":
        identity = "LocalSystem"
    ET.SubElement(
        _section(root, "applicationPools"),
        "add",
        name=owner,
        managedRuntimeVersion="",
        identity=identity,
        idleTimeoutSeconds="1200",
    )
    log.write(f"app pool {owner} runs as {identity}")
    rewrite = _section(root, "globalModules")
    if not any(m.get("name") == "RewriteModule" for m in rewrite):
        ET.SubElement(rewrite, "add", name="RewriteModule", image="rewrite.dll")
        log.write("configured the rewrite module")
    endpoints = request.environment.current_instance.endpoints
    placed: list[Path] = []
    for info, site in zip(site_infos(role, disk), role.sites, strict=True):
        placed.append(_place_site(request, info.index, site, log))
        element = ET.SubElement(
            _section(root, "sites"), "site", name=site_name(request.instance_id, site), id=str(info.index + 1)
        )
        element.set("role", owner)
        app = ET.SubElement(element, "application", path="/", applicationPool=owner)
        ET.SubElement(app, "virtualDirectory", path="/", physicalPath=info.physical_path)
        for path, folder in info.virtual_applications.items():
            extra = ET.SubElement(element, "application", path=path, applicationPool=owner)
            ET.SubElement(extra, "virtualDirectory", path="/", physicalPath=folder)
        bindings = ET.SubElement(element, "bindings")
        for binding in info.bindings:
            endpoint = endpoints.get(binding.endpoint_name)
            if endpoint is None:
                raise ConfiguratorError(
                    f"site {site.name!r} binds endpoint {binding.endpoint_name!r}, which this "
                    f"instance does not have (it has {sorted(endpoints)}); fix the binding"
                )
            information = f"{endpoint.host}:{endpoint.port}:{binding.host_header}"
            ET.SubElement(bindings, "binding", protocol=endpoint.protocol, bindingInformation=information)
            log.write(f"site {site.name}: binding {endpoint.protocol} {information}")
        ET.SubElement(element, "logFile", directory=str(disk.iis_log_dir), logFormat="W3C")
        log.write(
            f"site {site.name} (id {info.index + 1}) at {info.physical_path}, logs to {disk.iis_log_dir}"
        )
    _grant(request, placed, log)
    _save(root, config)
    log.write(f"wrote {config}")


def main() -> int:
    """Read the request on stdin, do it, return the exit code."""
    try:
        request = msgspec.json.decode(sys.stdin.buffer.read(), type=ConfiguratorRequest)
    except msgspec.DecodeError as exc:
        print(f"IISConfigurator: the request on stdin is not valid: {exc}", file=sys.stderr)
        return EXIT_FAILED
    disk = request.disk
    log = LogFile(disk.role_log("IISConfigurator.log"))
    log.write(f"IISConfigurator {request.action} for role {request.role.name} ({request.instance_id})")
    try:
        (cleanup if request.action == "cleanup" else configure)(request, log)
    except (ConfiguratorError, OSError) as exc:
        log.error(f"{request.action} failed: {exc}")
        print(f"IISConfigurator: {request.action} failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
