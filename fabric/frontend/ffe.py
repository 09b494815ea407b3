"""FFE, the fabric front end: turns RDFE's requests into fabric commands for the right pool.

FFE knows the machine pools (each a region and its master fabric controller). It picks the
pool for a hosted service's first deployment by affinity group, then location, then pool
availability (a pool whose controller does not answer is skipped; among the rest the least
loaded wins), stages and checks uploaded packages, and forwards every later command to the
pool the hosted service lives in.

FFE answers every request with the controller's answer, or raises ApiError for a request that
must not go ahead (a registered error: its HTTP status and code survive any process boundary).
A deploy or upgrade the controller does not answer in time is a Submitted without an answer:
it may still be carried out, so its staged package stays until nothing can read it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
import msgspec

from actors import Actor, ActorDead, ActorError, AskTimeout, Ref, Request
from fabric.controller.messages import (
    ChangeConfiguration,
    ControllerError,
    CreateDeployment,
    DeploymentSummary,
    DeploymentView,
    ListDeployments,
    OperationAccepted,
    Slot,
    SummarizeDeployments,
    UpgradeDeployment,
    UpgradeMode,
)
from fabric.frontend.api import ApiError
from fabric.frontend.certificates import check_certificates, forget_certificates
from fabric.frontend.staging import (
    check_configuration,
    discard_packages,
    discard_unreferenced,
    stage_package,
)
from fabric.model.validate import MAX_INSTANCES

logger = logging.getLogger("fabric.frontend.ffe")

DEFAULT_LOCATION = "Local"
#: removing a refused package's staged file: a local unlink, instant unless the disk hangs
STAGED_UNLINK_TIMEOUT = 5.0
#: The answer type of a fabric command.
Answer = TypeVar("Answer")
#: What a listing of deployments holds: their views, or their summaries.
Listed = TypeVar("Listed", DeploymentView, DeploymentSummary)


@dataclass(frozen=True)
class Pool:
    """A machine pool: a name, the region it serves, and its master fabric controller."""

    name: str
    controller: Ref
    location: str = DEFAULT_LOCATION


# -- requests RDFE asks FFE ------------------------------------------------------------------------


class Deploy(Request["Submitted"], frozen=True, kw_only=True):
    """Create a deployment: choose the pool (unless the hosted service has one), stage the package."""

    pool: str | None
    location: str | None = None
    affinity_pool: str | None = None
    service: str
    slot: Slot
    name: str
    label: str = ""
    package: bytes
    configuration: bytes | None = None
    configuration_name: str = "ServiceConfiguration.cscfg"
    start: bool = True


class Upgrade(Request["Submitted"], frozen=True, kw_only=True):
    """Upgrade a deployment to a new package (staged and checked first)."""

    pool: str
    service: str
    slot: Slot
    package: bytes
    configuration: bytes | None = None
    configuration_name: str = "ServiceConfiguration.cscfg"
    mode: UpgradeMode = "Auto"
    role: str | None = None
    label: str = ""


class ChangeConfig(Request[OperationAccepted], frozen=True, kw_only=True):
    """Change a deployment's configuration, checked against its package when RDFE knows it."""

    pool: str
    service: str
    slot: Slot
    configuration: bytes
    configuration_name: str = "ServiceConfiguration.cscfg"
    mode: UpgradeMode = "Auto"
    package_path: str | None = None


class Forward(Request[Answer], Generic[Answer], frozen=True, kw_only=True):
    """Send a fabric command to a pool's controller and answer what it answers."""

    pool: str
    command: Request[Answer]
    #: how long the controller may take (None: FFE's command timeout)
    timeout: float | None = None


class ListAll(Request["dict[str, list[DeploymentView]]"], frozen=True, kw_only=True):
    """Answer {pool name: [DeploymentView]} for every pool that answers (the deployments of
    hosted service ``service`` only, when given)."""

    service: str | None = None


class SummarizeAll(Request["dict[str, list[DeploymentSummary]]"], frozen=True, kw_only=True):
    """Answer {pool name: [DeploymentSummary]} for every pool that answers (``service``'s only,
    when given): for a listing that needs no instance."""

    service: str | None = None


class ListPools(Request["list[PoolInfo]"], frozen=True):
    """Answer [PoolInfo] for every pool."""


class ForgetService(Request[None], frozen=True, kw_only=True):
    """A hosted service was deleted: drop its staged packages."""

    service: str


class DiscardUnreferenced(Request[None], frozen=True, kw_only=True):
    """Drop a hosted service's staged packages but ``keep`` (the paths RDFE's records name).

    Ask it only once the service's pool has answered a command sent after every one whose
    answer never came (its controller handles commands in order: none still reads them).
    """

    service: str
    keep: list[str]


# -- answers ---------------------------------------------------------------------------------------


