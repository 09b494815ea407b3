"""The portal's one HTML page: a sign-in form and the views its script fills in from the API.

It holds no data and no secret: anyone may read it. The script shows the form until it has a
session (in the tab's sessionStorage), then the views."""

from __future__ import annotations

_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="/portal/static/app.css">
{extra}</head>"""


_VIEWS = (
    ("instances", "Instances"),
    ("services", "Services"),
    ("hosts", "Hosts"),
    ("events", "Events"),
    ("chaos", "Chaos"),
)


def portal_page() -> str:
    """The page: the sign-in form, and a shell per view that /portal/static/app.js fills in."""
    nav = "".join(f'<a href="#{v}" data-view="{v}">{label}</a>' for v, label in _VIEWS)
    return (
        _HEAD.format(
            title="reddog portal",
            extra='<script type="module" src="/portal/static/app.js"></script>\n',
        )
        + f"""<body class="signin">
<main id="signin-view">
<h1>reddog portal</h1>
<form method="post" action="/portal/signin" id="signin">
<label for="token">API token <small>(the file <code>token</code> in the fabric's state folder)</small></label>
<input type="password" id="token" name="token" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
<p class="error" id="signin-error" role="alert" hidden></p>
</form>
</main>
<div id="app" hidden>
<header>
<h1>reddog</h1><nav>{nav}</nav>
<span id="live" class="live">connecting…</span>
<button type="button" id="signout">Sign out</button>
</header>
<main>
<p id="message" class="message" role="status" hidden></p>

<section id="view-instances" data-view="instances">
<h2>Instances</h2>
<table id="instances"><thead><tr>
<th>Service</th><th>Slot</th><th>Instance</th><th>Role</th><th>Status</th><th>Host</th>
<th>UD</th><th>FD</th><th>Restarts</th><th>Rotation</th><th></th></tr></thead>
<tbody></tbody></table>
</section>

<section id="view-instance" data-view="instance" hidden>
<h2>Instance <span id="instance-name"></span></h2>
<div class="columns">
<div>
<h3>Processes <small id="samples-at"></small></h3>
<ul id="processes" class="tree"></ul>
<h3>RoleEnvironment</h3>
<table id="role-settings"><thead><tr><th>Setting</th><th>Value</th></tr></thead><tbody></tbody></table>
<table id="role-endpoints"><thead><tr><th>Endpoint</th><th>Address</th><th>Protocol</th></tr></thead><tbody></tbody></table>
<table id="role-storage"><thead><tr><th>LocalStorage</th><th>Path</th><th>Size (MB)</th></tr></thead><tbody></tbody></table>
</div>
<div>
<h3>Log <select id="log-file"></select> <small>live</small></h3>
<pre id="log" class="log"></pre>
</div>
</div>
</section>

<section id="view-services" data-view="services" hidden>
<h2>Services and deployments</h2>
<div id="deployments"></div>
</section>

<section id="view-hosts" data-view="hosts" hidden>
<h2>Hosts</h2>
<table id="hosts"><thead><tr><th>Host</th><th>Alive</th><th>Heartbeat age</th><th>Cores used</th>
<th>Memory</th><th>VMs</th></tr></thead>
<tbody></tbody></table>
</section>

<section id="view-events" data-view="events" hidden>
<h2>Events</h2>
<form id="event-filter" class="filters">
<label>Service <input name="service"></label>
<label>Role <input name="role"></label>
<label>Instance <input name="instance"></label>
</form>
<ol id="events" reversed></ol>
</section>

<section id="view-chaos" data-view="chaos" hidden>
<h2>Chaos</h2>
<form id="inject" class="inject">
<label>Service <select name="service" id="chaos-service"></select></label>
<label>Fault <select name="type"><option>kill</option><option>crash</option><option>hang</option>
<option value="partition">partition (the instance's host)</option></select></label>
<label>Process <select name="place">
<option>role-host</option><option>bootstrapper</option><option>guest-agent</option><option>app-agent</option>
<option>host-agent</option><option>web-worker</option><option>host</option></select></label>
<label>Instance <select name="instance" id="chaos-instance"></select></label>
<label>Duration (s: hang, partition) <input name="duration" type="number" min="0" max="3600" step="any"></label>
<button type="submit">Inject</button>
<span class="error" id="inject-error" role="alert"></span>
</form>
<h3>Faults</h3>
<table id="faults"><thead><tr><th>Id</th><th>Fault</th><th>State</th><th>At</th><th>Detail</th><th></th></tr></thead>
<tbody></tbody></table>
<h3>Targets</h3>
<table id="targets"><thead><tr><th>Instance</th><th>Status</th><th>Host</th><th>Rotation</th><th>Processes</th></tr></thead>
<tbody></tbody></table>
<h3>Report</h3>
<div id="chaos-report"></div>
<h3>Run a scenario</h3>
<form id="scenario" class="scenario">
<label>Scenario (TOML, as for <code>fabric chaos run</code>)
<input type="file" id="scenario-file" accept=".toml,text/plain"></label>
<textarea name="scenario" rows="10" cols="80" spellcheck="false"></textarea>
<button type="submit">Run</button>
<span class="error" id="scenario-error" role="alert"></span>
</form>
<pre id="scenario-progress" class="progress"></pre>
<div id="scenario-report"></div>
</section>
</main>
</div>
</body></html>"""
    )
