"""Test a RoleEntryPoint in this process, in milliseconds, with the fabric's own role host code.

::

    from roles.testing import open_role

    async def test_worker_greets() -> None:
        async with open_role(Worker, settings={"Greeting": "hi"}, endpoints={"HttpIn": "http"}) as role:
            assert await role.start()              # on_start's answer; run is now running
            assert not await role.status_check()   # no handler called set_busy()
            assert await role.stop()               # stopping and on_stop, within on_stop_timeout

With pytest, the ``role_harness`` fixture (installed with reddog) opens the same harness with
LocalStorage under the test's tmp_path, and builds it from a service's csdef and cscfg too.
Under trio's autojump clock a role that sleeps for minutes is tested in milliseconds.
"""

from __future__ import annotations

from roles.hosts._common import RoleFailed as RoleFailed
from roles.protocol import Change as Change

from ._harness import ChangeResult as ChangeResult
from ._harness import RoleHarness as RoleHarness
from ._harness import open_role as open_role
from ._spec import PeerRole as PeerRole
from ._spec import RoleSpec as RoleSpec
from ._spec import free_port as free_port
from ._spec import role_spec as role_spec
