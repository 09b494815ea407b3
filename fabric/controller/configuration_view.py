"""A deployment's current configuration as submitted (the .cscfg or TOML bytes and their name),
for a client that edits it (the portal's configuration form)."""

from __future__ import annotations

import msgspec

from actors import Request
from fabric.controller.messages import Slot
from fabric.controller.state import ControllerState


class GetConfiguration(Request["ConfigurationView"], frozen=True, kw_only=True):
    """Ask a controller for a deployment's ConfigurationView (404 when the slot is empty)."""

    service: str
    slot: Slot


class ConfigurationView(msgspec.Struct, frozen=True, kw_only=True):
    """The configuration a deployment runs (or is moving to, during an upgrade)."""

    name: str
    data: bytes
    generation: int


def configuration_view(state: ControllerState, query: GetConfiguration) -> ConfigurationView:
    """The current configuration of the deployment in ``query``'s slot.

    Raises:
        ControllerError: ResourceNotFound.
    """
    record = state.get(query.service, query.slot).current.record
    return ConfigurationView(
        name=record.configuration_name, data=record.configuration, generation=record.number
    )
