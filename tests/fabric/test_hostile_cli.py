"""The hostile-input pass over every command of the CLI: each command of click's tree (walked,
so a new command is covered without touching this test) with an unknown option, its required
arguments missing, and a value of the wrong kind for each typed option. Each answer is exit
code 2 with one line, ``error: ...``, on stderr, and no traceback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fabric.cli import main


def commands(
    group: click.Group = main, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command under ``group``, with the words that name it (through list_commands and
    get_command: the top group loads its commands on demand)."""
    ctx = click.Context(group)
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        assert command is not None, name
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


def bad_value(param: click.Parameter) -> str | None:
    """A value ``param`` refuses by its type, or None when any text is a value for it."""
    kind = param.type
    if isinstance(kind, click.Choice):
        return "no-such-choice"
    if isinstance(kind, (click.types.IntParamType, click.types.FloatParamType)):
        return "not-a-number"
    if isinstance(kind, click.Path) and kind.exists:
        return "/no/such/path/anywhere"
    if isinstance(kind, click.File) and "r" in kind.mode:
        return "/no/such/path/anywhere"
    return None


def filler(param: click.Parameter, tmp: Path) -> list[str]:
    """A value a required argument accepts by its type (the bad one is elsewhere)."""
    kind = param.type
    if isinstance(kind, click.Choice):
        return [str(kind.choices[0])]
    if isinstance(kind, (click.types.IntParamType, click.types.FloatParamType)):
        return ["1"]
    return [str(tmp)]


def cases(tmp: Path) -> Iterator[tuple[str, list[str]]]:
    """(what, argv) for every bad invocation of every command (one that takes a state folder
    is given an empty one, so nothing it might reach is running)."""
    for path, command in commands():
        for what, argv in _cases(path, command, tmp):
            takes_state = any("--state-dir" in p.opts for p in command.params)
            yield what, [*argv, "--state-dir", str(tmp / "nothing-runs-here")] if takes_state else argv


def _cases(path: tuple[str, ...], command: click.Command, tmp: Path) -> Iterator[tuple[str, list[str]]]:
    """The bad invocations of one command."""
    yield "an unknown option", [*path, "--no-such-option"]
    required = [p for p in command.params if isinstance(p, click.Argument) and p.required]
    if required:
        yield "its arguments missing", list(path)
    if isinstance(command, click.Group):
        yield "an unknown subcommand", [*path, "no-such-command"]
        return
    fill = [v for p in required for v in filler(p, tmp)]
    for param in command.params:
        if not isinstance(param, click.Option) or param.is_flag or param.count:
            continue
        value = bad_value(param)
        if value is not None:
            yield f"{param.opts[-1]} {value}", [*path, *fill, param.opts[-1], value]


def test_the_tree_is_walked_whole() -> None:
    names = {" ".join(path) for path, _ in commands()}
    for expected in ("run", "serve", "deploy", "status", "chaos kill", "chaos run", "cert add", "logs"):
        assert expected in names, sorted(names)


def test_every_command_refuses_bad_arguments_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    findings = []
    count = 0
    for what, argv in cases(tmp_path):
        count += 1
        result = runner.invoke(main, argv)
        err = result.stderr.strip()
        problem = None
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            problem = f"raised {result.exception!r}"
        elif result.exit_code != 2:
            problem = f"exit code {result.exit_code}"
        elif len(err.splitlines()) != 1 or not err.startswith("error: "):
            problem = f"stderr is not one `error: ...` line: {err[:300]!r}"
        elif "Traceback" in err + result.stdout:
            problem = "a traceback"
        if problem:
            findings.append(f"fabric {' '.join(argv)} ({what}): {problem}")
    assert count > 100, count
    assert not findings, "\n".join(findings)


@pytest.mark.parametrize("argv", [["--no-such-option"], ["no-such-command"], []])
def test_the_top_level_refuses_in_one_line(argv: list[str]) -> None:
    result = CliRunner().invoke(main, argv)
    if not argv:  # a bare `fabric` shows its help, as click groups do
        assert result.exit_code in (0, 2)
        return
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
