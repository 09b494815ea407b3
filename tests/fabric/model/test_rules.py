"""Every validation rule has a failing fixture: one edit of the Shop service that breaks it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from fabric.model import (
    InputEndpoint,
    ModelError,
    RoleConfiguration,
    RoleDefinition,
    ServiceConfiguration,
    ServiceDefinition,
    configuration_to_toml,
    definition_to_toml,
    load_service,
)

Edit = Callable[[Path, str, str], None]
DEF = "ServiceDefinition.csdef"
CFG = "ServiceConfiguration.Local.cscfg"
CERT_DECL = '<Certificate name="SslCert" storeLocation="LocalMachine" storeName="My" />'
WORKER_IMPORTS = (
    '<Import moduleName="RemoteAccess" />\n    </Imports>\n    <ConfigurationSettings>\n'
    '      <Setting name="QueueName" />'
)
PLUGINS = "Microsoft.WindowsAzure.Plugins"
WEB_CFG_SETTINGS = '<Setting name="Greeting" value="hello from the shop" />'

# (rule, file, old text, new text, what the message must say)
CASES = [
    (
        "role name unique",
        DEF,
        '<WorkerRole name="Worker"',
        '<WorkerRole name="webfront"',
        "role 'webfront' is defined twice",
    ),
    (
        "role name safe",
        DEF,
        '<WorkerRole name="Worker"',
        '<WorkerRole name="../Worker"',
        "is not a valid role name",
    ),
    (
        "service name safe",
        DEF,
        '<ServiceDefinition name="Shop"',
        '<ServiceDefinition name="Shop Two"',
        "not a valid service name",
    ),
    (
        "endpoint name unique",
        DEF,
        '<InternalEndpoint name="Gossip"',
        '<InternalEndpoint name="GameIn"',
        "endpoint 'GameIn' is defined twice",
    ),
    (
        "setting name unique",
        DEF,
        '<Setting name="StorageConnectionString" />',
        '<Setting name="Greeting" />',
        "setting 'Greeting' is defined twice",
    ),
    (
        "local storage unique",
        DEF,
        '<LocalStorage name="Scratch"',
        '<LocalStorage name="Scratch" /><LocalStorage name="Scratch"',
        "LocalStorage 'Scratch' is defined twice",
    ),
    (
        "certificate unique",
        DEF,
        CERT_DECL,
        CERT_DECL * 2,
        "certificate 'SslCert' is defined twice",
    ),
    ("site unique", DEF, '<Site name="Admin"', '<Site name="Store"', "site 'Store' is defined twice"),
    (
        "binding unique",
        DEF,
        '<Binding name="HttpsIn"',
        '<Binding name="HttpIn"',
        "binding 'HttpIn' is defined twice",
    ),
    (
        "probe unique",
        DEF,
        '<LoadBalancerProbe name="GameProbe"',
        '<LoadBalancerProbe name="StoreHealth"',
        "load balancer probe 'StoreHealth' is defined twice",
    ),
    (
        "variable unique",
        DEF,
        '<Variable name="INSTANCE_ID">',
        '<Variable name="DEPLOYMENT_ID">',
        "variable 'DEPLOYMENT_ID' is defined twice",
    ),
    (
        "import unique",
        DEF,
        '<Import moduleName="RemoteForwarder" />',
        '<Import moduleName="Diagnostics" />',
        "plugin Diagnostics is imported twice",
    ),
    (
        "port in range",
        DEF,
        'port="443"',
        'port="70000"',
        "70000 is out of range; use a number from 1 to 65535",
    ),
    ("port not zero", DEF, 'port="80"', 'port="0"', "0 is out of range"),
    ("port is a number", DEF, 'port="80"', 'port="eighty"', "'eighty' is not a whole number"),
    (
        "local port number or *",
        DEF,
        'localPort="*"',
        'localPort="any"',
        "'any' is not a whole number; use a number or '*'",
    ),
    (
        "public ports unique",
        DEF,
        'name="GameIn" protocol="tcp" port="9000"',
        'name="GameIn" protocol="tcp" port="80"',
        "public port 80 is already used by WebFront/HttpIn",
    ),
    (
        "local ports unique",
        DEF,
        '<InternalEndpoint name="Gossip" protocol="tcp" port="7000" />',
        '<InternalEndpoint name="Gossip" protocol="tcp" port="2222" />',
        "port 2222 is already used by endpoint",
    ),
    (
        "range clashes with port",
        DEF,
        '<InternalEndpoint name="Gossip" protocol="tcp" port="7000" />',
        '<InternalEndpoint name="Gossip" protocol="tcp" port="8105" />',
        "port 8105 is already used by endpoint",
    ),
    (
        "instance range overlaps public port",
        DEF,
        '<FixedPortRange min="10000" max="10100" />',
        '<FixedPortRange min="8000" max="10100" />',
        "includes port 9000 of Worker/GameIn",
    ),
    ("range not empty", DEF, 'min="8100" max="8110"', 'min="8110" max="8100"', "range 8110-8100 is empty"),
    (
        "internal port given once",
        DEF,
        '<InternalEndpoint name="Discovery" protocol="udp">',
        '<InternalEndpoint name="Discovery" protocol="udp" port="5354">',
        "give the port once",
    ),
    (
        "https needs a certificate",
        DEF,
        ' certificate="SslCert" />',
        " />",
        "an https endpoint needs a certificate",
    ),
    (
        "certificate exists",
        DEF,
        'certificate="SslCert" />',
        'certificate="SslCrt" />',
        "certificate 'SslCrt' is not defined in role WebFront; did you mean 'SslCert'?",
    ),
    (
        "certificate only on https",
        DEF,
        'name="HttpIn" protocol="http" port="80"',
        'name="HttpIn" protocol="http" port="80" certificate="SslCert"',
        "a certificate is only used by https endpoints",
    ),
    (
        "probe exists",
        DEF,
        'loadBalancerProbe="StoreHealth"',
        'loadBalancerProbe="Missing"',
        "load balancer probe 'Missing' is not defined",
    ),
    ("http probe needs a path", DEF, ' path="/health"', "", "an http probe needs a path"),
    (
        "tcp probe takes no path",
        DEF,
        'protocol="tcp" port="9000" />',
        'protocol="tcp" port="9000" path="/x" />',
        "a tcp probe takes no path",
    ),
    (
        "probe interval minimum",
        DEF,
        'intervalInSeconds="5"',
        'intervalInSeconds="4"',
        "4 is out of range; use a number of at least 5",
    ),
    (
        "upgrade domains at most 20",
        DEF,
        'upgradeDomainCount="3"',
        'upgradeDomainCount="21"',
        "21 is out of range; use a number from 1 to 20",
    ),
    (
        "local storage at least 1 MB",
        DEF,
        'sizeInMB="512"',
        'sizeInMB="0"',
        "0 is out of range; use a number of at least 1",
    ),
    (
        "vm size known",
        DEF,
        'vmsize="Medium"',
        'vmsize="Meduim"',
        "unknown VM size 'Meduim'; did you mean 'Medium'?",
    ),
    (
        "enum: topology",
        DEF,
        'topologyChangeDiscovery="UpgradeDomainWalk"',
        'topologyChangeDiscovery="Walk"',
        "'Walk' is not one of: Blast, UpgradeDomainWalk",
    ),
    (
        "enum: execution context",
        DEF,
        'executionContext="elevated" taskType="simple"',
        'executionContext="Elevated" taskType="simple"',
        "did you mean 'elevated'?",
    ),
    (
        "enum: task type",
        DEF,
        'taskType="background"',
        'taskType="async"',
        "'async' is not one of: background, foreground, simple",
    ),
    (
        "enum: protocol",
        DEF,
        'protocol="udp">',
        'protocol="quic">',
        "'quic' is not one of: any, http, tcp, udp",
    ),
    (
        "enum: plugin",
        DEF,
        '<Import moduleName="RemoteForwarder" />',
        '<Import moduleName="Caching" />',
        "'Caching' is not one of: Diagnostics, RemoteAccess, RemoteForwarder",
    ),
    ("boolean", DEF, 'cleanOnRoleRecycle="false"', 'cleanOnRoleRecycle="no"', "'no' is not true or false"),
    (
        "required attribute",
        DEF,
        '<InputEndpoint name="HttpsIn" protocol="https" port="443"',
        '<InputEndpoint name="HttpsIn" protocol="https"',
        "InputEndpoint@port: is required but missing; add it",
    ),
    (
        "unknown attribute",
        DEF,
        '<WorkerRole name="Worker"',
        '<WorkerRole colour="blue" name="Worker"',
        "unknown attribute 'colour'",
    ),
    ("unknown element", DEF, "<Imports>", "<Plugins /><Imports>", "Plugins: is not allowed in WebRole"),
    (
        "wrapper once",
        DEF,
        "<Contents>",
        "<LocalResources /><Contents>",
        "LocalResources: appears twice in WorkerRole",
    ),
    ("text not allowed", DEF, "<Imports>", "<Imports>stray text", "has text content"),
    (
        "xpath form",
        DEF,
        "/RoleEnvironment/Deployment/@id",
        "/RoleEnvironment/Deployment/@name",
        "is not a supported RoleInstanceValue xpath",
    ),
    (
        "xpath setting declared",
        DEF,
        "[@name='Greeting']/@value",
        "[@name='Greting']/@value",
        "names setting 'Greting', which role WebFront does not declare; did you mean 'Greeting'?",
    ),
    (
        "xpath resource declared",
        DEF,
        "[@name='Uploads']/@path",
        "[@name='Scratch']/@path",
        "names LocalStorage 'Scratch', which role WebFront does not declare",
    ),
    (
        "xpath endpoint declared",
        DEF,
        "[@name='Gossip']/@port",
        "[@name='HttpIn']/@port",
        "names endpoint 'HttpIn', which role Worker does not declare",
    ),
    (
        "variable value or xpath",
        DEF,
        '<Variable name="MODE" value="production" />',
        '<Variable name="MODE" />',
        "give either a value or a RoleInstanceValue xpath",
    ),
    (
        "variable not both",
        DEF,
        '<Variable name="GREETING">',
        '<Variable name="GREETING" value="x">',
        "give either a value or a RoleInstanceValue xpath",
    ),
    (
        "program entry point only in workers",
        DEF,
        '<NetFxEntryPoint assemblyName="WebFront.dll" targetFrameworkVersion="v4.0" />',
        '<ProgramEntryPoint commandLine="python web.py" />',
        "ProgramEntryPoint is for worker roles",
    ),
    (
        "one entry point",
        DEF,
        '<ProgramEntryPoint commandLine="python worker.py" setReadyOnProcessStart="true" />',
        '<ProgramEntryPoint commandLine="python worker.py" /><NetFxEntryPoint assemblyName="w.py" />',
        "give exactly one entry point",
    ),
    (
        "entry module inside role",
        DEF,
        'assemblyName="WebFront.dll"',
        'assemblyName="../WebFront.dll"',
        "must be a path inside the role folder",
    ),
    (
        "startup command not empty",
        DEF,
        '<Task commandLine="./setup.sh"',
        '<Task commandLine="  "',
        "is empty; give the command to run",
    ),
    (
        "binding endpoint exists",
        DEF,
        '<Binding name="AdminIn" endpointName="HttpIn"',
        '<Binding name="AdminIn" endpointName="AdminHttp"',
        "endpoint 'AdminHttp' is not defined in role WebFront",
    ),
    (
        "binding needs http",
        DEF,
        '<InputEndpoint name="HttpsIn" protocol="https" port="443" certificate="SslCert" />',
        '<InputEndpoint name="HttpsIn" protocol="tcp" port="443" />',
        "endpoint 'HttpsIn' is tcp; a site binds to http or https endpoints",
    ),
    (
        "site needs a binding",
        DEF,
        '<Binding name="AdminIn" endpointName="HttpIn" hostHeader="admin.example.com" />',
        "",
        "a site needs at least one binding",
    ),
    (
        "host headers distinct",
        DEF,
        'hostHeader="admin.example.com"',
        "",
        "already binds endpoint 'HttpIn' with the same host header",
    ),
    (
        "one RemoteForwarder",
        DEF,
        WORKER_IMPORTS,
        WORKER_IMPORTS.replace("/>", '/><Import moduleName="RemoteForwarder" />', 1),
        "RemoteForwarder may be imported by one role only",
    ),
    (
        "plugin settings not redeclared",
        DEF,
        '<Setting name="QueueName" />',
        f'<Setting name="QueueName" /><Setting name="{PLUGINS}.Diagnostics.ConnectionString" />',
        "is declared by the Diagnostics plugin",
    ),
    (
        "content stays in approot",
        DEF,
        '<Content destination="data">',
        '<Content destination="../data">',
        "must be a folder inside approot",
    ),
    (
        "service name matches",
        CFG,
        'serviceName="Shop"',
        'serviceName="Shopp"',
        "is 'Shopp' but the definition names the service 'Shop'",
    ),
    (
        "every role configured",
        CFG,
        '<Role name="Worker">',
        '<Role name="Wroker">',
        "has no configuration for role 'Worker'",
    ),
    (
        "no unknown roles",
        CFG,
        '<Role name="Worker">',
        '<Role name="Wroker">',
        "role 'Wroker' is not in the definition; did you mean 'Worker'?",
    ),
    (
        "roles configured once",
        CFG,
        '<Role name="Worker">',
        '<Role name="WebFront">',
        "role 'WebFront' is defined twice",
    ),
    (
        "instances at least 1",
        CFG,
        '<Instances count="2" />',
        '<Instances count="0" />',
        "0 is out of range; use a number of at least 1",
    ),
    (
        "instances not absurd",
        CFG,
        '<Instances count="2" />',
        '<Instances count="99999999999" />',
        "99999999999 is too large",
    ),
    ("instances given", CFG, '<Instances count="2" />', "", "Instances@count: is required but missing"),
    (
        "every setting has a value",
        CFG,
        WEB_CFG_SETTINGS,
        "",
        "setting 'Greeting' declared by role WebFront has no value",
    ),
    (
        "no undeclared settings",
        CFG,
        WEB_CFG_SETTINGS,
        WEB_CFG_SETTINGS + '<Setting name="Colour" value="red" />',
        "setting 'Colour' is not declared by role WebFront",
    ),
    (
        "settings given once",
        CFG,
        WEB_CFG_SETTINGS,
        WEB_CFG_SETTINGS * 2,
        "setting 'Greeting' is defined twice",
    ),
    (
        "plugin setting needs its import",
        CFG,
        '<Setting name="QueueName" value="orders" />',
        '<Setting name="QueueName" value="orders" />'
        f'<Setting name="{PLUGINS}.RemoteForwarder.Enabled" value="true" />',
        "is not declared by role Worker",
    ),
    (
        "every certificate has a thumbprint",
        CFG,
        '<Certificate name="SslCert" thumbprint="0123456789ABCDEF0123456789ABCDEF01234567" '
        'thumbprintAlgorithm="sha1" />',
        "",
        "certificate 'SslCert' declared by role WebFront has no thumbprint",
    ),
    (
        "no undeclared certificates",
        CFG,
        '<Certificate name="SslCert"',
        '<Certificate name="Other" thumbprint="AB" /><Certificate name="SslCert"',
        "certificate 'Other' is not declared by role WebFront",
    ),
    (
        "thumbprint is hex",
        CFG,
        'thumbprint="0123456789ABCDEF0123456789ABCDEF01234567"',
        'thumbprint="01 23"',
        "must be hexadecimal digits without spaces",
    ),
    (
        "port range fits the instances",
        DEF,
        'min="10000" max="10100"',
        'min="10000" max="10001"',
        "3 instances need 3 public ports, but endpoint Debug allocates from 10000-10001",
    ),
]

# Rules that compare both files report at the configuration's line.
REPORTED_IN_CONFIGURATION = {"port range fits the instances"}


@pytest.mark.parametrize(("rule", "file", "old", "new", "message"), CASES, ids=[c[0] for c in CASES])
def test_rule_has_a_failing_fixture(
    shop: Path, edit: Edit, rule: str, file: str, old: str, new: str, message: str
) -> None:
    edit(shop / file, old, new)
    with pytest.raises(ModelError) as info:
        load_service(shop)
    text = str(info.value)
    assert message in text, text
    located = [p for p in info.value.errors if message.split(";")[0].split(": ")[-1] in str(p)]
    assert located, text
    reported_in = CFG if rule in REPORTED_IN_CONFIGURATION else file
    assert all(p.file.endswith(reported_in) and p.line and p.element for p in located), text


def test_every_error_in_a_file_is_reported_at_once(shop: Path, edit: Edit) -> None:
    path = shop / DEF
    edit(path, 'port="443"', 'port="99999"')
    edit(path, 'vmsize="Medium"', 'vmsize="Gigantic"')
    edit(path, 'taskType="foreground"', 'taskType="later"')
    edit(path, "<Imports>", "<Plugins /><Imports>")
    edit(shop / CFG, '<Instances count="3" />', '<Instances count="-1" />')
    with pytest.raises(ModelError) as info:
        load_service(shop)
    problems = info.value.problems
    assert len(problems) == 5, str(info.value)
    by_file = [(Path(p.file).name, p.line, p.element, p.attribute) for p in problems]
    assert (DEF, 7, "WebRole", "vmsize") in by_file
    assert (DEF, 25, "InputEndpoint", "port") in by_file
    assert (DEF, 27, "Plugins", None) in by_file
    assert (DEF, 106, "Task", "taskType") in by_file
    assert (CFG, 15, "Instances@count", None) in by_file
    # str() is one `file:line: message` line per problem, in file then line order.
    lines = str(info.value).splitlines()
    assert lines[0].startswith(f"{path}:7: WebRole@vmsize: unknown VM size 'Gigantic'")
    assert lines[-1].startswith(f"{shop / CFG}:15: ")


def _toml_service(tmp_path: Path, definition: ServiceDefinition, configuration: ServiceConfiguration) -> Path:
    (tmp_path / "service.toml").write_bytes(definition_to_toml(definition))
    (tmp_path / "config.toml").write_bytes(configuration_to_toml(configuration))
    for role in definition.roles:
        (tmp_path / role.name).mkdir(exist_ok=True)
    return tmp_path


def _worker(name: str, endpoints: int = 0, first_port: int = 1000) -> RoleDefinition:
    inputs = tuple(InputEndpoint(name=f"e{i}", protocol="tcp", port=first_port + i) for i in range(endpoints))
    return RoleDefinition(name=name, kind="worker", input_endpoints=inputs)


def test_a_service_needs_a_role(tmp_path: Path) -> None:
    root = _toml_service(tmp_path, ServiceDefinition(name="S"), ServiceConfiguration(service_name="S"))
    with pytest.raises(ModelError, match="defines no roles; add a WebRole or WorkerRole"):
        load_service(root)


def test_at_most_25_roles(tmp_path: Path) -> None:
    roles = tuple(_worker(f"R{i}") for i in range(26))
    configs = tuple(RoleConfiguration(name=r.name, instances=1) for r in roles)
    root = _toml_service(
        tmp_path,
        ServiceDefinition(name="S", roles=roles),
        ServiceConfiguration(service_name="S", roles=configs),
    )
    with pytest.raises(ModelError, match="defines 26 roles; a service may have at most 25"):
        load_service(root)
    (tmp_path / "ok").mkdir()
    ok = _toml_service(
        tmp_path / "ok",
        ServiceDefinition(name="S", roles=roles[:25]),
        ServiceConfiguration(service_name="S", roles=configs[:25]),
    )
    assert len(load_service(ok).definition.roles) == 25


def test_at_most_25_endpoints_in_all(tmp_path: Path) -> None:
    roles = (_worker("A", 13, 1000), _worker("B", 13, 2000))
    configs = tuple(RoleConfiguration(name=r.name, instances=1) for r in roles)
    root = _toml_service(
        tmp_path,
        ServiceDefinition(name="S", roles=roles),
        ServiceConfiguration(service_name="S", roles=configs),
    )
    with pytest.raises(ModelError, match="defines 26 endpoints; a service may have at most 25"):
        load_service(root)


def test_hwc_web_role_has_one_internal_endpoint(tmp_path: Path) -> None:
    from fabric.model import InternalEndpoint

    web = RoleDefinition(
        name="W",
        kind="web",
        internal_endpoints=(
            InternalEndpoint(name="a", protocol="tcp"),
            InternalEndpoint(name="b", protocol="tcp"),
        ),
    )
    root = _toml_service(
        tmp_path,
        ServiceDefinition(name="S", roles=(web,)),
        ServiceConfiguration(service_name="S", roles=(RoleConfiguration(name="W", instances=1),)),
    )
    with pytest.raises(ModelError, match="a web role without Sites may have one internal endpoint"):
        load_service(root)
    assert msgspec.structs.replace(web, internal_endpoints=web.internal_endpoints[:1]).is_hwc
