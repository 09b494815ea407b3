"""``fabric events``: the fabric's timeline (status changes, heals, upgrade steps, configuration
changes, faults), the same one the portal shows; ``--follow`` waits for new events with a long
poll of the API (``GET /events?wait=``), never a busy loop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import msgspec

from fabric.client import FabricClient
from fabric.commands.client import state_dir_option, user_errors
from fabric.controller.events import EVENT_KINDS, Event

#: how long one long poll of --follow waits for an event before asking again
FOLLOW_WAIT = 25

_encoder = msgspec.json.Encoder()


def read_events(
    state_dir: Path, params: dict[str, str], *, after: int = 0, follow: bool = False
) -> Iterator[Event]:
    """Every kept event after ``after`` matching ``params``; with ``follow``, then each new one.

    Raises:
        ClientError: no fabric runs for ``state_dir``, or it refused the request.
    """
    with FabricClient(state_dir, timeout=FOLLOW_WAIT + 30) as client:
        while True:
            page = client.events(params, after=after, wait=FOLLOW_WAIT if follow else None)
            yield from page.events
            if not page.events and not follow:
                return
            after = page.next


def format_event(event: Event) -> str:
    """One line of text for an event."""
    where = f"{event.service}/{event.slot}" if event.service else "-"
    return f"{event.at}  {event.kind:<10} {where:<24} {event.instance or '-':<14} {event.message}"


@click.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they happen (Ctrl-C stops).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (the stable view).")
@click.option("--service", help="Only this hosted service's events.")
@click.option("--role", help="Only this role's events.")
@click.option("--instance", help="Only this instance's events (Web_IN_0).")
@click.option("--kind", type=click.Choice(EVENT_KINDS), help="Only events of this kind.")
@state_dir_option
def events(
    follow: bool,
    as_json: bool,
    service: str | None,
    role: str | None,
    instance: str | None,
    kind: str | None,
    state_dir: Path,
) -> None:
    """Show the fabric's event timeline, oldest first (the last events_kept are kept)."""
    params = {
        k: v for k, v in {"service": service, "role": role, "instance": instance, "kind": kind}.items() if v
    }
    with user_errors():
        try:
            for event in read_events(state_dir, params, follow=follow):
                click.echo(_encoder.encode(event).decode() if as_json else format_event(event))
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None
