"""A VM's disk: a folder that mirrors the paths of an Azure Cloud Services role instance.

``<state>/vms/<instance>/`` holds ``C/`` (logs, config, resources), ``D/`` (the OS drive's
event logs) and ``E/`` (the role: approot, sitesroot, RoleModel.xml), so the log locations
read as in the seed.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class VmDisk:
    """The paths of one role instance's VM.

    Args:
        root: the VM folder (``<state>/vms/<instance_id>``).
        deployment_id: the deployment's id (a hex guid in Azure).
        role: the role name.
        instance_id: e.g. ``WebRole1_IN_0``.
    """

    root: Path
    deployment_id: str
    role: str
    instance_id: str

    # -- C: the resources drive ------------------------------------------------------------------

    @property
    def logs(self) -> Path:
        """C/Logs: the guest agent's logs."""
        return self.root / "C" / "Logs"

    @property
    def app_agent_log(self) -> Path:
        """C/Logs/WaAppAgent.log: status and heartbeats, every 2-3 s."""
        return self.logs / "WaAppAgent.log"

    @property
    def app_agent_runtime_log(self) -> Path:
        """C/Logs/AppAgentRuntime.log: starts, stops and new configurations."""
        return self.logs / "AppAgentRuntime.log"

    @property
    def config_dir(self) -> Path:
        """C/Config: where the guest agent copies the instance's XML configuration."""
        return self.root / "C" / "Config"

    @property
    def config_file(self) -> Path:
        """C/Config/<deploymentId>.<role>.<instance>.xml."""
        return self.config_dir / f"{self.deployment_id}.{self.role}.{self.instance_id}.xml"

    @property
    def firewall_file(self) -> Path:
        """C/Config/Firewall.json: the rules recorded for the instance (only its endpoints open)."""
        return self.config_dir / "Firewall.json"

    @property
    def chaos_file(self) -> Path:
        """C/Config/Chaos.json: faults chaos asked for at the next role start (read once)."""
        return self.config_dir / "Chaos.json"

    @property
    def certificates_dir(self) -> Path:
        """C/Certificates: certificates, owner-only."""
        return self.root / "C" / "Certificates"

    @property
    def resources(self) -> Path:
        """C/Resources/Directory."""
        return self.root / "C" / "Resources" / "Directory"

    @property
    def role_resources(self) -> Path:
        """C/Resources/Directory/<deploymentId>.<role>: WaIISHost.log, IISConfigurator.log."""
        return self.resources / f"{self.deployment_id}.{self.role}"

    @property
    def diagnostic_store(self) -> Path:
        """C/Resources/Directory/<deploymentId>.<role>.DiagnosticStore."""
        return self.resources / f"{self.deployment_id}.{self.role}.DiagnosticStore"

    @property
    def bootstrapper_log(self) -> Path:
        """.../DiagnosticStore/WaHostBootstrapper.log."""
        return self.diagnostic_store / "WaHostBootstrapper.log"

    @property
    def iis_log_dir(self) -> Path:
        """.../DiagnosticStore/LogFiles/W3SVC1: the W3C access logs."""
        return self.diagnostic_store / "LogFiles" / "W3SVC1"

    @property
    def role_temp(self) -> Path:
        """C/Resources/temp/<deploymentId>.<role>/RoleTemp: the role's TEMP folder."""
        return self.root / "C" / "Resources" / "temp" / f"{self.deployment_id}.{self.role}" / "RoleTemp"

    @property
    def runtime_dir(self) -> Path:
        """C/Runtime: the bootstrapper's sockets (plugin agents' readiness), root's only."""
        return self.root / "C" / "Runtime"

    def role_log(self, name: str) -> Path:
        """A role-side log in the role's resources folder (WaIISHost.log, IISConfigurator.log ...)."""
        return self.role_resources / name

    def local_resource(self, name: str) -> Path:
        """The folder of a LocalStorage resource."""
        return self.resources / f"{self.deployment_id}.{self.role}.{name}"

    # -- D: the OS drive -------------------------------------------------------------------------

    @property
    def event_logs(self) -> Path:
        """D/Windows/System32/Winevt/Logs."""
        return self.root / "D" / "Windows" / "System32" / "Winevt" / "Logs"

    # -- E: the role drive -----------------------------------------------------------------------

    @property
    def approot(self) -> Path:
        """E/approot: the role's code."""
        return self.root / "E" / "approot"

    def site_root(self, index: int) -> Path:
        """E/sitesroot/<index>: a site's files, 0-based in <Sites> order."""
        return self.root / "E" / "sitesroot" / str(index)

    @property
    def role_model(self) -> Path:
        """E/RoleModel.xml: the role model the bootstrapper reads its startup tasks from."""
        return self.root / "E" / "RoleModel.xml"

    # -- life ------------------------------------------------------------------------------------

    def create(self) -> None:
        """Make every folder (idempotent); certificates are owner-only."""
        for folder in (
            self.logs,
            self.config_dir,
            self.resources,
            self.role_resources,
            self.diagnostic_store,
            self.iis_log_dir,
            self.role_temp,
            self.event_logs,
            self.approot.parent,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        self.certificates_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.certificates_dir, 0o700)

    def wipe_role_drive(self) -> None:
        """Remove E/ (reimage keeps nothing of the role; C/Logs stays for the post-mortem)."""
        shutil.rmtree(self.root / "E", ignore_errors=True)

    def wipe(self) -> None:
        """Remove the whole VM folder (a reimage: a fresh disk)."""
        shutil.rmtree(self.root, ignore_errors=True)
