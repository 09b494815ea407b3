"""Configuration and status types of the load balancer, as frozen msgspec Structs."""

from __future__ import annotations

from typing import Literal

import msgspec

from ._errors import InvalidSpecError

EndpointProtocol = Literal["tcp", "http", "https", "udp"]
ProbeProtocol = Literal["http", "https", "tcp"]


class ProbeSpec(msgspec.Struct, frozen=True):
    """A LoadBalancerProbe: how the load balancer checks an instance's health itself.

    When an endpoint has a probe it overrides the role status (as in Azure, where a
    custom probe replaces the guest agent's): an instance is in rotation once a probe
    passes, and leaves it after failing probes for ``timeout`` seconds.

    Args:
        protocol: ``"tcp"`` (a connect must succeed) or ``"http"`` (GET must answer 200).
        port: the port probed on each instance, unless ``Backend.probe_port`` says
            otherwise; 0 probes the backend's own port.
        path: the HTTP path requested (http only).
        interval: seconds between probes (Azure default 15).
        timeout: seconds of failing probes after which the instance leaves rotation
            (Azure default 31).
    """

    protocol: ProbeProtocol = "tcp"
    port: int = 0
    path: str = "/"
    interval: float = 15.0
    timeout: float = 31.0

    def __post_init__(self) -> None:
        if self.protocol not in ("http", "https", "tcp"):
            raise InvalidSpecError(f"probe protocol {self.protocol!r}: use 'http', 'https' or 'tcp'")
        if not 0 <= self.port <= 65535:
            raise InvalidSpecError(f"probe port {self.port}: use a port in 0..65535")
        if self.interval <= 0 or self.timeout <= 0:
            raise InvalidSpecError("probe interval and timeout must be positive seconds")
        if not self.path.startswith("/"):
            raise InvalidSpecError(f"probe path {self.path!r}: start it with '/'")


class EndpointSpec(msgspec.Struct, frozen=True):
    """An InputEndpoint as the load balancer sees it.

    Args:
        name: the endpoint's name in the service definition (used in logs).
        protocol: ``tcp``, ``http`` and ``https`` are all balanced as TCP; ``udp`` as
            datagrams.
        public_port: the port wanted on the public address; when it is taken the next
            free one is used (see ``LoadBalancer.address``); 0 picks any free port.
        ignore_role_instance_status: put every backend in rotation whatever its status.
        probe: a LoadBalancerProbe overriding the role status, or None.
    """

    name: str
    protocol: EndpointProtocol = "tcp"
    public_port: int = 0
    ignore_role_instance_status: bool = False
    probe: ProbeSpec | None = None

    def __post_init__(self) -> None:
        if self.protocol not in ("tcp", "http", "https", "udp"):
            raise InvalidSpecError(
                f"endpoint {self.name!r}: protocol {self.protocol!r} is not tcp, http, https or udp"
            )
        if not 0 <= self.public_port <= 65535:
            raise InvalidSpecError(
                f"endpoint {self.name!r}: public port {self.public_port} is not in 0..65535"
            )


class Backend(msgspec.Struct, frozen=True):
    """One role instance behind an endpoint: where to connect, and its reported status.

    ``probe_port`` is where this instance answers the endpoint's probe, when instances
    share a host and so cannot all use ``ProbeSpec.port``.
    """

    instance_id: str
    host: str
    port: int
    ready: bool = True
    busy: bool = False
    probe_port: int | None = None


class BackendStats(msgspec.Struct, frozen=True):
    """Counters of one backend; bytes_up flow client->instance, bytes_down back.

    ``refusing``: its last connect was refused, so it gets only a trial connection, in
    ``retry_in`` seconds (``refused_in_a_row`` refusals so far); ``refused`` counts all.
    """

    instance_id: str
    host: str
    port: int
    in_rotation: bool
    draining: bool
    active: int
    connections: int
    refused: int
    bytes_up: int
    bytes_down: int
    refusing: bool = False
    refused_in_a_row: int = 0
    retry_in: float = 0.0


class LoadBalancerStats(msgspec.Struct, frozen=True):
    """Counters of one endpoint: per backend, and totals since it opened.

    ``connections`` counts every client connection accepted (for UDP: client
    sessions), ``refused`` the connects instances refused (each retried elsewhere),
    and ``rejected`` the client connections reset because no instance could take them.
    """

    endpoint: str
    host: str
    port: int
    backends: tuple[BackendStats, ...]
    active: int
    connections: int
    refused: int
    rejected: int
    bytes_up: int
    bytes_down: int
