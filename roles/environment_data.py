"""The role's view of the world: the environment snapshot the host bootstrapper hands a role
host, and the changes it announces. Light on purpose (msgspec only): ``import roles`` loads it,
and loads neither the actor runtime nor an async library.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class EndpointInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One endpoint of an instance: where to reach it."""

    name: str
    protocol: str
    host: str
    port: int
    #: for an https input endpoint: the name of the role certificate it serves with
    certificate: str = ""


class CertificateInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A certificate installed for the role: where its files are in the VM's store folder."""

    name: str
    thumbprint: str
    store_location: str
    store_name: str
    #: the certificate (PEM, then its chain), readable by the role's account
    path: str
    #: its private key (PKCS#8 PEM): readable by the role's account when permissionLevel is
    #: limitedOrElevated; by elevated processes only when it is elevated
    key_path: str


class InstanceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One role instance as RoleEnvironment shows it."""

    id: str
    role_name: str
    update_domain: int
    fault_domain: int
    endpoints: dict[str, EndpointInfo] = {}


class LocalResourceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A LocalStorage folder: its root path and the size it may use."""

    name: str
    root_path: str
    maximum_size_mb: int


class RoleEnvironmentData(msgspec.Struct, frozen=True, kw_only=True):
    """Everything RoleEnvironment answers from, as one snapshot the bootstrapper hands down."""

    deployment_id: str
    emulated: bool = False
    current_instance: InstanceInfo
    settings: dict[str, str] = {}
    local_resources: dict[str, LocalResourceInfo] = {}
    #: every role of the deployment, by name: its instances and their internal endpoints
    roles: dict[str, list[InstanceInfo]] = {}
    topology_change_discovery: Literal["UpgradeDomainWalk", "Blast"] = "UpgradeDomainWalk"
    #: the role's certificates by name (fabric/guest installs them)
    certificates: dict[str, CertificateInfo] = {}


class Change(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """One change in a configuration or topology update."""

    kind: Literal["setting", "topology", "certificate"]
    #: the setting name, or the role name for a topology change
    name: str
