"""Every duration and limit of the fabric, with Azure's values as defaults and a fast profile.

Code reads time only through anyio, so any of these can be shortened for a demo or a test,
or run at full length under trio's autojump clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec


class SettingsError(ValueError):
    """A settings file or override is wrong; the message names the key and what to change."""


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Durations in seconds and limits. Field names are the keys of a settings TOML file."""

    #: the host agent heartbeats each guest this often (the seed's WaAppAgent.log: every 2-3 s)
    guest_heartbeat_interval: float = 2.5
    #: no heartbeat reply this long and the host agent restarts the guest OS (the seed: 10 min)
    guest_heartbeat_timeout: float = 600.0
    #: a host that stops heartbeating the controller this long is dead; its instances move
    host_failure_timeout: float = 60.0
    host_heartbeat_interval: float = 5.0
    #: the bootstrapper raises StatusCheck on the role host this often
    status_check_interval: float = 15.0
    #: a role host that does not answer a StatusCheck in this time is UnresponsiveRole
    status_check_timeout: float = 30.0
    #: an UnresponsiveRole host is recycled after this long
    role_unresponsive_timeout: float = 120.0
    #: OnStop may run this long, then the role host is killed
    on_stop_timeout: float = 300.0
    #: a startup task of the simple kind may run this long (0: no limit, as in Azure)
    simple_task_timeout: float = 0.0
    #: role host restart backoff: a first failure restarts at once; the second waits
    #: role_restart_initial, each further one role_restart_factor times longer, up to the cap;
    #: a run of role_restart_reset seconds counts as healthy and starts the count over
    role_restart_initial: float = 0.5
    role_restart_factor: float = 2.0
    role_restart_max: float = 60.0
    role_restart_reset: float = 300.0
    #: this many quick failures in a row and the instance shows CyclingRole
    role_cycling_after: int = 3
    #: a web worker (W3WP) with no request this long exits (IIS: 20 minutes)
    web_worker_idle_timeout: float = 1200.0
    #: the Diagnostics plugin samples and copies logs this often
    diagnostics_interval: float = 60.0
    #: a VM's log over this many bytes (a role's stdout, its role host's, its startup tasks',
    #: W3SVC's: a limited role writes them) keeps its newest half, checked every few seconds
    role_log_max_bytes: int = 64 * 1024 * 1024
    #: liveness pings on every process link
    link_ping_interval: float = 5.0
    link_ping_timeout: float = 15.0
    #: the polite stop of a fabric process (host, guest, bootstrapper) before SIGTERM
    process_stop_timeout: float = 30.0
    #: an instance the controller stops (reboot, reimage, upgrade, scale-in, suspend, delete)
    #: leaves rotation first, and its open load-balancer connections get this long to finish
    #: before the rest are reset and it stops (a cloud load balancer's connection draining,
    #: or deregistration delay)
    drain_timeout: float = 30.0
    #: local hosts the controller may spin up, and the cores each has
    max_hosts: int = 4
    host_cores: int = 8
    #: instances one deployment may have, all roles together (Azure's core quota played this
    #: part); checked as a number before anything is built (the model's MAX_INSTANCES is this)
    max_instances: int = 1000
    #: a package (.cspkg) larger than this is refused (413) before it is read, and an upload is
    #: streamed to a file, never held in memory: a package holds a service's code (a Python
    #: service's is kilobytes to a few megabytes; Azure took up to 600 MB of .NET binaries)
    max_package_bytes: int = 64 * 1024 * 1024
    #: controller replicas on PostgreSQL (--store): the leader's lease lasts this long past its
    #: last renewal, by the database's clock; the leader renews it this often, and stops acting
    #: when it has not renewed it for leader_renew_deadline (Kubernetes' Lease: 15, 2, 10 s)
    leader_lease_duration: float = 15.0
    leader_renew_interval: float = 2.0
    leader_renew_deadline: float = 10.0
    #: the fabric's event timeline keeps this many events (older ones are dropped)
    events_kept: int = 10_000
    #: GET /metrics answers without the API token (for a Prometheus scraper); `--metrics-public`
    metrics_public: bool = False
    #: a joined host's certificate lasts this long; it renews at a random 70-90% of it
    host_certificate_lifetime: float = 7 * 86400.0
    #: a package or certificate shipped to a joined host (and the controller's packed tar) is
    #: removed once nothing uses it and it was not shipped or asked for this long
    package_prune_after: float = 600.0

    @classmethod
    def fast(cls, **overrides: Any) -> Settings:
        """A profile for demos and tests: the same behaviour, in seconds instead of minutes."""
        values: dict[str, Any] = {
            "guest_heartbeat_interval": 0.5,
            "guest_heartbeat_timeout": 5.0,
            "host_failure_timeout": 3.0,
            "host_heartbeat_interval": 0.5,
            "status_check_interval": 1.0,
            "status_check_timeout": 2.0,
            "role_unresponsive_timeout": 3.0,
            "on_stop_timeout": 5.0,
            "role_restart_initial": 0.05,
            "role_restart_max": 2.0,
            "role_restart_reset": 10.0,
            "web_worker_idle_timeout": 60.0,
            "diagnostics_interval": 2.0,
            "link_ping_interval": 1.0,
            "link_ping_timeout": 5.0,
            "process_stop_timeout": 5.0,
            "drain_timeout": 5.0,
            "leader_lease_duration": 3.0,
            "leader_renew_interval": 0.4,
            "leader_renew_deadline": 2.0,
            "host_certificate_lifetime": 3600.0,
        }
        values.update(overrides)
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path, *, base: Settings | None = None) -> Settings:
        """Read a TOML file of overrides on top of ``base`` (the Azure defaults).

        Raises:
            SettingsError: the file is missing, not TOML, or has an unknown key or a bad value.
        """
        import tomllib

        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"{path}: no such settings file") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"{path}: not a readable TOML file: {exc}") from None
        merged = msgspec.structs.asdict(base or cls())
        merged.update(data)
        try:
            return msgspec.convert(merged, cls)
        except msgspec.ValidationError as exc:
            raise SettingsError(f"{path}: {exc}") from None
