"""InstanceInputEndpoint: port N of a public range forwarded to the N-th instance."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from functools import partial

import anyio

from ._errors import InvalidSpecError, NoFreePortError
from ._model import Backend, EndpointProtocol, EndpointSpec
from .load_balancer import LoadBalancer, serve_load_balancer


class InstanceForwarder:
    """The forwarders of one instance input endpoint; get one from open_instance_forwarder.

    Each port of the range in use is a one-instance load balancer: every instance
    gets its port whatever its status (as Azure forwards instance input endpoints
    straight to the instance), and a refused connect is simply retried next time.
    """

    def __init__(
        self,
        name: str,
        ports: range,
        protocol: EndpointProtocol,
        host: str,
        toxics: bool,
        tg: anyio.abc.TaskGroup,
    ) -> None:
        self.name = name
        self.ports = ports
        self._protocol = protocol
        self._host = host
        self._toxics = toxics
        self._tg = tg
        self._balancers: list[LoadBalancer] = []

    @property
    def balancers(self) -> list[LoadBalancer]:
        """The balancer of each port in use, in port order (for stats and toxics)."""
        return list(self._balancers)

    def addresses(self) -> dict[str, tuple[str, int]]:
        """The public (host, port) of each instance, by instance id."""
        return {lb.backends()[0].instance_id: lb.address for lb in self._balancers}

    async def set_backends(self, backends: Iterable[Backend]) -> None:
        """Map the instances, in instance id order, onto the range's ports.

        An instance moving to another port keeps its open connections (they drain).

        Raises:
            InvalidSpecError: more instances than ports in the range.
            NoFreePortError: a port of the range is taken by another program.
        """
        ordered = sorted(backends, key=lambda b: b.instance_id)
        if len(ordered) > len(self.ports):
            raise InvalidSpecError(
                f"instance input endpoint {self.name!r}: {len(ordered)} instances but only "
                f"{len(self.ports)} ports in {self.ports.start}-{self.ports.stop - 1}: "
                "widen the port range"
            )
        for index, backend in enumerate(ordered):
            if index < len(self._balancers):
                self._balancers[index].set_backends([backend])
            else:
                self._balancers.append(await self._open(index, backend))
        while len(self._balancers) > len(ordered):
            await self._balancers.pop().aclose()

    async def aclose(self) -> None:
        """Stop every port's forwarding and end their connections."""
        while self._balancers:
            await self._balancers.pop().aclose()

    async def _open(self, index: int, backend: Backend) -> LoadBalancer:
        port = self.ports[index]
        spec = EndpointSpec(
            f"{self.name}[{port}]",
            self._protocol,
            port,
            ignore_role_instance_status=True,
        )
        start = partial(
            serve_load_balancer,
            spec,
            [backend],
            host=self._host,
            toxics=self._toxics,
            port_attempts=1,
            keep_refused=True,
            # One instance a port, whose refused connect resets the client at once: the kernel
            # path would hide the refusal behind a SYN retransmit (1 s). User space only.
            kernel=False,
        )
        try:
            lb: LoadBalancer = await self._tg.start(start)
        except NoFreePortError:
            raise NoFreePortError(
                f"instance input endpoint {self.name!r}: port {port} on {self._host} "
                f"(for {backend.instance_id}) is taken; free it or move the port range"
            ) from None
        return lb


@asynccontextmanager
async def open_instance_forwarder(
    name: str,
    ports: range,
    backends: Iterable[Backend] = (),
    *,
    protocol: EndpointProtocol = "tcp",
    host: str = "127.0.0.1",
    toxics: bool = True,
) -> AsyncIterator[InstanceForwarder]:
    """Forward port N of ``ports`` to the N-th of ``backends`` (by instance id) until exit.

    Raises:
        InvalidSpecError: an empty range, or more instances than ports.
        NoFreePortError: a port of the range is taken.
    """
    if len(ports) == 0 or ports.step != 1 or not 0 < ports.start < ports.stop <= 65536:
        raise InvalidSpecError(
            f"instance input endpoint {name!r}: give a non-empty range of ports, e.g. range(10000, 10010)"
        )
    error: Exception | None = None
    async with anyio.create_task_group() as tg:
        forwarder = InstanceForwarder(name, ports, protocol, host, toxics, tg)
        try:
            await forwarder.set_backends(backends)
            yield forwarder
        except Exception as exc:
            # Re-raised below, outside the task group, so callers see it unwrapped.
            error = exc
        finally:
            tg.cancel_scope.cancel()
    if error is not None:
        raise error
