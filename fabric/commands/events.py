"""``fabric events``: the fabric's timeline (status changes, heals, upgrade steps, configuration
changes, faults), the same one the portal shows; ``--follow`` waits for new events with a long
poll of the API (``GET /events?wait=``), never a busy loop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import msgspec

from fabric.commands.client import state_dir_option
from fabric.controller.events import EVENT_KINDS, MAX_PAGE, Event, EventPage
from fabric.frontend.auth import read_api_url, read_token

#: how long one long poll of --follow waits for an event before asking again
FOLLOW_WAIT = 25

_encoder = msgspec.json.Encoder()


class EventsError(Exception):
    """The timeline cannot be read (no fabric, a refused token, a refused query): one line."""


def read_events(
    state_dir: Path, params: dict[str, str], *, after: int = 0, follow: bool = False
) -> Iterator[Event]:
    """Every kept event after ``after`` matching ``params``; with ``follow``, then each new one.

    Raises:
        EventsError: no fabric runs for ``state_dir``, or it refused the request.
    """
    url, token = read_api_url(state_dir), read_token(state_dir)
    if url is None or token is None:
        raise EventsError(
            f"no fabric is running for state folder {state_dir}: start one with `fabric serve` or `fabric run`"
        )
    headers = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=FOLLOW_WAIT + 30) as http:
        while True:
            query = {**params, "after": str(after), "limit": str(MAX_PAGE)}
            if follow:
                query["wait"] = str(FOLLOW_WAIT)
            try:
                resp = http.get("/events", params=query)
            except httpx.HTTPError as exc:
                raise EventsError(f"cannot read events from the fabric at {url}: {exc}") from None
            if resp.status_code != 200:
                raise EventsError(f"the fabric at {url} answered {resp.status_code}: {_message(resp)}")
            page = msgspec.json.decode(resp.content, type=EventPage)
            yield from page.events
            if not page.events and not follow:
                return
            after = page.next


def _message(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["Error"]["Message"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:200]


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
    try:
        for event in read_events(state_dir, params, follow=follow):
            click.echo(_encoder.encode(event).decode() if as_json else format_event(event))
    except EventsError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(2) from None
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None
