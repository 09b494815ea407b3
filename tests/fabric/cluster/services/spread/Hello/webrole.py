"""The HWC role's entry point: runs in the same WaWebHost process as the WSGI site."""

from roles import RoleEntryPoint


class HelloRole(RoleEntryPoint):
    def on_start(self) -> bool:  # a plain def works too: it runs in a worker thread
        return True
