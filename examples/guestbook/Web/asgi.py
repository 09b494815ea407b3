"""The guestbook site: an ASGI app served by W3WP behind the load balancer.

Entries live in the Worker role, found through RoleEnvironment (its internal "Store"
endpoint on every worker instance): writes go to every worker, reads to the first that answers.
"""

import html
import json
from urllib.parse import parse_qs

import anyio

from roles import RoleEnvironment


async def store(command: str) -> list[str]:
    """Send one line to every worker's Store endpoint; return the first answer's entries."""
    answers: list[list[str]] = []
    worker = RoleEnvironment.roles.get("Worker")
    for instance in worker.instances if worker else []:
        endpoint = instance.instance_endpoints.get("Store")
        if endpoint is None:
            continue
        try:
            with anyio.fail_after(2):
                async with await anyio.connect_tcp(endpoint.host, endpoint.port) as conn:
                    await conn.send(command.encode() + b"\n")
                    data = b""
                    while not data.endswith(b"\n"):
                        data += await conn.receive()
            answers.append(json.loads(data))
        except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, ValueError):
            continue  # that worker is restarting: the others have the entries too
    return answers[0] if answers else []


async def read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["method"] == "POST" and scope["path"] == "/sign":
        fields = parse_qs((await read_body(receive)).decode())
        text = " ".join(fields.get("entry", [""])).strip()[:200]
        if text:
            await store("ADD " + json.dumps(text))
        await send({"type": "http.response.start", "status": 303, "headers": [(b"location", b"/")]})
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"] == "/health":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})
        return
    entries = await store("LIST")
    title = html.escape(RoleEnvironment.get_config_setting("Title"))
    items = "".join(f"<li>{html.escape(e)}</li>" for e in entries)
    page = (
        f"<!doctype html><title>{title}</title><h1>{title}</h1>"
        f"<p>served by {html.escape(RoleEnvironment.current_instance.id)}</p>"
        f"<form method=post action=/sign><input name=entry><button>Sign</button></form><ul>{items}</ul>"
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/html; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": page.encode()})
