"""The portal's own routes, served by RDFE at ``/`` of the API address (no second server).

    GET  /                              the portal's page: a sign-in form and empty views (no data)
    POST /portal/signin                 form ``token=``: ``{"session": secret}`` for the page's script
    POST /portal/signout                ends the session
    GET  /portal/static/{app.js,app.css}
    GET  /portal/chaos/report[?service=S]   the live chaos report: two SVG charts (HTML fragment)
    GET  /portal/hosts                  hosts with heartbeat age and VMs (JSON)
    POST /portal/chaos/scenario         run a scenario (TOML body): progress, then the report (fabric.portal.scenarios)
    GET  /portal/configuration[/check]  the configuration form (fabric.portal.config_form)
    GET  /portal/instance, /portal/logs/stream   an instance's detail and live logs (fabric.portal.instance)

Everything else the portal shows comes from the API itself (deployments, chaos, events), which
takes a portal session in its ``X-Reddog-Session`` header (fabric.portal.sessions) in place of the
bearer token.
"""

from __future__ import annotations

import weakref
from importlib import resources
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

import anyio
import msgspec
import psutil  # type: ignore[import-untyped]

from fabric.frontend._http import Request, Response
from fabric.frontend.api import ApiError, not_found
from fabric.frontend.auth import token_matches
from fabric.frontend.events_routes import event_log
from fabric.frontend.metrics_routes import snapshots
from fabric.frontend.streams import RawResponse
from fabric.portal import config_form, instance, scenarios
from fabric.portal.pages import portal_page
from fabric.portal.report import live_report
from fabric.portal.sessions import SESSION_SECONDS, Sessions

if TYPE_CHECKING:
    from fabric.frontend.rdfe import Rdfe

#: a sign-in form is a token and little else
SIGNIN_MAX_BYTES: Final = 4096
#: and arrives at once: anyone may send one (before any credential), and a form dribbled a byte
#: at a time would hold its connection for as long as the sender liked
SIGNIN_SECONDS = 10.0
_STATIC: Final = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
_HTML: Final = "text/html; charset=utf-8"
#: no inline script, no other origin, no framing: what an injected string could do is nothing
SECURITY_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}

_sessions: weakref.WeakKeyDictionary[Any, Sessions] = weakref.WeakKeyDictionary()


def sessions_of(rdfe: Rdfe) -> Sessions:
    """The portal sessions of one RDFE."""
    found = _sessions.get(rdfe)
    if found is None:
        found = _sessions[rdfe] = Sessions()
    return found


def owns(path: str) -> bool:
    """Whether a path is the portal's (``/`` and ``/portal/...``)."""
    return path == "/" or path == "/portal" or path.startswith("/portal/")


def session_allows(rdfe: Rdfe, r: Request) -> bool:
    """Whether an API request is made by a signed-in portal page (its session in the header)."""
    return sessions_of(rdfe).allows(r.headers)


def _html(status: int, text: str, headers: dict[str, str] | None = None) -> RawResponse:
    return RawResponse(status, text.encode(), _HTML, {**SECURITY_HEADERS, **(headers or {})})


async def route(rdfe: Rdfe, r: Request) -> Response:
    """Answer one portal request (it signs in by itself: no bearer token needed here)."""
    sessions = sessions_of(rdfe)
    match r.segments:
        case []:
            # The same page for everyone: what it shows comes from the API, with the session
            # its script holds (a request that carries none gets no data).
            rdfe._allow(r, "GET")
            return _html(200, portal_page())
        case ["portal", "signin"]:
            rdfe._allow(r, "POST")
            token = await _form_field(r, "token")
            if not token_matches(rdfe._token, f"Bearer {token}"):
                raise ApiError(
                    401,
                    "AuthenticationFailed",
                    "That is not the token of this fabric: copy it from the file token in its state folder.",
                )
            # The secret goes to the page's script only (it keeps it in sessionStorage, per
            # origin): never in a cookie, which the browser would send to every port of the host.
            session = sessions.open()
            return Response(
                200,
                {"session": session.id, "expires_in": SESSION_SECONDS},
                {**SECURITY_HEADERS},
            )
        case ["portal", "static", name] if name in _STATIC:
            rdfe._allow(r, "GET")
            data = await anyio.to_thread.run_sync(_static, name)
            return RawResponse(200, data, _STATIC[name], {**SECURITY_HEADERS, "cache-control": "no-cache"})
    # Everything below needs a session (in its header), or the API token.
    if not sessions.allows(r.headers) and not token_matches(rdfe._token, r.headers.get("authorization")):
        raise ApiError(401, "AuthenticationFailed", "sign in to the portal first (or send the API token)")
    match r.segments:
        case ["portal", "signout"]:
            rdfe._allow(r, "POST")
            ended = sessions.find(r.headers)
            if ended is not None:
                sessions.close(ended)
            return Response(200, {"signed_out": True})
        case ["portal", "chaos", "report"]:
            rdfe._allow(r, "GET")
            log = await event_log(rdfe, r)
            events = log.kept()
            report = live_report(events, anyio.current_time(), r.query.get("service") or None)
            return _html(200, f'<div class="report">{report.availability}{report.bars}</div>')
        case ["portal", "hosts"]:
            rdfe._allow(r, "GET")
            pools = [msgspec.to_builtins(s) for s in await snapshots(rdfe)]
            pids = [h["pid"] for pool in pools for h in pool["hosts"]]
            memory = await anyio.to_thread.run_sync(tree_memory, pids)
            for pool in pools:
                for h in pool["hosts"]:
                    h["memory_bytes"] = memory.get(h["pid"], 0)
            return Response(200, pools)
        case ["portal", "chaos", "scenario"]:
            return await scenarios.route(rdfe, r)
        case ["portal", "configuration", *rest]:
            return await config_form.route(rdfe, r, rest)
        case ["portal", "instance"] | ["portal", "logs", "stream"]:
            return await instance.route(rdfe, r, r.segments[1:])
    raise not_found(f"no portal page at {r.path}")


async def _form_field(r: Request, name: str) -> str:
    declared = r.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > SIGNIN_MAX_BYTES:
        raise ApiError(413, "RequestBodyTooLarge", f"a sign-in form is at most {SIGNIN_MAX_BYTES} bytes")
    r._max = min(r._max, SIGNIN_MAX_BYTES)  # a chunked body is cut at the same bound
    try:
        with anyio.fail_after(SIGNIN_SECONDS):
            data = await r.body()
    except TimeoutError:
        raise ApiError(
            408, "RequestTimeout", f"the sign-in form did not arrive within {SIGNIN_SECONDS:g} s"
        ) from None
    body = data.decode("utf-8", errors="replace")
    return dict(parse_qsl(body)).get(name, "")


def tree_memory(pids: list[int]) -> dict[int, int]:
    """Resident memory of each process and everything under it (a host: its VMs and roles)."""
    out: dict[int, int] = {}
    for pid in pids:
        if not pid:
            continue
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue  # ended while we looked
        out[pid] = total
    return out


def _static(name: str) -> bytes:
    return resources.files("fabric.portal").joinpath("static", name).read_bytes()
