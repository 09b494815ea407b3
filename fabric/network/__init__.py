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

from ._errors import InvalidSpecError as InvalidSpecError
from ._errors import NetworkError as NetworkError
from ._errors import NoFreePortError as NoFreePortError
from ._errors import ToxicsUnsupportedError as ToxicsUnsupportedError
from ._errors import UnknownBackendError as UnknownBackendError
from ._errors import UnknownToxicError as UnknownToxicError
from ._instance import InstanceForwarder as InstanceForwarder
from ._instance import open_instance_forwarder as open_instance_forwarder
from ._model import Backend as Backend
from ._model import BackendStats as BackendStats
from ._model import EndpointProtocol as EndpointProtocol
from ._model import EndpointSpec as EndpointSpec
from ._model import LoadBalancerStats as LoadBalancerStats
from ._model import ProbeSpec as ProbeSpec
from .load_balancer import LoadBalancer as LoadBalancer
from .load_balancer import open_load_balancer as open_load_balancer
from .load_balancer import serve_load_balancer as serve_load_balancer
from .load_balancer import share_ports as share_ports
from .load_balancer import shared_listening as shared_listening
from .load_balancer import synced as synced
from .toxics import Bandwidth as Bandwidth
from .toxics import Latency as Latency
from .toxics import ResetPeer as ResetPeer
from .toxics import SlowClose as SlowClose
from .toxics import Timeout as Timeout
from .toxics import Toxic as Toxic
