"""Site beta: answers its name and the instance that served it (the health page too)."""

import os


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = f"beta {scope['scheme']} {os.environ.get('RoleInstanceID', '')}".encode()  # noqa: SIM112 (Azure's name)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
