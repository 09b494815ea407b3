"""A small actor runtime on anyio: mailboxes, supervision, and actors in child processes."""

from __future__ import annotations

from ._actor import Actor as Actor
from ._backend import Backend as Backend
from ._backend import current_backend as current_backend
from ._errors import ActorDead as ActorDead
from ._errors import ActorError as ActorError
from ._errors import AskTimeout as AskTimeout
from ._errors import MailboxFull as MailboxFull
from ._errors import ProcessExited as ProcessExited
from ._errors import RestartIntensityExceeded as RestartIntensityExceeded
from ._errors import Unresponsive as Unresponsive
from ._errors import register_error as register_error
from ._fork import command_line as command_line
from ._link import LinkFaults as LinkFaults
from ._listener import Listener as Listener
from ._net import LinkOptions as LinkOptions
from ._net import Peer as Peer
from ._privileges import PrivilegeError as PrivilegeError
from ._privileges import drop_privileges as drop_privileges
from ._ref import Ref as Ref
from ._request import Request as Request
from ._sandbox import Sandbox as Sandbox
from ._spawn import KILL_REAP_TIMEOUT as KILL_REAP_TIMEOUT
from ._spawn import ChildProcess as ChildProcess
from ._spawn import start_process as start_process
from ._stall import STALL_LOG_ENV as STALL_LOG_ENV
from ._stall import STALL_THRESHOLD as STALL_THRESHOLD
from ._stall import Stall as Stall
from ._supervisor import ChildInfo as ChildInfo
from ._supervisor import ChildSpec as ChildSpec
from ._supervisor import GetChild as GetChild
from ._supervisor import Supervisor as Supervisor
from ._supervisor import WhichChildren as WhichChildren
from ._system import ActorSystem as ActorSystem
from ._system import ProcessOptions as ProcessOptions
from ._system import open_system as open_system
from ._tls import ClientTLS as ClientTLS
from ._tls import LinkRefused as LinkRefused
from ._tls import ServerTLS as ServerTLS
from ._zygote import Template as Template
