"""The hostile-input pass over every API route of a real `fabric serve`: each route the router
matches (read from its `match` statements, so a new route is covered without touching this
test), every method, with no token, a wrong token, garbage or wrongly typed JSON, huge and
negative numbers, long strings, unknown fields, path traversal in names and hostile queries.
Every answer is below 500 with a one-line error; no stall (the integration conftest fails the
test on a controller stall over a second: RDFE shares `fabric serve`'s loop) and no growth."""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path
from types import ModuleType

import anyio
import httpx
import pytest

from fabric.frontend import rdfe
from fabric.portal import routes as portal_routes
from tests.integration.test_e2e_uploads import Served, fabric_serve

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

MiB = 1024 * 1024
#: Resident memory `fabric serve` may gain over the whole pass (allocator noise, first imports).
MAX_GROWTH = 32 * MiB
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
#: Names a capture in a route may take: a plain one, traversal, a long one, control characters.
HOSTILE_NAMES = ("hostile", "..", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%2F..%2Ftoken", "a" * 3000, "%00%0a")
BIG = 10**30
BODIES: tuple[bytes | None, ...] = (
    None,
    b"{{{ not json",
    b"[]",
    b'"a string"',
    b"null",
    json.dumps({"Name": 5, "Label": [], "Package": 7, "Configuration": {}}).encode(),
    json.dumps({"Name": "x" * 100_000, "ServiceName": "y" * 100_000}).encode(),
    json.dumps({"UpgradeDomain": BIG, "Count": -1, "Limit": 1e308, "Duration": -5}).encode(),
    json.dumps({"Unknown": 1, "ServiceName": "hostile2", "Extra": {"deep": [1, 2, 3]}}).encode(),
    json.dumps({"ServiceName": "../../etc", "Name": "../x", "Location": "\x00"}).encode(),
    b'{"a":' * 2000 + b"1" + b"}" * 2000,
)
QUERIES = (
    "",
    "?comp=nope",
    "?comp=" + "c" * 5000,
    f"?limit={BIG}&after=-1&wait=1e309",
    "?limit=-1&after=abc&wait=-1&tail=-5",
    "?embed-detail=maybe",
)


def _segments(pattern: ast.pattern) -> list[list[str]]:
    """The path segments a `case` pattern matches: literals as they are, a capture as "{name}",
    a star as "*" (where a sub-router takes over); one list per alternative."""
    if isinstance(pattern, ast.MatchOr):
        return [s for p in pattern.patterns for s in _segments(p)]
    if isinstance(pattern, ast.MatchAs) and pattern.pattern is not None:
        return _segments(pattern.pattern)
    if not isinstance(pattern, ast.MatchSequence):
        return []
    out: list[str] = []
    for p in pattern.patterns:
        if isinstance(p, ast.MatchValue) and isinstance(p.value, ast.Constant):
            out.append(str(p.value.value))
        elif isinstance(p, ast.MatchAs):
            out.append("{" + (p.name or "_") + "}")
        elif isinstance(p, ast.MatchStar):
            out.append("*")
    return [out]


def _cases(module: ModuleType) -> list[tuple[list[str], ast.match_case]]:
    tree = ast.parse(inspect.getsource(module))
    return [
        (segments, case)
        for node in ast.walk(tree)
        if isinstance(node, ast.Match)
        for case in node.cases
        for segments in _segments(case.pattern)
    ]


def _delegate(case: ast.match_case) -> ModuleType | None:
    """The sub-router module a case hands the rest of the path to (``module.route(...)``)."""
    for node in ast.walk(case):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "route"
            and isinstance(node.func.value, ast.Name)
        ):
            found = getattr(rdfe, node.func.value.id, None)
            if isinstance(found, ModuleType):
                return found
    return None


def api_routes() -> list[list[str]]:
    """Every path the API's router (and the portal's) matches, as segments."""
    found: list[list[str]] = []
    for segments, case in _cases(rdfe):
        if "*" not in segments:
            found.append(segments)
            continue
        sub = _delegate(case)
        assert sub is not None, f"a route with a * but no sub-router: {segments}"
        prefix = segments[: segments.index("*")]
        found += [prefix + rest for rest, _ in _cases(sub) if "*" not in rest]
    found += [s for s, _ in _cases(portal_routes) if "*" not in s]
    return found


