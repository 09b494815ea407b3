"""How the client commands show deployments: the status table, one-line summaries, progress."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import msgspec
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from fabric.controller.messages import DeploymentView, PublicEndpoint

#: the statuses in which an instance is doing its job
_GOOD = {"ReadyRole"}


def status_json(deployments: Sequence[DeploymentView]) -> bytes:
    """The stable machine-readable view `fabric status --json` prints."""
    data = msgspec.json.encode({"deployments": list(deployments)})
    return msgspec.json.format(data, indent=2)


def endpoint_text(e: PublicEndpoint) -> str:
    """``WebRole1/Endpoint1 http://127.0.0.1:8080`` (and the port it asked for, when taken)."""
    scheme = e.protocol.lower()
    where = (
        f"{scheme}://{e.host}:{e.port}" if scheme in ("http", "https") else f"{e.host}:{e.port} ({scheme})"
    )
    moved = f" (port {e.requested_port} was taken)" if e.requested_port and e.requested_port != e.port else ""
    return f"{e.role}/{e.name} {where}{moved}"


def summary(view: DeploymentView) -> str:
    """One line: where a deployment is and how its instances are doing."""
    counts = Counter(i.status for i in view.instances)
    ready = counts.get("ReadyRole", 0)
    others = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s not in _GOOD)
    text = f"{view.service}/{view.slot} {view.name}: {view.status}, {ready}/{len(view.instances)} instances ready"
    text += f" ({others})" if others else ""
    if view.next_upgrade_domain >= 0:  # a Manual walk waits for the user: say what comes next
        n = view.next_upgrade_domain
        text += f"; manual upgrade: walk update domain {n} next (`fabric walk {n}`)"
    return text


def status_renderables(
    deployments: Sequence[DeploymentView], totals: Mapping[tuple[str, str], int] | None = None
) -> list[RenderableType]:
    """Every deployment as rich renderables: a line, its instances table, its public endpoints;
    ``totals``: (service, slot) -> its instance count, when a view holds only the first ones."""
    if not deployments:
        return [Text("no deployments (deploy one with `fabric deploy SERVICE`)")]
    out: list[RenderableType] = []
    for view in sorted(deployments, key=lambda d: (d.service, d.slot)):
        out.append(
            Text.from_markup(
                f"[bold]{view.service}[/bold] {view.slot}: {view.name} ({view.id}) {view.status}"
            )
        )
        if any(i.uid == 0 for i in view.instances):
            out.append(Text("  roles run as the fabric's own user without isolation: the fabric is not root"))
        if view.next_upgrade_domain >= 0:
            out.append(
                Text(f"  manual upgrade in progress: walk update domain {view.next_upgrade_domain} next")
            )
        table = Table(show_edge=False, pad_edge=False, box=None)
        for column in ("instance", "role", "status", "host", "UD", "FD", "restarts"):
            table.add_column(column, justify="right" if column in ("UD", "FD", "restarts") else "left")
        for i in sorted(view.instances, key=lambda i: i.id):
            notes = "; ".join(n for n in (i.detail, "refusing" if i.refusing else "") if n)
            status = f"{i.status} ({notes})" if notes else i.status
            table.add_row(
                i.id, i.role, status, i.host, str(i.update_domain), str(i.fault_domain), str(i.restarts)
            )
        out.append(table)
        total = (totals or {}).get((view.service, view.slot), len(view.instances))
        if total > len(view.instances):
            out.append(
                Text(
                    f"  showing {len(view.instances):,} of {total:,} instances (raise --limit; --json shows all)"
                )
            )
        out.extend(Text(f"  endpoint {endpoint_text(e)}") for e in view.endpoints)
    return out


def render_status(
    console: Console,
    deployments: Sequence[DeploymentView],
    totals: Mapping[tuple[str, str], int] | None = None,
) -> None:
    """Print every deployment: a line, its instances table, its public endpoints (``totals``:
    see status_renderables)."""
    for renderable in status_renderables(deployments, totals):
        console.print(renderable, highlight=False)


@contextmanager
def progress(console: Console, title: str) -> Iterator[Callable[[str], None]]:
    """A spinner with a line of text (shown only on a terminal); yields a function to update it."""
    if not console.is_terminal:
        yield lambda text: None
        return
    with console.status(title) as status:
        yield lambda text: status.update(f"{title}: {text}")