class Submitted(msgspec.Struct, frozen=True, kw_only=True):
    """A deploy or upgrade went to ``pool``; ``answer`` is the controller's (an OperationAccepted),
    None when it did not answer (``unknown`` says why): the command may still be carried out."""

    pool: str
    package_path: str
    answer: OperationAccepted | None
    unknown: str = ""


class PoolInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A pool as the locations list shows it."""

    name: str
    location: str


class Ffe(Actor):
    """The FFE actor. Spawn it in the fabric's own process, next to the controllers.

    Args:
        pools: the machine pools (at least one); names must be unique.
        state_dir: the state folder; staged packages go to ``<state>/packages``.
        command_timeout: how long a controller may take to answer a command.
        probe_timeout: how long a controller may take to answer the availability probe.
        max_instances: instances one deployment may have (the fabric's max_instances setting).
    """

    def __init__(
        self,
        pools: Sequence[Pool],
        state_dir: str | Path,
        *,
        command_timeout: float = 30.0,
        probe_timeout: float = 2.0,
        max_instances: int = MAX_INSTANCES,
    ) -> None:
        if not pools:
            raise ValueError("FFE needs at least one machine pool")
        self.pools = {p.name: p for p in pools}
        if len(self.pools) != len(pools):
            raise ValueError("machine pool names must be unique")
        self.state_dir = Path(state_dir)
        self.command_timeout = command_timeout
        self.probe_timeout = probe_timeout
        self.max_instances = max_instances

    async def receive(self, message: Any) -> Any:
        """Handle one RDFE request; answers a value or raises ApiError (nothing was changed)."""
        match message:
            case Deploy():
                return await self._deploy(message)
            case Upgrade():
                return await self._upgrade(message)
            case ChangeConfig():
                await anyio.to_thread.run_sync(
                    check_configuration,
                    message.configuration,
                    message.configuration_name,
                    Path(message.package_path) if message.package_path else None,
                    self.max_instances,
                )
                await anyio.to_thread.run_sync(
                    check_certificates,
                    str(self.state_dir),
                    message.service,
                    message.configuration,
                    message.configuration_name,
                )
                command = ChangeConfiguration(
                    service=message.service,
                    slot=message.slot,
                    configuration=message.configuration,
                    configuration_name=message.configuration_name,
                    mode=message.mode,
                )
                return await self._ask(message.pool, command)
            case Forward():
                return await self._ask(message.pool, message.command, message.timeout)
            case ListAll(service=service):
                return await self._list_all(ListDeployments(service=service))
            case SummarizeAll(service=service):
                return await self._list_all(SummarizeDeployments(service=service))
            case ListPools():
                return [PoolInfo(name=p.name, location=p.location) for p in self.pools.values()]
            case DiscardUnreferenced():
                await anyio.to_thread.run_sync(
                    discard_unreferenced, self.state_dir, message.service, message.keep
                )
                return None
            case ForgetService():
                await anyio.to_thread.run_sync(discard_packages, self.state_dir, message.service)
                await anyio.to_thread.run_sync(forget_certificates, self.state_dir, message.service)
                return None
        raise TypeError(f"FFE does not handle {type(message).__name__} messages")

    # -- pools -------------------------------------------------------------------------------------

    def _pool(self, name: str) -> Pool:
        try:
            return self.pools[name]
        except KeyError:
            raise ApiError(
                503, "ServiceUnavailable", f"machine pool {name!r} is not part of this fabric any more"
            ) from None

    async def _ask(self, pool_name: str, command: Request[Answer], timeout: float | None = None) -> Answer:
        pool = self._pool(pool_name)
        try:
            return await pool.controller.ask(command, timeout=timeout or self.command_timeout)
        except ActorError as exc:
            refusal = exc.caused_by(ControllerError)
            if refusal is None:
                raise  # a bug in the controller: RDFE answers 500 and logs the traceback
            raise ApiError(refusal.status, refusal.code, refusal.message) from exc
        except ActorDead:
            raise ApiError(
                503, "ServiceUnavailable", f"the fabric controller of pool {pool.name!r} is not running"
            ) from None
        except AskTimeout:
            raise ApiError(
                503,
                "ServiceUnavailable",
                f"the fabric controller of pool {pool.name!r} did not answer in time; "
                "the command may still be applied: check the deployment's status",
            ) from None

    async def _load(self, pool: Pool) -> int | None:
        """The instances a pool runs, or None when its controller does not answer."""
        try:
            found = await pool.controller.ask(SummarizeDeployments(), timeout=self.probe_timeout)
        except (ActorError, ActorDead, AskTimeout) as exc:
            logger.warning("pool %s is not available: %s", pool.name, exc)
            return None
        return sum(sum(s.roles.values()) for s in found)

    async def _loads(self, pools: Sequence[Pool]) -> list[int | None]:
        loads: list[int | None] = [None] * len(pools)

        async def probe(i: int) -> None:
            loads[i] = await self._load(pools[i])

        async with anyio.create_task_group() as tg:
            for i in range(len(pools)):
                tg.start_soon(probe, i)
        return loads

    async def choose_pool(self, location: str | None, affinity_pool: str | None) -> Pool:
        """The pool a hosted service's first deployment goes to.

        Raises:
            ApiError: 400 when no pool serves ``location``; 503 when none answers.
        """
        if affinity_pool is not None:
            return self._pool(affinity_pool)
        candidates = [
            p for p in self.pools.values() if location is None or p.location.casefold() == location.casefold()
        ]
        if not candidates:
            known = ", ".join(sorted({p.location for p in self.pools.values()}))
            raise ApiError(
                400, "BadRequest", f"no machine pool serves location {location!r}; use one of: {known}"
            )
        loads = await self._loads(candidates)
        available = [(load, i) for i, load in enumerate(loads) if load is not None]
        if not available:
            raise ApiError(503, "ServiceUnavailable", "no machine pool is available now; try again shortly")
        return candidates[min(available)[1]]

    async def _list_all(self, command: Request[list[Listed]]) -> dict[str, list[Listed]]:
        pools = list(self.pools.values())
        out: dict[str, list[Listed]] = {}

        async def collect(pool: Pool) -> None:
            try:
                out[pool.name] = await pool.controller.ask(command, timeout=self.command_timeout)
            except (ActorError, ActorDead, AskTimeout) as exc:
                logger.warning("pool %s did not list its deployments: %s", pool.name, exc)

        async with anyio.create_task_group() as tg:
            for pool in pools:
                tg.start_soon(collect, pool)
        return {p.name: out[p.name] for p in pools if p.name in out}

    # -- packages ------------------------------------------------------------------------------------

    async def _submit(
        self, pool: Pool, path: Path, command: CreateDeployment | UpgradeDeployment
    ) -> Submitted:
        try:
            # Each thumbprint uploaded and valid now, or nothing is deployed.
            await anyio.to_thread.run_sync(
                check_certificates,
                str(self.state_dir),
                command.service,
                command.configuration,
                command.configuration_name,
            )
        except BaseException:
            await _unstage(path)  # refused before the controller saw it
            raise
        try:
            answer = await pool.controller.ask(command, timeout=self.command_timeout)
        except ActorError as exc:
            # The controller answered (a refusal, or a bug): it is done with the staged package.
            await _unstage(path)
            refusal = exc.caused_by(ControllerError)
            if refusal is None:
                raise
            raise ApiError(refusal.status, refusal.code, refusal.message) from exc
        except (AskTimeout, ActorDead) as exc:
            # No answer: the command may still be carried out, reading the staged package then,
            # so it stays (swept once it is unreferenced: DiscardUnreferenced, at an answered
            # change of the service or at startup).
            why = (
                f"the fabric controller of pool {pool.name!r} did not answer in {self.command_timeout:g} s"
                if isinstance(exc, AskTimeout)
                else f"the fabric controller of pool {pool.name!r} is gone (stopped, or its link lost)"
            )
            logger.warning("%s for %s: the outcome is unknown", why, type(command).__name__)
            return Submitted(pool=pool.name, package_path=str(path), answer=None, unknown=why)
        return Submitted(pool=pool.name, package_path=str(path), answer=answer)

    async def _deploy(self, m: Deploy) -> Submitted:
        pool = (
            self._pool(m.pool) if m.pool is not None else await self.choose_pool(m.location, m.affinity_pool)
        )
        path, configuration, configuration_name = await anyio.to_thread.run_sync(
            stage_package,
            self.state_dir,
            m.service,
            m.package,
            m.configuration,
            m.configuration_name,
            self.max_instances,
        )
        command = CreateDeployment(
            service=m.service,
            slot=m.slot,
            name=m.name,
            label=m.label,
            package_path=str(path),
            configuration=configuration,
            configuration_name=configuration_name,
            start=m.start,
        )
        return await self._submit(pool, path, command)

    async def _upgrade(self, m: Upgrade) -> Submitted:
        pool = self._pool(m.pool)
        path, configuration, configuration_name = await anyio.to_thread.run_sync(
            stage_package,
            self.state_dir,
            m.service,
            m.package,
            m.configuration,
            m.configuration_name,
            self.max_instances,
        )
        command = UpgradeDeployment(
            service=m.service,
            slot=m.slot,
            package_path=str(path),
            # Without an uploaded configuration the package's own is used, as for a deployment.
            configuration=configuration,
            configuration_name=configuration_name,
            mode=m.mode,
            role=m.role,
            label=m.label,
        )
        return await self._submit(pool, path, command)


async def _unstage(path: Path) -> None:
    """Remove a staged package no command will read (shielded: cancellation must not skip it)."""
    with anyio.move_on_after(STAGED_UNLINK_TIMEOUT, shield=True):
        await anyio.Path(path).unlink(missing_ok=True)