def test_the_router_is_read_whole() -> None:
    routes = {"/".join(r) for r in api_routes()}
    # A few of each family: a reader that lost one would skip it silently.
    for expected in (
        "subscriptions/{sub}/services/hostedservices/{svc}/deploymentslots/{slot}",
        "subscriptions/{sub}/services/hostedservices/{svc}/certificates/{name}",
        "chaos/faults/{fault_id}",
        "events/stream",
        "metrics",
        "portal/signin",
    ):
        assert expected in routes, sorted(routes)


def paths(routes: list[list[str]], sub: str) -> list[tuple[str, bool]]:
    """Concrete paths, each with whether it is the plain one (every capture a real name: our
    subscription, the "hostile" service, the production slot) that gets every body and query;
    the others fill every capture with one hostile name."""
    out: set[tuple[str, bool]] = set()
    for segments in routes:
        for name in HOSTILE_NAMES:
            filled = []
            for segment in segments:
                if not segment.startswith("{"):
                    filled.append(segment)
                elif name != "hostile":
                    filled.append(name)
                else:
                    filled.append({"{sub}": sub, "{slot}": "production"}.get(segment, name))
            out.add(("/" + "/".join(filled), name == "hostile"))
    return sorted(out)


def one_line_error(response: httpx.Response, body: bytes) -> str | None:
    """Why an error answer is not a one-line error (None: it is)."""
    if response.status_code < 400:
        return None
    kind = response.headers.get("content-type", "")
    if "json" in kind:
        try:
            message = json.loads(body)["Error"]["Message"]
        except (ValueError, KeyError, TypeError):
            return f"an error body that is not {{'Error': ...}}: {body[:200]!r}"
        if "\n" in message or "Traceback" in message:
            return f"a multi-line error: {message[:300]!r}"
        if len(message) > 2000:
            return f"an error of {len(message)} characters (it repeats the input?)"
    return None


async def send(
    http: httpx.AsyncClient, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> str | None:
    """One hostile request; what is wrong with its answer, or None."""
    try:
        with anyio.fail_after(20):
            async with http.stream(method, path, content=body, headers=headers) as response:
                if "text/event-stream" in response.headers.get("content-type", ""):
                    return None  # a live stream opened (valid): it answers, closed here
                data = b""
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > 4 * MiB:
                        break
    except TimeoutError:
        return "no answer in 20 s"
    except httpx.TransportError as exc:
        return f"the connection failed: {exc!r}"
    if response.status_code >= 500:
        return f"{response.status_code}: {data[:300]!r}"
    return one_line_error(response, data)


async def test_every_route_survives_hostile_input(tmp_path: Path) -> None:
    async with fabric_serve(tmp_path / "state") as fabric:
        await hostile_pass(fabric)


async def hostile_pass(fabric: Served) -> None:
    """Every route, method, body, query and credential; then the findings, all at once."""
    url, token, served = fabric.url, fabric.token, fabric.process
    limits = httpx.Limits(max_connections=4)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        good = {"authorization": f"Bearer {token}"}
        subs = (await http.get("/subscriptions", headers=good)).json()["Subscriptions"]
        sub = subs[0]["SubscriptionId"]
        created = await http.post(
            f"/subscriptions/{sub}/services/hostedservices", json={"ServiceName": "hostile"}, headers=good
        )
        assert created.status_code == 201, created.text
        before = served.memory_info().rss
        findings: list[str] = []
        credentials: tuple[dict[str, str], ...] = (
            {},
            {"authorization": "Bearer wrong"},
            {"authorization": "Basic x"},
            good,
        )
        targets = paths(api_routes(), sub)
        assert len(targets) > 50, targets
        for path, plain in targets:
            for method in METHODS:
                for auth in credentials if plain else (good,):
                    cases: list[tuple[str, bytes | None]] = [("", None)]
                    if auth is good and plain:
                        cases = [(q, None) for q in QUERIES] + [("", b) for b in BODIES]
                    for query, body in cases:
                        headers = {**auth, "content-type": "application/json"}
                        problem = await send(http, method, path + query, body, headers)
                        if problem:
                            findings.append(
                                f"{method} {path[:120]}{query[:40]} body={(body or b'')[:40]!r}: {problem}"
                            )
        grown = served.memory_info().rss - before
        print(f"{len(targets)} paths; fabric serve grew {grown / MiB:.1f} MiB; {len(findings)} findings")
        assert not findings, "\n".join(findings[:40])
        assert grown < MAX_GROWTH, f"fabric serve grew {grown / MiB:.1f} MiB"
        assert (await http.get("/subscriptions", headers=good)).status_code == 200  # still serving
