"""Bad and hostile model files: each gets one clear error and exit status 2, never a crash."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
from click.testing import CliRunner

from fabric.cli import main
from fabric.model import ModelError, load_service

DEF_NS = "http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition"
GOOD = f'<ServiceDefinition name="Shop" xmlns="{DEF_NS}"><WorkerRole name="W" /></ServiceDefinition>'

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<ServiceDefinition name="&lol9;" />"""
QUADRATIC = (
    f'<!DOCTYPE d [<!ENTITY a "{"x" * 50_000}">]>'
    f'<ServiceDefinition name="{"&a;" * 2_000}" xmlns="{DEF_NS}" />'
)
EXTERNAL = (
    '<!DOCTYPE d [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
    f'<ServiceDefinition name="&secret;" xmlns="{DEF_NS}" />'
)
PARAMETER = '<!DOCTYPE d [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]><x/>'

# (case, file bytes, what the one error says)
CASES: list[tuple[str, bytes, str]] = [
    ("billion laughs", BILLION_LAUGHS.encode(), "contains a DTD"),
    ("quadratic blowup", QUADRATIC.encode(), "contains a DTD"),
    ("external entity", EXTERNAL.encode(), "contains a DTD"),
    ("external parameter entity", PARAMETER.encode(), "contains a DTD"),
    ("bare DTD", f"<!DOCTYPE ServiceDefinition>{GOOD}".encode(), "contains a DTD"),
    ("undeclared entity", f'<ServiceDefinition name="&x;" xmlns="{DEF_NS}" />'.encode(), "undefined entity"),
    ("not well-formed", GOOD[:-5].encode(), "is not well-formed XML"),
    ("two roots", (GOOD + GOOD).encode(), "junk after document element"),
    ("non-UTF-8 bytes", GOOD.replace("Shop", "Sh\xf6p").encode("latin-1"), "is not valid UTF-8 (byte 0xF6)"),
    (
        "declared latin-1",
        f'<?xml version="1.0" encoding="ISO-8859-1"?>{GOOD}'.encode(),
        "declares encoding 'ISO-8859-1'",
    ),
    (
        "UTF-16 with BOM",
        codecs.BOM_UTF16_LE + GOOD.encode("utf-16-le"),
        "is UTF-16 encoded; save it as UTF-8",
    ),
    ("UTF-32 with BOM", codecs.BOM_UTF32_LE + GOOD.encode("utf-32-le"), "is UTF-32 encoded"),
    ("empty", b"", "is empty"),
    ("only whitespace and a BOM", codecs.BOM_UTF8 + b"  \n\t\n", "is empty"),
    (
        "wrong root",
        GOOD.replace("ServiceDefinition", "ServiceModel").encode(),
        "root element is <ServiceModel>; expected <ServiceDefinition>",
    ),
    (
        "a cscfg given as csdef",
        b'<ServiceConfiguration serviceName="x"/>',
        "this looks like a service configuration (.cscfg)",
    ),
    (
        "wrong namespace",
        GOOD.replace("2008/10/ServiceDefinition", "2008/10/ServiceConfiguration").encode(),
        "has namespace 'http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration'",
    ),
    (
        "no namespace",
        GOOD.replace(f' xmlns="{DEF_NS}"', "").encode(),
        f'has no namespace; set xmlns="{DEF_NS}"',
    ),
    (
        "foreign child namespace",
        GOOD.replace('<WorkerRole name="W" />', '<x:WorkerRole xmlns:x="urn:other" name="W" />').encode(),
        "is in namespace 'urn:other'",
    ),
    (
        "bad enum",
        GOOD.replace(
            'name="W"', 'name="W"><Runtime executionContext="root" /></WorkerRole><WorkerRole name="V"'
        ).encode(),
        "'root' is not one of: elevated, limited",
    ),
    (
        "huge number",
        GOOD.replace('name="Shop"', f'name="Shop" upgradeDomainCount="{"9" * 40}"').encode(),
        "is out of range; use a number from 1 to 20",
    ),
    (
        "negative number",
        GOOD.replace('name="Shop"', 'name="Shop" upgradeDomainCount="-3"').encode(),
        "-3 is out of range; use a number from 1 to 20",
    ),
    (
        "deep nesting",
        (GOOD.replace('<WorkerRole name="W" />', "<a>" * 40 + "</a>" * 40)).encode(),
        "nested more than 32 deep",
    ),
    ("oversized file", b"<!-- " + b"x" * (8 * 1024 * 1024) + b" -->" + GOOD.encode(), "is larger than 8 MiB"),
    ("control character", GOOD.replace('name="Shop"', 'name="Sh&#1;op"').encode(), "not well-formed"),
]


