"""The load balancer: one per InputEndpoint, spreading connections over role instances.

    spec = EndpointSpec("HttpIn", "http", 8080)
    async with open_load_balancer(spec, [Backend("web_IN_0", "127.0.0.1", 20000)]) as lb:
        print(lb.address)                      # ("127.0.0.1", 8080), or the next free port
        lb.update("web_IN_0", busy=True)       # out of rotation for the next connection
        toxic = lb.add_toxic(Latency(latency=100))
        lb.remove_toxic(toxic)

Instance input endpoints: ``open_instance_forwarder(name, range(10000, 10010), backends)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fabric.lazy import lazy_exports

# Loaded on first use: importing a module of this package (its toxics, say, as the
# chaos API's messages do) must not load the load balancer and its probes.
_EXPORTS: dict[str, str] = {
    "InvalidSpecError": "fabric.network._errors",
    "NetworkError": "fabric.network._errors",
    "NoFreePortError": "fabric.network._errors",
    "ToxicsUnsupportedError": "fabric.network._errors",
    "UnknownBackendError": "fabric.network._errors",
    "UnknownToxicError": "fabric.network._errors",
    "InstanceForwarder": "fabric.network._instance",
    "open_instance_forwarder": "fabric.network._instance",
    "Backend": "fabric.network._model",
    "BackendStats": "fabric.network._model",
    "EndpointProtocol": "fabric.network._model",
    "EndpointSpec": "fabric.network._model",
    "LoadBalancerStats": "fabric.network._model",
    "ProbeSpec": "fabric.network._model",
    "LoadBalancer": "fabric.network.load_balancer",
    "open_load_balancer": "fabric.network.load_balancer",
    "serve_load_balancer": "fabric.network.load_balancer",
    "share_ports": "fabric.network.load_balancer",
    "shared_listening": "fabric.network.load_balancer",
    "synced": "fabric.network.load_balancer",
    "Bandwidth": "fabric.network.toxics",
    "Latency": "fabric.network.toxics",
    "ResetPeer": "fabric.network.toxics",
    "SlowClose": "fabric.network.toxics",
    "Timeout": "fabric.network.toxics",
    "Toxic": "fabric.network.toxics",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from fabric.network._errors import InvalidSpecError as InvalidSpecError
    from fabric.network._errors import NetworkError as NetworkError
    from fabric.network._errors import NoFreePortError as NoFreePortError
    from fabric.network._errors import ToxicsUnsupportedError as ToxicsUnsupportedError
    from fabric.network._errors import UnknownBackendError as UnknownBackendError
    from fabric.network._errors import UnknownToxicError as UnknownToxicError
    from fabric.network._instance import InstanceForwarder as InstanceForwarder
    from fabric.network._instance import open_instance_forwarder as open_instance_forwarder
    from fabric.network._model import Backend as Backend
    from fabric.network._model import BackendStats as BackendStats
    from fabric.network._model import EndpointProtocol as EndpointProtocol
    from fabric.network._model import EndpointSpec as EndpointSpec
    from fabric.network._model import LoadBalancerStats as LoadBalancerStats
    from fabric.network._model import ProbeSpec as ProbeSpec
    from fabric.network.load_balancer import LoadBalancer as LoadBalancer
    from fabric.network.load_balancer import open_load_balancer as open_load_balancer
    from fabric.network.load_balancer import serve_load_balancer as serve_load_balancer
    from fabric.network.load_balancer import share_ports as share_ports
    from fabric.network.load_balancer import shared_listening as shared_listening
    from fabric.network.load_balancer import synced as synced
    from fabric.network.toxics import Bandwidth as Bandwidth
    from fabric.network.toxics import Latency as Latency
    from fabric.network.toxics import ResetPeer as ResetPeer
    from fabric.network.toxics import SlowClose as SlowClose
    from fabric.network.toxics import Timeout as Timeout
    from fabric.network.toxics import Toxic as Toxic


__getattr__ = lazy_exports(globals(), _EXPORTS)
