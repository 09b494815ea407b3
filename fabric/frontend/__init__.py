"""RDFE and FFE: the HTTP Service Management API and its translation into fabric commands.

The embedded fabric starts them as::

    ffe = await system.spawn(lambda: Ffe([Pool("local", controller)], state_dir), name="ffe")
    url = await task_group.start(partial(serve_api, ffe, state_dir, port=port))

and clients find it through ``<state>/api`` and ``<state>/token`` (see ``client.FabricClient``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fabric.lazy import lazy_exports

# Loaded on first use: importing a module of this package (its API messages, say,
# as the API client does) must not load RDFE, the portal and the metrics.
_EXPORTS: dict[str, str] = {
    "ApiError": "fabric.frontend.api",
    "Ffe": "fabric.frontend.ffe",
    "Pool": "fabric.frontend.ffe",
    "Rdfe": "fabric.frontend.rdfe",
    "serve_api": "fabric.frontend.rdfe",
    "StoreError": "fabric.frontend.store",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from fabric.frontend.api import ApiError as ApiError
    from fabric.frontend.ffe import Ffe as Ffe
    from fabric.frontend.ffe import Pool as Pool
    from fabric.frontend.rdfe import Rdfe as Rdfe
    from fabric.frontend.rdfe import serve_api as serve_api
    from fabric.frontend.store import StoreError as StoreError


__getattr__ = lazy_exports(globals(), _EXPORTS)
