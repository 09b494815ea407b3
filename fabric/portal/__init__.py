"""The management portal, served by RDFE at ``/`` of the API address: sign-in with the API token
(a session secret the page keeps per origin and sends in a header), views filled by plain JavaScript from the API, live by
server-sent events, and chaos reports drawn as SVG on the server (see fabric.portal.routes)."""

from __future__ import annotations

from fabric.portal.routes import owns as owns
from fabric.portal.routes import route as route
from fabric.portal.routes import session_allows as session_allows
