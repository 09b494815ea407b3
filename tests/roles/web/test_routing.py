"""Host-header bindings across sites and endpoints, virtual applications and directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from roles.hosts._web import (
    BindingSpec,
    SiteSpec,
    VirtualApplicationSpec,
    VirtualDirectorySpec,
    WebSpecError,
    serve_sites,
)


def two_sites(web, tmp_path: Path, listener) -> list[SiteSpec]:
    alpha = web.asgi_site(tmp_path / "sitesroot" / "0", "alpha")
    beta = web.asgi_site(tmp_path / "sitesroot" / "1", "beta")
    return [
        SiteSpec("Alpha", 0, str(alpha), (BindingSpec("HttpIn", "alpha.example"),)),
        SiteSpec("Beta", 1, str(beta), (BindingSpec("HttpIn", "beta.example"),)),
    ]


async def test_host_header_picks_the_site_on_a_shared_endpoint(web, listener, tmp_path: Path) -> None:
    spec = web.spec(two_sites(web, tmp_path, listener), {"HttpIn": listener.fileno()})
    async with web.serving(spec) as binds, web.client(binds["HttpIn"]) as http:
        alpha = await http.get("/", headers={"Host": "alpha.example"})
        beta = await http.get("/", headers={"Host": "BETA.Example:8080"})  # case, port ignored
        unknown = await http.get("/", headers={"Host": "gamma.example"})
    assert alpha.json()["site"] == "alpha"
    assert beta.json()["site"] == "beta"
    assert unknown.status_code == 404
    assert "no site is bound to host &#x27;gamma.example&#x27;" in unknown.text
    assert "endpoint &#x27;HttpIn&#x27;" in unknown.text


async def test_binding_without_host_header_takes_the_other_hosts(web, listener, tmp_path: Path) -> None:
    sites = two_sites(web, tmp_path, listener)
    sites[1] = SiteSpec("Beta", 1, sites[1].physical_path, (BindingSpec("HttpIn", ""),))
    spec = web.spec(sites, {"HttpIn": listener.fileno()})
    async with web.serving(spec) as binds, web.client(binds["HttpIn"]) as http:
        alpha = await http.get("/", headers={"Host": "alpha.example"})
        other = await http.get("/", headers={"Host": "anything.example"})
    assert alpha.json()["site"] == "alpha"
    assert other.json()["site"] == "beta"


async def test_each_endpoint_routes_its_own_bindings(web, listener, listener2, tmp_path: Path) -> None:
    alpha = web.asgi_site(tmp_path / "sitesroot" / "0", "alpha")
    beta = web.asgi_site(tmp_path / "sitesroot" / "1", "beta")
    sites = [
        SiteSpec("Alpha", 0, str(alpha), (BindingSpec("HttpIn"), BindingSpec("Admin", "a.x"))),
        SiteSpec("Beta", 1, str(beta), (BindingSpec("Admin"),)),
    ]
    spec = web.spec(sites, {"HttpIn": listener.fileno(), "Admin": listener2.fileno()})
    async with web.serving(spec) as binds:
        async with web.client(binds["HttpIn"]) as http:
            on_http = await http.get("/", headers={"Host": "b.x"})
        async with web.client(binds["Admin"]) as admin:
            on_admin_a = await admin.get("/", headers={"Host": "a.x"})
            on_admin_b = await admin.get("/", headers={"Host": "b.x"})
    assert on_http.json()["site"] == "alpha"
    assert on_admin_a.json()["site"] == "alpha"
    assert on_admin_b.json()["site"] == "beta"


async def test_virtual_application_is_mounted_with_its_root_path(web, listener, tmp_path: Path) -> None:
    root = web.asgi_site(tmp_path / "sitesroot" / "0", "root")
    api = web.asgi_site(tmp_path / "api", "api")
    legacy = web.wsgi_site(tmp_path / "legacy")
    site = SiteSpec(
        "Web",
        0,
        str(root),
        (BindingSpec("HttpIn"),),
        applications=(
            VirtualApplicationSpec("api", str(api)),
            VirtualApplicationSpec("/legacy/", str(legacy)),
        ),
    )
    spec = web.spec([site], {"HttpIn": listener.fileno()})
    async with web.serving(spec) as binds, web.client(binds["HttpIn"]) as http:
        in_api = await http.get("/api/v1/items")
        api_root = await http.get("/API")  # IIS compares virtual paths case-insensitively
        not_api = await http.get("/apiary")
        in_legacy = await http.get("/legacy/page", params={"q": "1"})
    assert in_api.json() == {
        "site": "api",
        "path": "/api/v1/items",
        "root_path": "/api",
        "state": "started",
    }
    assert (api_root.json()["site"], api_root.json()["root_path"]) == ("api", "/API")
    assert (not_api.json()["site"], not_api.json()["root_path"]) == ("root", "")
    assert in_legacy.text == "/legacy|/page|q=1|True"


async def test_virtual_directory_serves_static_files(web, listener, tmp_path: Path) -> None:
    root = web.asgi_site(tmp_path / "sitesroot" / "0", "root")
    images = tmp_path / "images"
    images.mkdir()
    (images / "logo.svg").write_text("<svg/>")
    site = SiteSpec(
        "Web",
        0,
        str(root),
        (BindingSpec("HttpIn"),),
        directories=(VirtualDirectorySpec("/img", str(images)),),
    )
    spec = web.spec([site], {"HttpIn": listener.fileno()})
    async with web.serving(spec) as binds, web.client(binds["HttpIn"]) as http:
        logo = await http.get("/img/logo.svg")
    assert logo.status_code == 200
    assert logo.headers["content-type"] == "image/svg+xml"
    assert logo.text == "<svg/>"


async def test_two_sites_claiming_one_host_are_refused(web, listener, tmp_path: Path) -> None:
    sites = two_sites(web, tmp_path, listener)
    sites[1] = SiteSpec("Beta", 1, sites[1].physical_path, (BindingSpec("HttpIn", "Alpha.example"),))
    with pytest.raises(WebSpecError, match=r"both bind host 'Alpha\.example' on endpoint 'HttpIn'"):
        await serve_sites(web.spec(sites, {"HttpIn": listener.fileno()}))
