"""HTTPS benchmark: a web role's https endpoint (W3WP terminating TLS) through the load balancer,
beside the same W3WP reached directly, in the same run.

    .venv/bin/python benchmarks/https.py [--requests N]

Two figures, each against its raw baseline: requests with a new TLS connection each (a full
handshake every time, as a browser's first visit), and requests on one kept-alive connection.
The load balancer passes the TCP stream through, so the ratio is what that relay costs.
"""

from __future__ import annotations

import argparse
import ssl
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/actors.py is named after the package: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import anyio  # noqa: E402
import httpx  # noqa: E402

from fabric.certs import self_signed  # noqa: E402
from fabric.client import AsyncFabricClient  # noqa: E402
from fabric.client.deployments import deploy_service  # noqa: E402
from fabric.server import open_fabric  # noqa: E402
from fabric.settings import Settings  # noqa: E402

CSDEF = """<?xml version="1.0" encoding="utf-8"?>
<ServiceDefinition name="Bench" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition">
  <WebRole name="Web" vmsize="ExtraSmall">
    <Sites><Site name="Site"><Bindings><Binding name="In" endpointName="HttpsIn" /></Bindings></Site></Sites>
    <Endpoints><InputEndpoint name="HttpsIn" protocol="https" port="9443" certificate="Ssl" /></Endpoints>
    <Certificates><Certificate name="Ssl" storeLocation="LocalMachine" storeName="My" /></Certificates>
  </WebRole>
</ServiceDefinition>
"""
CSCFG = """<?xml version="1.0" encoding="utf-8"?>
<ServiceConfiguration serviceName="Bench" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration">
  <Role name="Web"><Instances count="1" />
    <Certificates><Certificate name="Ssl" thumbprint="{thumbprint}" thumbprintAlgorithm="sha1" /></Certificates>
  </Role>
</ServiceConfiguration>
"""
ASGI = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


async def rate(url: str, trust: ssl.SSLContext, count: int, *, fresh: bool) -> float:
    """Requests per second to ``url``: a new connection each (fresh) or one kept alive."""
    headers = {"connection": "close"} if fresh else {}
    async with httpx.AsyncClient(verify=trust, trust_env=False, timeout=30) as http:
        await http.get(url, extensions={"sni_hostname": "bench.test"})  # W3WP started, warm
        started = time.perf_counter()
        for _ in range(count):
            response = await http.get(url, headers=headers, extensions={"sni_hostname": "bench.test"})
            response.raise_for_status()
        return count / (time.perf_counter() - started)


async def main(count: int) -> None:
    """Deploy the bench service and print both figures beside their baselines."""
    made = self_signed(["bench.test"])
    trust = ssl.create_default_context(cadata=made.certificate_pem())
    with tempfile.TemporaryDirectory(prefix="reddog-https-") as tmp:
        service = Path(tmp) / "bench"
        (service / "Web").mkdir(parents=True)
        (service / "Web" / "asgi.py").write_text(ASGI)
        (service / "ServiceDefinition.csdef").write_text(CSDEF)
        (service / "ServiceConfiguration.Local.cscfg").write_text(CSCFG.format(thumbprint=made.thumbprint))
        async with (
            open_fabric(Path(tmp) / "state", Settings.fast()) as fabric,
            AsyncFabricClient(fabric.state_dir) as client,
        ):
            await client.create_hosted_service("bench")
            pem = made.certificate_pem().encode() + made.key_pem()
            await client.add_certificate("bench", pem, certificate_format="pem")
            await deploy_service(client, service, None)
            view = await client.deployment("bench", "production")
            while not all(i.status == "ReadyRole" for i in view.instances):
                await anyio.sleep(0.1)
                view = await client.deployment("bench", "production")
            public = view.endpoints[0]
            direct = view.instances[0].endpoints["HttpsIn"]
            through = f"https://{public.host}:{public.port}/"
            raw = f"https://{direct}/"
            for fresh, what in (
                (True, "new TLS connection per request"),
                (False, "one kept-alive connection"),
            ):
                lb = await rate(through, trust, count, fresh=fresh)
                baseline = await rate(raw, trust, count, fresh=fresh)
                print(
                    f"{what:<32} through the load balancer {lb:8.0f} req/s   "
                    f"W3WP directly {baseline:8.0f} req/s   ratio {lb / baseline:.2f}x"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per figure")
    anyio.run(main, parser.parse_args().requests, backend="trio")
