"""The SDK role code imports: RoleEntryPoint and RoleEnvironment."""

from __future__ import annotations
