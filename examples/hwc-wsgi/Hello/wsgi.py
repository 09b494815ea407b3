"""A WSGI site, served inside WaWebHost together with the role's entry point."""

from roles import RoleEnvironment


def application(environ, start_response):
    body = f"{RoleEnvironment.get_config_setting('Message')} ({RoleEnvironment.current_instance.id})\n"
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [body.encode()]
