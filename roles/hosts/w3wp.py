"""W3WP, the web worker: serves a role's sites on listening sockets inherited from its parent.

    python -m roles.hosts.w3wp --spec WEB.json [--fd ENDPOINT=FD ...] [--idle-timeout SECONDS]

The bootstrapper's SiteActivator starts it on the first connection; it serves until SIGTERM or
SIGINT (graceful: in-flight requests finish, bounded by the spec's graceful_timeout) or until
it has been idle for idle_timeout seconds, then exits 0. A spec or site that cannot be served
exits 2 with one line naming the file to fix.

``WebWorker`` is the same worker as a process actor, which is how the bootstrapper runs it
(``roles.hosts.w3wp:WebWorker`` with one RoleHostConfig): it also populates RoleEnvironment and
raises its events in this process, for the sites that subscribe to them.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import ClassVar

import anyio
import msgspec

from roles.protocol import EnvironmentChanged, RoleHostConfig

from ._common import RoleHostBase, describe, wait_first
from ._sites import SiteServer, tls_specs, web_spec
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


class WebWorker(RoleHostBase):
    """W3WP as a process actor: serves ``config.sites`` on the inherited ``config.listen_fds``.

    Reports "ready" once the sites serve; after ``config.idle_timeout`` seconds without a
    request it reports "stopping" and exits 0 by itself. A site that cannot be served reports
    "failed" and exits non-zero. RoleEnvironment.request_recycle() called by a site reports
    "recycling" (the bootstrapper recycles the instance) while the worker keeps serving.
    """

    host_name: ClassVar[str] = "W3WP"

    def __init__(self, config: RoleHostConfig) -> None:
        """Build the worker for ``config``; nothing runs until on_start."""
        super().__init__(config)
        self.sites: SiteServer | None = None
        self.idle = False

    async def lifecycle(self) -> None:
        """Serve until stopped or idle."""
        try:
            sites = self.sites = SiteServer(web_spec(self.config, idle_timeout=self.config.idle_timeout))
            binds = await self.start(sites.serve, self._sites_failed, name="sites")
        except Exception as error:
            logging.getLogger(self.host_name).exception("the sites cannot be served")
            await self.fail(f"the sites cannot be served: {describe(error)}")
            return
        sites.binds = binds
        self.log.info("serving %s", ", ".join(f"{name} on {url}" for name, url in binds.items()))
        await self.report("ready")
        await wait_first(sites.done, self.recycle_requested)
        if self.recycle_requested.is_set() and not sites.done.is_set():
            await self.report("recycling", "request_recycle() was called")
            await sites.done.wait()
        if self.stopping or self.failed:
            return
        self.idle = True
        self.stop()

    async def receive(self, message: object) -> object:
        """A configuration change that changes a certificate: the next TLS handshakes use the
        new one (the guest agent installed it before the change was told), then the events."""
        if (
            isinstance(message, EnvironmentChanged)
            and self.sites is not None
            and any(change.kind == "certificate" for change in message.changes)
        ):
            specs = tls_specs(message.environment, self.config.listen_fds)
            await self.sites.reload_tls(specs)
            self.log.info("serving the new certificates on %s", ", ".join(sorted(specs)) or "no endpoint")
        return await super().receive(message)

    async def on_stop(self) -> None:
        """Stop serving: requests in flight finish within the spec's graceful_timeout."""
        if self.failed:
            return
        self.stopping = True
        idle = f"no request for {self.config.idle_timeout:g} s" if self.idle else ""
        await self.report("stopping", idle)
        if self.sites is not None:
            await self.sites.stop()

    async def _sites_failed(self, error: BaseException) -> None:
        self.log.error("serving the sites failed", exc_info=error)
        await self.fail(f"serving the sites failed: {describe(error)}")


if __name__ == "__main__":
    sys.exit(main())
