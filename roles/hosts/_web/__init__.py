"""The web serving core shared by W3WP and WaWebHost: sites, routing, W3C log, hypercorn."""

from __future__ import annotations

from .lifespan import LifespanError as LifespanError
from .routing import EndpointRouter as EndpointRouter
from .routing import RequestTracker as RequestTracker
from .routing import SiteDispatcher as SiteDispatcher
from .serve import serve_sites as serve_sites
from .sites import LoadedSite as LoadedSite
from .sites import SiteKind as SiteKind
from .sites import SiteLoadError as SiteLoadError
from .sites import load_site as load_site
from .spec import BindingSpec as BindingSpec
from .spec import CertificateSpec as CertificateSpec
from .spec import SiteSpec as SiteSpec
from .spec import TlsEndpointSpec as TlsEndpointSpec
from .spec import VirtualApplicationSpec as VirtualApplicationSpec
from .spec import VirtualDirectorySpec as VirtualDirectorySpec
from .spec import WebSpec as WebSpec
from .spec import WebSpecError as WebSpecError
from .spec import dump_web_spec as dump_web_spec
from .spec import load_web_spec as load_web_spec
from .static import StaticFiles as StaticFiles
from .tls import TlsContexts as TlsContexts
from .w3c import AccessRecord as AccessRecord
from .w3c import W3CLog as W3CLog
from .w3c import parse_log as parse_log