def _write_definition(shop: Path, data: bytes) -> Path:
    path = shop / "ServiceDefinition.csdef"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("case", "data", "message"), CASES, ids=[c[0] for c in CASES])
def test_hostile_definition_gets_one_clear_error(shop: Path, case: str, data: bytes, message: str) -> None:
    _write_definition(shop, data)
    with pytest.raises(ModelError) as info:
        load_service(shop)
    assert message in str(info.value)
    assert all(p.file.endswith("ServiceDefinition.csdef") for p in info.value.problems)


@pytest.mark.parametrize(("case", "data", "message"), CASES[::4], ids=[c[0] for c in CASES[::4]])
def test_hostile_definition_exits_2_through_the_cli(shop: Path, case: str, data: bytes, message: str) -> None:
    _write_definition(shop, data)
    result = CliRunner().invoke(main, ["validate", str(shop)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output


def test_external_entity_is_never_read(shop: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    _write_definition(shop, EXTERNAL.replace("/etc/passwd", str(secret)).encode())
    with pytest.raises(ModelError) as info:
        load_service(shop)
    assert "TOP-SECRET" not in str(info.value)


def test_a_directory_where_a_file_is_expected(shop: Path) -> None:
    folder = shop / "ServiceConfiguration.Odd.cscfg"
    folder.mkdir()
    with pytest.raises(ModelError, match="is a directory; expected a file"):
        load_service(shop, folder)
    with pytest.raises(ModelError, match="does not exist"):
        load_service(shop, shop / "ServiceConfiguration.Missing.cscfg")
    with pytest.raises(ModelError, match=r"has no ServiceDefinition.csdef or service.toml"):
        load_service(shop / "Worker")
    with pytest.raises(ModelError, match="is not a service"):
        load_service(shop / "Worker" / "worker.py")


TOML_CASES = [
    ("syntax", b'name = "Shop"\nvm = = 1\n', "is not valid TOML: Invalid value"),
    ("unclosed", b'name = "Shop"\nroles = [\n', "is not valid TOML"),
    ("wrong type", b'name = "Shop"\nupgrade_domain_count = "five"\n', "'five' is not a whole number"),
    ("quoted number", b'name = "Shop"\nupgrade_domain_count = "5"\n', "remove the quotes"),
    ("float", b'name = "Shop"\nupgrade_domain_count = 5.5\n', "float 5.5 is not a whole number"),
    ("date", b"name = 1979-05-27\n", "expected a string"),
    (
        "unknown key",
        b'name = "Shop"\nupgrade_domains = 5\n',
        "unknown key 'upgrade_domains'; did you mean 'upgrade_domain_count'?",
    ),
    ("table where a list goes", b'name = "Shop"\n[roles]\nname = "W"\n', "expected a list, got a table"),
    (
        "bad enum",
        b'name = "Shop"\n[[roles]]\nname = "W"\nkind = "batch"\n',
        "'batch' is not one of: web, worker",
    ),
    ("missing key", b'name = "Shop"\n[[roles]]\nname = "W"\n', "roles[0].kind: is required but missing"),
    ("configuration as definition", b'service_name = "Shop"\n', "looks like a configuration TOML"),
    ("control character", b'name = "Sh\\u0001op"\n', "contains a control character"),
    ("non-UTF-8", 'name = "Sh\xf6p"\n'.encode("latin-1"), "is not valid UTF-8"),
]


@pytest.mark.parametrize(("case", "data", "message"), TOML_CASES, ids=[c[0] for c in TOML_CASES])
def test_bad_toml_gets_a_clear_error_with_its_line(
    shop_toml: Path, case: str, data: bytes, message: str
) -> None:
    (shop_toml / "service.toml").write_bytes(data)
    with pytest.raises(ModelError) as info:
        load_service(shop_toml)
    assert message in str(info.value)
    if case not in ("configuration as definition", "unclosed", "non-UTF-8"):
        assert all(p.line for p in info.value.problems), str(info.value)


def test_toml_errors_point_at_the_line_that_sets_the_value(shop_toml: Path, edit: object) -> None:
    path = shop_toml / "service.toml"
    text = (
        path.read_text()
        .replace("port = 443", "port = 0")
        .replace('task_type = "background"', 'task_type = "later"')
    )
    path.write_text(text)
    lines = text.splitlines()
    with pytest.raises(ModelError) as info:
        load_service(shop_toml)
    found = {(p.element, p.attribute): p.line for p in info.value.problems}
    port_line = found[("roles[0].input_endpoints[1]", "port")]
    task_line = found[("roles[1].startup[1]", "task_type")]
    assert port_line and lines[port_line - 1] == "port = 0"
    assert task_line and lines[task_line - 1] == 'task_type = "later"'
    assert "service.toml:" in str(
        info.value
    ) and "roles[0].input_endpoints[1].port: 0 is out of range" in str(info.value)
