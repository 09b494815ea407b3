"""A WSGI site that says which instance answered and on which address it listens."""

from roles import RoleEnvironment


def application(environ, start_response):
    me = RoleEnvironment.current_instance
    endpoint = me.instance_endpoints["HttpIn"]
    body = f"{me.id} {endpoint.host}:{endpoint.port}\n"
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [body.encode()]
