"""The service configuration (.cscfg / configuration TOML): instance counts, values, thumbprints."""

from __future__ import annotations

from typing import Annotated

import msgspec

from fabric.model.definition import MAX_INT, Kept, ModelStruct, Name


class ConfigurationSetting(ModelStruct, frozen=True):
    """The value of a setting the definition declares."""

    name: Name
    value: str


class CertificateThumbprint(ModelStruct, frozen=True):
    """Which certificate (by thumbprint) fills a certificate the definition declares."""

    name: Name
    thumbprint: Name
    thumbprint_algorithm: str = "sha1"


class RoleConfiguration(ModelStruct, frozen=True):
    """One role's instance count, setting values and certificate thumbprints."""

    name: Name
    instances: Annotated[int, msgspec.Meta(ge=1, le=MAX_INT)]
    settings: tuple[ConfigurationSetting, ...] = ()
    certificates: tuple[CertificateThumbprint, ...] = ()

    def setting_values(self) -> dict[str, str]:
        """The settings as a name -> value mapping."""
        return {s.name: s.value for s in self.settings}


class ServiceConfiguration(ModelStruct, frozen=True):
    """One environment's configuration of a service (e.g. Local or Cloud)."""

    service_name: Name
    os_family: str | None = None
    os_version: str | None = None
    schema_version: str | None = None
    roles: tuple[RoleConfiguration, ...] = ()
    kept: tuple[Kept, ...] = ()

    def role(self, name: str) -> RoleConfiguration:
        """The configuration of role `name`; raises KeyError if there is none."""
        for role in self.roles:
            if role.name == name:
                return role
        raise KeyError(name)
