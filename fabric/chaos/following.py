"""An HTTP transport that follows a replicated controller: every replica's address, not one.

A chaos run may kill or hang the very replica its client talks to. This transport sends each
request to the replica it last reached; when that one refuses connections (dead) it tries the
replicas running now (their lock files in the shared state folder, fabric.chaos.replicas), any
of which forwards to the leader. A ``503`` that changed nothing (an election, a leader taking
over, the database away) is sent again after its Retry-After, until ``patience`` runs out; a
request whose leader went away while answering it is not (it may have landed), nor is anything
once the patience is spent: the caller sees the last answer or error.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import anyio.to_thread
import httpx

from fabric.chaos.replicas import running_replicas
from fabric.client.tls import folder_verify

log = logging.getLogger("fabric.chaos")

#: a 503 whose change may have landed: never sent again (fabric.replica.front)
_IN_DOUBT = b"went away while answering"
#: the longest wait between two tries
MAX_WAIT = 1.0


class FollowingTransport(httpx.AsyncBaseTransport):
    """Send to a live replica of ``state_dir``'s controller, waiting out an election.

    Args:
        state_dir: the replicas' shared state folder.
        patience: how long one request may keep trying (seconds).
    """

    def __init__(self, state_dir: Path, patience: float = 60.0) -> None:
        self.state_dir = state_dir
        self.patience = patience
        self.inner = httpx.AsyncHTTPTransport(verify=folder_verify(state_dir))  # https: the cluster CA
        #: the address last reached ("scheme://host:port"), None: pick again
        self.current: str | None = None

    async def _addresses(self, first: httpx.URL) -> list[str]:
        running = await anyio.to_thread.run_sync(running_replicas, self.state_dir)
        urls = [url.rstrip("/") for _, url in sorted(running.values())]
        preferred = self.current or f"{first.scheme}://{first.netloc.decode('ascii')}"
        return [preferred] + [u for u in urls if u != preferred]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()  # sent again as it is: the chaos API's bodies are small JSON
        deadline = anyio.current_time() + self.patience
        while True:
            for base in await self._addresses(request.url):
                target = httpx.URL(base)
                url = request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)
                headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"host"]
                sent = httpx.Request(request.method, url, headers=headers, content=request.content)
                sent.extensions = request.extensions
                try:
                    response = await self.inner.handle_async_request(sent)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    log.info("replica at %s not reached (%s); trying another", base, type(exc).__name__)
                    if self.current == base:
                        self.current = None
                    if anyio.current_time() >= deadline:
                        raise
                    continue
                self.current = base
                if response.status_code != 503 or anyio.current_time() >= deadline:
                    return response
                body = await response.aread()
                await response.aclose()
                if _IN_DOUBT in body:
                    return httpx.Response(503, headers=response.headers, content=body, request=request)
                wait = response.headers.get("retry-after", "1")
                await anyio.sleep(min(MAX_WAIT, float(wait) if wait.isdigit() else MAX_WAIT))
                break
            else:
                await anyio.sleep(0.2)  # none answered: the replicas may be restarting

    async def aclose(self) -> None:
        await self.inner.aclose()
