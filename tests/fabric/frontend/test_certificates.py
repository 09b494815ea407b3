"""Service certificates through the API and `fabric cert`, and the deploy-time checks: a
thumbprint not uploaded, or expired, refuses the deployment with nothing deployed."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

from fabric.certs.parse import MAX_UPLOAD_BYTES
from fabric.model import build_package
from tests.fabric.certs.cert_kit import (
    expired,
    leaf,
    make_ca,
    pem_file,
    pfx_file,
    service_with_certificate,
    set_thumbprint,
)
from tests.fabric.frontend.frontend_kit import Api
from tests.fabric.frontend.test_cli import cli


def add_body(data: bytes, fmt: str = "pfx", password: str = "") -> dict[str, str]:
    return {"Data": base64.b64encode(data).decode(), "CertificateFormat": fmt, "Password": password}


async def test_add_list_get_and_delete_service_certificates(api: Api) -> None:
    assert (await api.create_service("shop")).status_code == 201
    made = leaf(make_ca(), "www.shop.test")
    url = f"{api.services}/shop/certificates"
    added = await api.http.post(url, json=add_body(pfx_file(made, "pw"), password="pw"))
    assert added.status_code == 201, added.text
    view = added.json()
    assert view["Thumbprint"] == made.thumbprint and view["ThumbprintAlgorithm"] == "sha1"
    assert view["CertificateUrl"] == f"{url}/sha1-{made.thumbprint}"
    assert view["DnsNames"] == ["www.shop.test"] and "PRIVATE" not in added.text
    listed = (await api.http.get(url)).json()["Certificates"]
    assert [c["Thumbprint"] for c in listed] == [made.thumbprint]
    got = await api.http.get(f"{url}/sha1-{made.thumbprint.lower()}")
    assert got.status_code == 200 and base64.b64decode(got.json()["Data"])[:1] == b"\x30"  # DER
    assert (await api.http.delete(f"{url}/sha1-{made.thumbprint}")).status_code == 200
    missing = await api.http.delete(f"{url}/sha1-{made.thumbprint}")
    assert missing.status_code == 404 and made.thumbprint in missing.json()["Error"]["Message"]
    assert (await api.http.get(url)).json()["Certificates"] == []
    # A deleted hosted service takes its certificates with it.
    assert (await api.http.post(url, json=add_body(pem_file(made), "pem"))).status_code == 201
    assert (await api.http.delete(f"{api.services}/shop")).status_code == 200
    assert not (api.state / "certificates" / "shop").exists()


async def test_uploads_that_cannot_be_used_are_refused(api: Api) -> None:
    await api.create_service("shop")
    url = f"{api.services}/shop/certificates"
    made = leaf(make_ca(), "www.shop.test")
    wrong = await api.http.post(url, json=add_body(pfx_file(made, "right"), password="wrong"))
    assert wrong.status_code == 400 and "password" in wrong.json()["Error"]["Message"]
    keyless = await api.http.post(url, json=add_body(pem_file(made, with_key=False), "pem"))
    assert keyless.status_code == 400
    assert (
        f"certificate {made.thumbprint} comes without its private key" in keyless.json()["Error"]["Message"]
    )
    big = await api.http.post(url, json=add_body(b"x" * (MAX_UPLOAD_BYTES + 1)))
    assert big.status_code in (400, 413)
    assert (await api.http.get(url)).json()["Certificates"] == []
    nowhere = await api.http.post(f"{api.services}/nope/certificates", json=add_body(pem_file(made), "pem"))
    assert nowhere.status_code == 404


async def test_a_deployment_naming_a_missing_or_expired_certificate_deploys_nothing(
    api: Api, tmp_path: Path
) -> None:
    ca = make_ca()
    good, old = leaf(ca, "www.shop.test"), expired(ca, "old.shop.test")
    await api.create_service("hello")
    url = f"{api.services}/hello/certificates"
    assert (await api.http.post(url, json=add_body(pem_file(old), "pem"))).status_code == 201

    for thumbprint, words in (
        (good.thumbprint, f"certificate {good.thumbprint} is not uploaded to hosted service 'hello'"),
        (old.thumbprint, f"certificate {old.thumbprint} expired on"),
    ):
        folder = service_with_certificate(tmp_path / thumbprint, thumbprint)
        build_package(folder, tmp_path / f"{thumbprint}.cspkg")
        refused = await api.deploy((tmp_path / f"{thumbprint}.cspkg").read_bytes())
        assert refused.status_code == 400, refused.text
        assert refused.json()["Error"]["Code"] == "InvalidCertificate"
        assert words in refused.json()["Error"]["Message"]
    assert api.mutations() == []
    assert not any((api.state / "packages").rglob("*.cspkg"))  # nothing staged is left behind

    assert (await api.http.post(url, json=add_body(pem_file(good), "pem"))).status_code == 201
    build_package(service_with_certificate(tmp_path / "good", good.thumbprint), tmp_path / "good.cspkg")
    assert (await api.deploy((tmp_path / "good.cspkg").read_bytes())).status_code == 202

    # A configuration change to a thumbprint never uploaded changes nothing either.
    before = len(api.mutations())
    missing = "AB" * 20
    cscfg = set_thumbprint(tmp_path / "good", missing).read_bytes()
    change = {
        "Configuration": base64.b64encode(cscfg).decode(),
        "ConfigurationName": "ServiceConfiguration.Local.cscfg",
    }
    refused = await api.http.post(api.slot(), params={"comp": "config"}, json=change)
    assert refused.status_code == 400 and f"certificate {missing} is not uploaded" in refused.text
    assert len(api.mutations()) == before


async def test_the_cert_commands(api: Api, tmp_path: Path) -> None:
    s = ("--state-dir", str(api.state))
    made = leaf(make_ca(), "www.shop.test")
    pfx = tmp_path / "shop.pfx"
    pfx.write_bytes(pfx_file(made, "pw"))
    code, _, err = await cli("cert", "add", "shop", str(pfx), "--password", "nope", *s)
    assert code == 2 and err.startswith("error: the PFX file cannot be opened with this password")
    assert len(err.splitlines()) == 1
    code, out, err = await cli("cert", "add", "shop", str(pfx), "--password", "pw", *s)
    assert code == 0, err
    assert out.startswith(f"added sha1-{made.thumbprint}")
    keyless = tmp_path / "keyless.pem"
    keyless.write_bytes(pem_file(made, with_key=False))
    code, _, err = await cli("cert", "add", "shop", str(keyless), *s)
    assert code == 2 and made.thumbprint in err

    trust = tmp_path / "dev.pem"
    code, out, err = await cli(
        "cert", "create-self-signed", "shop", "--dns", "dev.shop.test", "--out", str(trust), *s
    )
    assert code == 0, err
    assert "BEGIN CERTIFICATE" in trust.read_text() and "PRIVATE" not in trust.read_text()
    code, out, _ = await cli("cert", "list", "shop", "--json", *s)
    listed = [json.loads(line) for line in out.splitlines()]
    assert made.thumbprint in {c["Thumbprint"] for c in listed} and len(listed) == 2
    assert (await cli("cert", "delete", "shop", made.thumbprint, *s))[0] == 0
    code, _, err = await cli("cert", "delete", "shop", made.thumbprint, *s)
    assert code == 2 and made.thumbprint in err
    key_file = api.state / "certificate-store.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
