"""Errors keep their type across a link: a registered error raised by a handler reaches the
asker as the cause of its ActorError, the same class with the same fields, in process or not."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from actors import ActorError, Ref, open_system, register_error
from tests.actors.refusing_actors import Gone, Opaque, Raise, Refusal, Refuser

pytestmark = [pytest.mark.timeout(60), pytest.mark.anyio]


@pytest.fixture(params=["local", "process"])
def where(request: pytest.FixtureRequest) -> str:
    """Where the Refuser runs: in this process, or in a child process."""
    return str(request.param)


@pytest.fixture
async def refuser(where: str) -> AsyncIterator[Ref]:
    """A Refuser, where ``where`` says."""
    async with open_system() as system:
        if where == "local":
            yield await system.spawn(Refuser, name="refuser")
        else:
            yield await system.spawn_process("tests.actors.refusing_actors:Refuser", name="refuser")


async def raised(ref: Ref, kind: str) -> ActorError:
    with pytest.raises(ActorError) as caught:
        await ref.ask(Raise(kind))
    return caught.value


async def test_a_registered_error_arrives_as_its_class_with_its_fields(refuser: Ref) -> None:
    error = await raised(refuser, "refusal")
    refusal = error.caused_by(Refusal)
    assert type(refusal) is Refusal
    assert (refusal.code, refusal.message, refusal.status) == ("ConflictError", "the slot is taken", 409)
    assert error.type_name == "tests.actors.refusing_actors.Refusal"


async def test_a_subclass_arrives_as_a_registered_base(refuser: Ref) -> None:
    refusal = (await raised(refuser, "named")).caused_by(Refusal)
    assert refusal is not None and (refusal.code, refusal.status) == ("ResourceNotFound", 404)


async def test_a_registered_error_without_fields_keeps_its_message(refuser: Ref) -> None:
    gone = (await raised(refuser, "gone")).caused_by(Gone)
    assert isinstance(gone, Gone) and str(gone) == "no instance 'Web_IN_0' here"
    assert (await raised(refuser, "gone")).caused_by(Refusal) is None


async def test_an_unregistered_error_arrives_as_an_actor_error_with_its_text(refuser: Ref) -> None:
    error = await raised(refuser, "bug")
    assert error.type_name == "ValueError" and error.message == "a plain bug: 42"
    assert "a plain bug: 42" in error.traceback
    assert error.caused_by(Refusal) is None
    with pytest.raises(TypeError, match="ValueError is not registered"):
        error.caused_by(ValueError)  # would work here and fail across a link: refused
    assert (await raised(refuser, "refusal")).caused_by(Refusal) is not None  # it carries on


async def test_fields_that_cannot_cross_leave_an_actor_error(refuser: Ref, where: str) -> None:
    error = await raised(refuser, "opaque")
    assert error.type_name == "tests.actors.refusing_actors.Opaque" and "opaque <object" in error.message
    cause = error.caused_by(Opaque)
    # In process the handler's own exception; across a link its text only, and the link goes on.
    assert isinstance(cause, Opaque) if where == "local" else cause is None
    assert (await raised(refuser, "refusal")).caused_by(Refusal) is not None


def test_registering_a_field_the_class_does_not_take_is_refused() -> None:
    with pytest.raises(TypeError, match="takes no argument named status"):

        @register_error("code", "status")
        class Bad(Exception):
            def __init__(self, code: str) -> None:
                super().__init__(code)
