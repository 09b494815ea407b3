"""W3WP, the web worker: serves a role's sites on listening sockets inherited from its parent.

    python -m roles.hosts.w3wp --spec WEB.json [--fd ENDPOINT=FD ...] [--idle-timeout SECONDS]

The bootstrapper's SiteActivator starts it on the first connection; it serves until SIGTERM or
SIGINT (graceful: in-flight requests finish, bounded by the spec's graceful_timeout) or until
it has been idle for idle_timeout seconds, then exits 0. A spec or site that cannot be served
exits 2 with one line naming the file to fix.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
from collections.abc import Sequence

import anyio
import msgspec

from ._web import LifespanError, SiteLoadError, WebSpec, WebSpecError, load_web_spec, serve_sites

EXIT_USAGE = 2


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the w3wp command line."""
    parser = argparse.ArgumentParser(prog="w3wp", description="Serve a role's web sites.")
    parser.add_argument("--spec", required=True, help="the WebSpec JSON file")
    parser.add_argument(
        "--fd",
        action="append",
        default=[],
        metavar="ENDPOINT=FD",
        help="an inherited listening socket for an endpoint (overrides the spec's)",
    )
    parser.add_argument("--idle-timeout", type=float, help="exit after this many idle seconds")
    return parser.parse_args(argv)


def build_spec(args: argparse.Namespace) -> WebSpec:
    """Return the spec file's WebSpec with the command line's fds and idle timeout applied."""
    spec = load_web_spec(args.spec)
    endpoints = dict(spec.endpoints)
    for item in args.fd:
        name, _, fd = item.partition("=")
        if not name or not fd.isdigit():
            raise WebSpecError(f"--fd {item!r} is not ENDPOINT=FD; write e.g. --fd HttpIn=3")
        endpoints[name] = int(fd)
    changes: dict[str, object] = {"endpoints": endpoints}
    if args.idle_timeout is not None:
        changes["idle_timeout"] = args.idle_timeout
    return msgspec.structs.replace(spec, **changes)


async def run(spec: WebSpec) -> None:
    """Serve `spec` until SIGTERM/SIGINT or the idle timeout."""
    stop = anyio.Event()
    async with anyio.create_task_group() as tasks:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    logging.getLogger("w3wp").info("%s: shutting down", signal.Signals(signum).name)
                    stop.set()
                    return

        tasks.start_soon(watch_signals)
        await serve_sites(spec, shutdown_event=stop)
        tasks.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker; return the process exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="w3wp[%(process)d] %(levelname)s %(message)s")
    try:
        spec = build_spec(args)
        anyio.run(run, spec, backend="trio")
    except BaseException as error:
        user_errors = _user_errors(error)
        if not user_errors:
            raise
        for user_error in user_errors:
            if isinstance(user_error, SiteLoadError) and user_error.__cause__ is not None:
                # The site's own code raised: its traceback is what the author needs to fix it.
                traceback.print_exception(user_error.__cause__, file=sys.stderr)
            print(f"w3wp: error: {user_error}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _user_errors(error: BaseException) -> list[Exception]:
    """Return the errors a user can fix if `error` (maybe a group) holds only those, else []."""
    if isinstance(error, BaseExceptionGroup):
        found = [_user_errors(inner) for inner in error.exceptions]
        return [e for errors in found for e in errors] if all(found) else []
    return [error] if isinstance(error, (WebSpecError, SiteLoadError, LifespanError)) else []


if __name__ == "__main__":
    sys.exit(main())
