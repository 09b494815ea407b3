"""Property tests: XML and TOML carry the same model; mangled XML only ever yields ModelError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.model import (
    VM_SIZES,
    ModelError,
    RoleDefinition,
    ServiceConfiguration,
    ServiceDefinition,
    configuration_from_toml,
    configuration_from_xml,
    configuration_to_toml,
    configuration_to_xml,
    definition_from_toml,
    definition_from_xml,
    definition_to_toml,
    definition_to_xml,
)
from fabric.model.service import Layout, assemble

SHOP = Path(__file__).parent / "fixtures" / "shop"
CSDEF = (SHOP / "ServiceDefinition.csdef").read_bytes()
CSCFG = (SHOP / "ServiceConfiguration.Local.cscfg").read_bytes()
TOML = (SHOP.parent / "shop.service.toml").read_bytes()

# Any text both XML 1.0 and TOML can carry: no surrogates or other control characters.
TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff")
    | st.sampled_from("\t\n\r<>&\"'\\ "),
    max_size=12,
)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _strategy(t: mi.Type) -> st.SearchStrategy[Any]:
    if isinstance(t, mi.StructType):
        return _struct(t)
    if isinstance(t, mi.UnionType):
        return st.one_of(*(_strategy(alt) for alt in t.types))
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.IntType):
        return st.integers(t.ge if t.ge is not None else -(2**31), t.le if t.le is not None else 2**31 - 1)
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.StrType):
        return TEXT.filter(lambda s: len(s) >= (t.min_length or 0))
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.VarTupleType):
        return st.lists(_strategy(t.item_type), max_size=2).map(tuple)
    raise TypeError(t)


def _struct(t: mi.StructType) -> st.SearchStrategy[Any]:
    fields = {f.name: _strategy(f.type) for f in t.fields}
    if t.cls is RoleDefinition:
        fields["vm_size"] = st.sampled_from(sorted(VM_SIZES))
    if "kept" in fields:
        fields["kept"] = st.just(())  # kept items are carried, not written back
    strategy = st.fixed_dictionaries(fields).map(lambda kw: t.cls(**kw))
    if t.cls is RoleDefinition:
        # A WorkerRole element has no Sites, so a worker with sites has no XML form.
        strategy = strategy.map(lambda r: msgspec.structs.replace(r, sites=()) if r.kind == "worker" else r)
    return strategy


definitions = _strategy(mi.type_info(ServiceDefinition))
configurations = _strategy(mi.type_info(ServiceConfiguration))


@SETTINGS
@given(definitions)
def test_definition_reads_back_the_same_from_xml_and_toml(d: ServiceDefinition) -> None:
    assert definition_from_xml(definition_to_xml(d)) == d
    assert definition_from_toml(definition_to_toml(d)) == d


@SETTINGS
@given(configurations)
def test_configuration_reads_back_the_same_from_xml_and_toml(c: ServiceConfiguration) -> None:
    assert configuration_from_xml(configuration_to_xml(c)) == c
    assert configuration_from_toml(configuration_to_toml(c)) == c


@st.composite
def _mangled(draw: st.DrawFn, source: bytes) -> bytes:
    lines = source.split(b"\n")
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "dup", "swap", "text", "bytes", "attr"]))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "text":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(TEXT).encode() + lines[i][at:]
        elif op == "bytes":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.binary(max_size=4)) + lines[i][at:]
        else:
            value = draw(
                st.sampled_from([b'"0"', b'"-1"', b'"99999999999999"', b'"*"', b'""', b'"x"', b'"true"'])
            )
            lines[i] = lines[i].replace(b'"', value[:1], 1).replace(b'="', b"=" + value + b' x="', 1)
        if not lines:
            lines = [b""]
    return b"\n".join(lines)


@settings(max_examples=150, deadline=None)
@given(_mangled(CSDEF), _mangled(CSCFG))
def test_mangled_xml_yields_only_model_errors(csdef: bytes, cscfg: bytes) -> None:
    try:
        assemble(
            (csdef, "ServiceDefinition.csdef"), (cscfg, "ServiceConfiguration.Local.cscfg"), Layout(SHOP)
        )
    except ModelError as exc:
        assert exc.problems and all(str(p) for p in exc.problems)


@settings(max_examples=80, deadline=None)
@given(_mangled(TOML))
def test_mangled_toml_yields_only_model_errors(toml: bytes) -> None:
    try:
        assemble((toml, "service.toml"), (CSCFG, "ServiceConfiguration.Local.cscfg"), Layout(SHOP))
    except ModelError as exc:
        assert exc.problems
