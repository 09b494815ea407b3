"""LoadBalancerProbe: instances in and out of rotation by their own health answer."""

from __future__ import annotations

import anyio

from fabric.network import EndpointSpec, ProbeSpec, open_load_balancer

# Short intervals: an instance leaves rotation on its second failed probe. A probe must answer
# within its interval, so the interval leaves room for a loaded machine (50 ms did not: under
# the whole suite on 2 cores a health page could miss it for seconds on end).
FAST = {"interval": 0.25, "timeout": 0.6}


def http_endpoint(path: str = "/health") -> EndpointSpec:
    return EndpointSpec("HttpIn", "http", 0, probe=ProbeSpec("http", 0, path, **FAST))


async def test_http_probe_takes_an_instance_out_and_back(farm, until):
    a, b = await farm.instances(2)
    page_a, page_b = await farm.health_page(), await farm.health_page()
    pool = [a.backend(probe_port=page_a.port), b.backend(probe_port=page_b.port)]
    async with open_load_balancer(http_endpoint(), pool) as lb:
        await until(lambda: lb.rotation() == ["web_IN_0", "web_IN_1"])
        page_a.status = 503
        await until(lambda: lb.rotation() == ["web_IN_1"])
        await lb.synced()  # the kernel data path's rules follow the rotation
        assert set(await farm.who(lb.address, 3)) == {"web_IN_1"}
        page_a.status = 200
        await until(lambda: lb.rotation() == ["web_IN_0", "web_IN_1"])
        await lb.synced()
        assert set(await farm.who(lb.address, 2)) == {"web_IN_0", "web_IN_1"}


async def test_instance_is_out_until_its_first_probe_passes(farm, until):
    (a,) = await farm.instances(1)
    page = await farm.health_page()
    page.status = 500
    async with open_load_balancer(http_endpoint(), [a.backend(probe_port=page.port)]) as lb:
        await until(lambda: page.hits >= 2)
        assert lb.rotation() == []
        page.status = 200
        await until(lambda: lb.rotation() == ["web_IN_0"])


async def test_tcp_probe_follows_the_port_listening(farm, until):
    a, b = await farm.instances(2)
    # With probe port 0 the probe connects to the instance's own endpoint port.
    spec = EndpointSpec("TcpIn", "tcp", 0, probe=ProbeSpec("tcp", 0, **FAST))
    async with open_load_balancer(spec, [a.backend(), b.backend()]) as lb:
        await until(lambda: lb.rotation() == ["web_IN_0", "web_IN_1"])
        b.stop()
        await until(lambda: lb.rotation() == ["web_IN_0"])
        await b.start()
        await until(lambda: lb.rotation() == ["web_IN_0", "web_IN_1"])


async def test_probe_overrides_the_role_status(farm, until):
    # As in Azure, a custom probe replaces the guest agent's Ready/Busy answer.
    (a,) = await farm.instances(1)
    spec = EndpointSpec("TcpIn", "tcp", 0, probe=ProbeSpec("tcp", 0, **FAST))
    async with open_load_balancer(spec, [a.backend(busy=True)]) as lb:
        await until(lambda: lb.rotation() == ["web_IN_0"])
        assert await farm.who(lb.address, 1) == ["web_IN_0"]


async def test_a_passing_probe_forgives_a_refused_connect(farm, until):
    a, b = await farm.instances(2)
    page = await farm.health_page()
    spec = http_endpoint()
    pool = [a.backend(probe_port=page.port), b.backend(probe_port=page.port)]
    async with open_load_balancer(spec, pool) as lb:
        await until(lambda: len(lb.rotation()) == 2)
        await lb.synced()
        await a.stopped()  # its health page still says 200
        assert await farm.who(lb.address, 1) == ["web_IN_1"]
        assert lb.stats().refused == 1
        await a.start()
        await until(lambda: len(lb.rotation()) == 2)
        await lb.synced()
        with anyio.fail_after(5):
            assert set(await farm.who(lb.address, 2)) == {"web_IN_0", "web_IN_1"}


async def test_a_new_probe_taken_in_place_keeps_open_connections(farm, until):
    # A VIP swap between deployments whose endpoints have different probes changes the
    # balancer's probe; a connection open through it goes on (reopening it cut them).
    (a,) = await farm.instances(1)
    page = await farm.health_page()
    async with open_load_balancer(EndpointSpec("HttpIn", "http", 0), [a.backend(probe_port=page.port)]) as lb:
        client = await farm.connect(lb.address)
        assert await client.echo(b"before") == b"before"
        page.status = 503
        lb.set_spec(http_endpoint())
        await until(lambda: page.hits >= 2)
        assert lb.rotation() == []  # the new probe judges it now
        assert await client.echo(b"after") == b"after"
        page.status = 200
        await until(lambda: lb.rotation() == ["web_IN_0"])
        lb.set_spec(EndpointSpec("HttpIn", "http", 0))  # and back to the role's status
        assert lb.rotation() == ["web_IN_0"]
        assert await client.echo(b"still") == b"still"
