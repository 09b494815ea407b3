"""RDFE and FFE: the HTTP Service Management API and its translation into fabric commands.

The embedded fabric starts them as::

    ffe = await system.spawn(lambda: Ffe([Pool("local", controller)], state_dir), name="ffe")
    url = await task_group.start(partial(serve_api, ffe, state_dir, port=port))

and clients find it through ``<state>/api`` and ``<state>/token`` (see ``client.FabricClient``).
"""

from __future__ import annotations

from fabric.frontend.api import ApiError as ApiError
from fabric.frontend.ffe import Ffe as Ffe
from fabric.frontend.ffe import Pool as Pool
from fabric.frontend.rdfe import Rdfe as Rdfe
from fabric.frontend.rdfe import serve_api as serve_api
from fabric.frontend.store import StoreError as StoreError
