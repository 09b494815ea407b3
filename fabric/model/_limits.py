"""The numbers a service model may carry, and the arithmetic that checks them before anything is built.

Every count in a definition or configuration becomes processes, ports, folders or cores; each
is bounded here so a typo or a hostile upload is refused by comparing numbers, in the time it
takes to read the file, with one line that says what to change.
"""

from __future__ import annotations

from fabric.model._source import Loc, Report
from fabric.model.configuration import ServiceConfiguration
from fabric.model.definition import ServiceDefinition

#: Instances one deployment may have, all roles together. Azure bounded a subscription by its
#: core quota (20 cores by default, raised on request); the fabric's ``max_instances`` setting
#: plays that part and defaults to this.
MAX_INSTANCES = 1000
#: Startup tasks of one role: each is a process the bootstrapper starts at every boot.
MAX_STARTUP_TASKS = 32
#: LocalStorage resources of one role, and the megabytes they may claim together: the local
#: disk of the largest classic size (ExtraLarge, 2,040 GB).
MAX_LOCAL_STORAGES = 32
MAX_LOCAL_STORAGE_MB = 2040 * 1024
#: Sites of a web role: each binds ports and may start a web worker process.
MAX_SITES = 25
#: FixedPort and FixedPortRange elements of one internal endpoint.
MAX_FIXED_PORT_ENTRIES = 32
#: The longest a load balancer probe may wait between probes, or for an answer (seconds).
MAX_PROBE_SECONDS = 3600


def check_definition_limits(d: ServiceDefinition, report: Report) -> None:
    """Report every count of the definition that is over its limit."""
    for i, probe in enumerate(d.load_balancer_probes):
        for field in ("interval_in_seconds", "timeout_in_seconds"):
            value = getattr(probe, field)
            if value > MAX_PROBE_SECONDS:
                report.error(
                    ("load_balancer_probes", i, field),
                    f"{value} seconds is too long; use at most {MAX_PROBE_SECONDS}",
                )
    for i, role in enumerate(d.roles):
        loc: Loc = ("roles", i)
        _at_most(
            report,
            (*loc, "startup"),
            len(role.startup),
            MAX_STARTUP_TASKS,
            f"role {role.name}",
            "startup tasks",
        )
        _at_most(report, (*loc, "sites"), len(role.sites), MAX_SITES, f"role {role.name}", "sites")
        _at_most(
            report,
            (*loc, "local_storage"),
            len(role.local_storage),
            MAX_LOCAL_STORAGES,
            f"role {role.name}",
            "LocalStorage resources",
        )
        total_mb = sum(s.size_in_mb for s in role.local_storage)
        if total_mb > MAX_LOCAL_STORAGE_MB:
            report.error(
                (*loc, "local_storage"),
                f"role {role.name} asks for {total_mb} MB of LocalStorage in all; an instance's local "
                f"disk holds at most {MAX_LOCAL_STORAGE_MB} MB, so lower sizeInMB",
            )
        for j, e in enumerate(role.internal_endpoints):
            entries = len(e.fixed_ports) + len(e.fixed_port_ranges)
            _at_most(
                report,
                (*loc, "internal_endpoints", j),
                entries,
                MAX_FIXED_PORT_ENTRIES,
                f"internal endpoint {e.name}",
                "FixedPort and FixedPortRange elements",
            )


def _at_most(report: Report, loc: Loc, count: int, limit: int, owner: str, what: str) -> None:
    if count > limit:
        report.error(loc, f"{owner} has {count} {what}; at most {limit} are allowed, remove some")


def check_instance_limit(c: ServiceConfiguration, report: Report, max_instances: int = MAX_INSTANCES) -> None:
    """Report instance counts over the per-deployment limit (all roles together)."""
    total = 0
    for i, rc in enumerate(c.roles):
        total += rc.instances
        if rc.instances > max_instances:
            report.error(
                ("roles", i, "instances"),
                f"{rc.instances} instances of role {rc.name} is over the limit of {max_instances} "
                "per deployment; lower the count (the fabric's max_instances setting sets the limit)",
            )
            return
    if total > max_instances:
        report.error(
            ("roles",),
            f"the roles ask for {total} instances together; a deployment may have at most "
            f"{max_instances}, so lower the counts (the fabric's max_instances setting sets the limit)",
        )
