"""The SDK role code imports: RoleEntryPoint and RoleEnvironment.

Importing it is cheap (no trio, no web server): the role host processes live in roles.hosts.
"""

from __future__ import annotations

from .entry_point import RoleEntryPoint as RoleEntryPoint
from .environment import LocalResource as LocalResource
from .environment import Role as Role
from .environment import RoleEnvironment as RoleEnvironment
from .environment import RoleEnvironmentError as RoleEnvironmentError
from .environment import RoleInstance as RoleInstance
from .environment import RoleInstanceEndpoint as RoleInstanceEndpoint
from .environment_data import CertificateInfo as CertificateInfo
from .environment_data import Change as Change
from .events import Event as Event
from .events import RoleEnvironmentChangedEventArgs as RoleEnvironmentChangedEventArgs
from .events import RoleEnvironmentChangingEventArgs as RoleEnvironmentChangingEventArgs
from .events import RoleEnvironmentStoppingEventArgs as RoleEnvironmentStoppingEventArgs
from .events import RoleInstanceStatusCheckEventArgs as RoleInstanceStatusCheckEventArgs
from .events import SimultaneousChangedEventArgs as SimultaneousChangedEventArgs
from .events import SimultaneousChangingEventArgs as SimultaneousChangingEventArgs
