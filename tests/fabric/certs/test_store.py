"""Reading uploads and keeping them: PFX and PEM, the refusals, and keys encrypted at rest."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fabric.certs import CertificateError, CertificateStore, parse_upload
from fabric.certs.parse import MAX_UPLOAD_BYTES
from fabric.model.configuration import CertificateThumbprint, RoleConfiguration, ServiceConfiguration
from tests.fabric.certs.cert_kit import expired, leaf, make_ca, pem_file, pfx_file


def configuration(thumbprint: str) -> ServiceConfiguration:
    certs = (CertificateThumbprint(name="Ssl", thumbprint=thumbprint),)
    return ServiceConfiguration(
        service_name="Hello", roles=(RoleConfiguration(name="Web", instances=1, certificates=certs),)
    )


def test_a_pfx_and_a_pem_upload_give_the_same_certificate_and_key() -> None:
    made = leaf(make_ca(), "www.test")
    from_pfx = parse_upload(pfx_file(made, "pw"), "pfx", "pw")
    from_pem = parse_upload(pem_file(made), "pem")
    assert from_pfx.thumbprint == from_pem.thumbprint == made.thumbprint
    assert from_pfx.key_pem() == from_pem.key_pem() == made.key_pem()


def test_uploads_the_fabric_cannot_use_are_refused_with_one_line() -> None:
    ca = make_ca()
    made = leaf(ca, "www.test")
    with pytest.raises(CertificateError, match="cannot be opened with this password"):
        parse_upload(pfx_file(made, "right"), "pfx", "wrong")
    with pytest.raises(
        CertificateError, match=f"certificate {made.thumbprint} comes without its private key"
    ):
        parse_upload(pem_file(made, with_key=False), "pem")
    other = leaf(ca, "other.test")
    with pytest.raises(CertificateError, match=f"does not belong to certificate {made.thumbprint}"):
        parse_upload(made.certificate_pem().encode() + other.key_pem(), "pem")
    with pytest.raises(CertificateError, match=f"at most {MAX_UPLOAD_BYTES} are accepted"):
        parse_upload(b"x" * (MAX_UPLOAD_BYTES + 1), "pfx")
    with pytest.raises(CertificateError, match="not a PFX"):
        parse_upload(b"hello", "pfx")


def test_keys_are_encrypted_at_rest_with_a_key_kept_apart(tmp_path: Path) -> None:
    made = leaf(make_ca(), "www.test")
    store = CertificateStore(tmp_path)
    store.add("Shop", made)
    record = next((tmp_path / "certificates").rglob("*.json"))
    assert record.name == f"sha1-{made.thumbprint}.json"
    assert b"PRIVATE KEY" not in record.read_bytes()
    for path in (record, store.key_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in (tmp_path / "certificates", record.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert not store.key_path.is_relative_to(tmp_path / "certificates")
    assert store.key_pem("shop", made.thumbprint.lower()) == made.key_pem()
    # A record moved under another service's name does not open: the name is sealed with it.
    moved = tmp_path / "certificates" / "other" / record.name
    moved.parent.mkdir(mode=0o700)
    record.rename(moved)
    with pytest.raises(CertificateError, match=f"certificate {made.thumbprint} does not open"):
        store.key_pem("other", made.thumbprint)


def test_the_deploy_check_names_each_thumbprint_missing_expired_or_not_yet_valid(tmp_path: Path) -> None:
    ca = make_ca()
    store = CertificateStore(tmp_path)
    good, old, future = leaf(ca, "a.test"), expired(ca, "b.test"), leaf(ca, "c.test", starts_in_days=2)
    for made in (good, old, future):
        store.add("Shop", made)
    assert store.configuration_problems("Shop", configuration(good.thumbprint)) == []
    missing = "AB" * 20
    (problem,) = store.configuration_problems("Shop", configuration(missing))
    assert f"certificate {missing} is not uploaded to hosted service 'Shop'" in problem
    (problem,) = store.configuration_problems("Shop", configuration(old.thumbprint))
    assert f"certificate {old.thumbprint} expired on" in problem
    (problem,) = store.configuration_problems("Shop", configuration(future.thumbprint))
    assert f"certificate {future.thumbprint} is not valid before" in problem
    # Another hosted service does not see Shop's certificates.
    assert store.configuration_problems("Other", configuration(good.thumbprint))
