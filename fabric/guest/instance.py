"""From a service model to one instance's GuestConfig: ids, domains, ports and the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from fabric.guest.account import default_uid
from fabric.guest.disk import VmDisk
from fabric.guest.messages import GuestConfig
from fabric.model.definition import RoleDefinition
from fabric.model.service import Service
from fabric.settings import Settings
from roles.protocol import CertificateInfo, EndpointInfo, InstanceInfo, LocalResourceInfo, RoleEnvironmentData


def instance_id(role: str, index: int) -> str:
    """Azure's instance id: ``<Role>_IN_<n>``."""
    return f"{role}_IN_{index}"


def instance_endpoints(
    role: RoleDefinition, ports: Mapping[str, int], host: str = "127.0.0.1"
) -> dict[str, EndpointInfo]:
    """The endpoints of one instance: every input, internal and instance-input endpoint, each on
    the local port the placement gave it."""
    found: dict[str, EndpointInfo] = {}
    for ep in role.input_endpoints:
        found[ep.name] = EndpointInfo(
            name=ep.name,
            protocol=ep.protocol,
            host=host,
            port=ports[ep.name],
            certificate=ep.certificate or "",
        )
    for iep in role.internal_endpoints:
        found[iep.name] = EndpointInfo(name=iep.name, protocol=iep.protocol, host=host, port=ports[iep.name])
    for xep in role.instance_input_endpoints:
        found[xep.name] = EndpointInfo(name=xep.name, protocol=xep.protocol, host=host, port=ports[xep.name])
    return found


def role_settings(service: Service, role: str) -> dict[str, str]:
    """The configuration values of a role's settings."""
    return {s.name: s.value for s in service.configuration.role(role).settings}


def build_environment(
    service: Service,
    role: RoleDefinition,
    *,
    deployment_id: str,
    index: int,
    disk: VmDisk,
    ports: Mapping[str, int],
    topology: Mapping[str, list[InstanceInfo]],
    update_domain: int,
    fault_domain: int,
    address: str = "127.0.0.1",
) -> RoleEnvironmentData:
    """The RoleEnvironment snapshot of one instance (its endpoints on ``address``)."""
    me = InstanceInfo(
        id=instance_id(role.name, index),
        role_name=role.name,
        update_domain=update_domain,
        fault_domain=fault_domain,
        endpoints=instance_endpoints(role, ports, address),
    )
    resources = {
        ls.name: LocalResourceInfo(
            name=ls.name, root_path=str(disk.local_resource(ls.name)), maximum_size_mb=ls.size_in_mb
        )
        for ls in role.local_storage
    }
    return RoleEnvironmentData(
        deployment_id=deployment_id,
        emulated=False,
        current_instance=me,
        settings=role_settings(service, role.name),
        local_resources=resources,
        roles=dict(topology),
        topology_change_discovery=service.definition.topology_change_discovery or "UpgradeDomainWalk",
        certificates=role_certificates(service, role, disk),
    )


def role_certificates(service: Service, role: RoleDefinition, disk: VmDisk) -> dict[str, CertificateInfo]:
    """The role's certificates with the thumbprints the configuration gives, and where the guest
    agent installs them: ``C/Certificates/<storeLocation>/<storeName>/<THUMBPRINT>.pem|.key``."""
    thumbprints = {c.name: c.thumbprint.upper() for c in service.configuration.role(role.name).certificates}
    found: dict[str, CertificateInfo] = {}
    for cert in role.certificates:
        thumbprint = thumbprints.get(cert.name)
        if thumbprint is None:
            continue  # validation refuses this; a stand-in configuration may leave it out
        folder = disk.certificates_dir / cert.store_location / cert.store_name
        found[cert.name] = CertificateInfo(
            name=cert.name,
            thumbprint=thumbprint,
            store_location=cert.store_location,
            store_name=cert.store_name,
            path=str(folder / f"{thumbprint}.pem"),
            key_path=str(folder / f"{thumbprint}.key"),
        )
    return found


def site_dirs(service: Service, role: RoleDefinition) -> dict[str, str]:
    """Host folders of each site ("<index>") and virtual application ("<index>/<name>")."""
    found: dict[str, str] = {}
    for index, site in enumerate(role.sites):
        found[str(index)] = (
            str(service.content_dir(role.name, site.physical_directory))
            if site.physical_directory
            else str(service.role_dir(role.name))
        )
        for app in site.virtual_applications:
            found[f"{index}/{app.name}"] = str(service.content_dir(role.name, app.physical_directory))
    return found


def build_guest_config(
    service: Service,
    role_name: str,
    index: int,
    *,
    deployment_id: str,
    state_dir: Path,
    ports: Mapping[str, int],
    topology: Mapping[str, list[InstanceInfo]],
    settings: Settings,
    update_domain: int = 0,
    fault_domain: int = 0,
    vm: str | None = None,
    vm_uid: int | None = None,
    hosted_service: str = "",
    address: str = "127.0.0.1",
) -> GuestConfig:
    """Everything the VM of ``role_name`` instance ``index`` needs to boot.

    ``vm`` names the VM (its folder under ``<state>/vms`` and the id its host knows it by)
    when several deployments share a host and so ``<Role>_IN_<n>`` alone would clash; the
    role still sees its Azure instance id in RoleEnvironment. ``vm_uid`` is the VM's account
    (see fabric.guest.account); by default a free one drawn at random, when we are root.
    ``hosted_service`` is the hosted service whose uploaded certificates the VM installs.
    """
    role = service.definition.role(role_name)
    iid = instance_id(role_name, index)
    name = vm or iid
    disk = VmDisk(state_dir / "vms" / name, deployment_id, role_name, name)
    return GuestConfig(
        vm_root=str(disk.root),
        deployment_id=deployment_id,
        instance_id=name,
        role=role,
        role_code_dir=str(service.role_dir(role_name)),
        site_dirs=site_dirs(service, role),
        environment=build_environment(
            service,
            role,
            deployment_id=deployment_id,
            index=index,
            disk=disk,
            ports=ports,
            topology=topology,
            update_domain=update_domain,
            fault_domain=fault_domain,
            address=address,
        ),
        settings=settings,
        vm_uid=None if os.geteuid() != 0 else (vm_uid or default_uid()),
        state_dir=str(state_dir),
        hosted_service=hosted_service,
    )
