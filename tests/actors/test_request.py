"""Typed asks: a Request[R] is answered with an R, crosses the wire as the plain Struct it
would be without Request, and mypy checks what ask() is given and what it returns."""

from __future__ import annotations

import textwrap
from pathlib import Path

import msgspec
import pytest

from actors import Request

pytestmark = pytest.mark.timeout(60)


class Plain(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    name: str
    seq: int = 0


class Typed(Request[int], frozen=True, tag=True, kw_only=True):
    name: str
    seq: int = 0


def test_a_request_crosses_the_wire_as_the_plain_struct_would() -> None:
    plain = msgspec.msgpack.encode(Plain(name="x", seq=3))
    typed = msgspec.msgpack.encode(Typed(name="x", seq=3))
    assert typed == plain.replace(b"Plain", b"Typed")
    assert msgspec.msgpack.decode(typed, type=Typed) == Typed(name="x", seq=3)
    assert msgspec.json.decode(b'{"type": "Typed", "name": "y"}', type=Typed) == Typed(name="y")


@pytest.mark.slow
def test_mypy_types_an_ask_by_its_request(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    source = tmp_path / "asks.py"
    source.write_text(
        textwrap.dedent(
            """
            import msgspec
            from actors import Ref, Request

            class View(msgspec.Struct, frozen=True):
                total: int

            class GetView(Request[View], frozen=True):
                pass

            class Note(msgspec.Struct, frozen=True):
                text: str

            async def use(ref: Ref) -> None:
                view = await ref.ask(GetView())
                reveal_type(view)
                total: str = view.total
                await ref.tell(Note("told, not asked"))
                await ref.ask(Note("not a request"))
            """
        )
    )
    out, _, status = api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(source)]
    )
    assert status == 1, out
    assert 'Revealed type is "asks.View"' in out
    assert 'Incompatible types in assignment (expression has type "int", variable has type "str")' in out
    assert 'Argument 1 to "ask" of "Ref" has incompatible type "Note"' in out
    assert out.count("error:") == 2, out
