"""The guestbook web role's entry point (run by WaIISHost); the site itself is asgi.py."""

from roles import RoleEntryPoint, RoleEnvironment


class WebRole(RoleEntryPoint):
    async def on_start(self) -> bool:
        print(f"{RoleEnvironment.current_instance.id}: site ready for requests", flush=True)
        return True
