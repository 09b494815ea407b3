// The reddog portal: plain modern JavaScript, no library, no build step.
// It reads the same API the CLI uses, and follows the fabric live through /events/stream
// (server-sent events): a status event updates its row at once, then the views are read again once.
//
// Signing in buys a session secret, kept in this tab's sessionStorage and sent in a header on
// every request (fetch only: EventSource cannot send a header). Never a cookie: a browser sends
// cookies to every port of a host, so a role's site on this machine would get it; sessionStorage
// and the header stay with this origin (scheme, host and port).

const SESSION_KEY = "reddog-session";
const SESSION_HEADER = "x-reddog-session";
let session = sessionStorage.getItem(SESSION_KEY);
const $ = (selector) => document.querySelector(selector);
const EVENT_KINDS = ["status", "heal", "upgrade", "config", "deployment", "fault"];
const MAX_EVENT_ROWS = 500;

const state = { subscription: null, deployments: [], faults: [], view: "instances" };

class ApiError extends Error {}

// Every request of the page: the session in its header, no cookie (there is none to send).
async function request(path, init = {}) {
  const resp = await fetch(path, { ...init, credentials: "omit", headers: { ...init.headers, [SESSION_HEADER]: session } });
  if (resp.status === 401) {
    sessionStorage.removeItem(SESSION_KEY);
    location.reload(); // the session ended: back to the sign-in form
    throw new ApiError("signed out");
  }
  return resp;
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await request(path, init);
  const type = resp.headers.get("content-type") || "";
  const data = type.includes("json") ? await resp.json() : await resp.text();
  if (!resp.ok) {
    const message = data && data.Error ? data.Error.Message : `${resp.status} ${resp.statusText}`;
    throw new ApiError(message);
  }
  return data;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function say(text, isError = false) {
  const box = $("#message");
  box.textContent = text;
  box.hidden = !text;
  box.classList.toggle("error", isError);
}

// -- reading the fabric --------------------------------------------------------------------------

const slotPath = (d) =>
  `/subscriptions/${state.subscription}/services/hostedservices/${encodeURIComponent(d.service)}/deploymentslots/${d.slot}`;

// The newest status event applied to each row: a view read before it must not show an older one.
const lastStatus = new Map();
let lastSeq = 0;

async function loadDeployments() {
  const seqAtStart = lastSeq;
  if (!state.subscription) {
    const subs = await api("GET", "/subscriptions");
    state.subscription = subs.Subscriptions[0].SubscriptionId;
  }
  const hosted = await api(
    "GET",
    `/subscriptions/${state.subscription}/services/hostedservices?embed-detail=true`,
  );
  state.deployments = hosted.HostedServices.flatMap((h) => h.Deployments || []);
  for (const d of state.deployments) {
    for (const inst of d.instances) {
      const newer = lastStatus.get(rowId(d.service, d.slot, inst.id));
      if (newer && newer.seq > seqAtStart) inst.status = newer.status;
    }
  }
  renderInstances();
  renderDeployments();
  renderChaosServices();
}

// Re-reading is coalesced: one read in flight, and at most one more after it (no timer).
function coalesced(read) {
  let running = null;
  let again = false;
  const run = async () => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        try {
          await read();
        } catch (error) {
          if (!(error instanceof ApiError)) console.error(error);
        }
      } while (again);
      running = null;
    })();
    return running;
  };
  return run;
}

const refreshDeployments = coalesced(loadDeployments);
const refreshFaults = coalesced(loadFaults);
const refreshReport = coalesced(loadReport);
const refreshHosts = coalesced(loadHosts);
const refreshTargets = coalesced(loadTargets);

// -- instances -----------------------------------------------------------------------------------

const vmOf = (d, inst) => `${d.service}.${d.name}.${inst.id}`;
const rowId = (service, slot, instance) => `inst-${service}-${slot}-${instance}`.toLowerCase();

function statusCell(status) {
  return el("td", { class: `status status-${status}`, dataset: { status } }, status);
}

function instanceAction(d, inst, action) {
  return el(
    "button",
    {
      type: "button",
      class: `action-${action}`,
      onclick: async () => {
        try {
          await api("POST", `${slotPath(d)}/roleinstances/${inst.id}?comp=${action}`);
          say(`${action} of ${inst.id} accepted`);
        } catch (error) {
          say(`${action} ${inst.id}: ${error.message}`, true);
        }
      },
    },
    action,
  );
}

function renderInstances() {
  const body = $("#instances tbody");
  const rows = [];
  for (const d of state.deployments) {
    for (const inst of d.instances) {
      const rotation = inst.status === "ReadyRole" && !(inst.refusing || []).length;
      rows.push(
        el(
          "tr",
          { id: rowId(d.service, d.slot, inst.id), dataset: { instance: inst.id, service: d.service } },
          el("td", {}, d.service),
          el("td", {}, d.slot),
          el("td", { class: "instance" }, el("a", { href: `#instance/${vmOf(d, inst)}` }, inst.id)),
          el("td", {}, inst.role),
          statusCell(inst.status),
          el("td", {}, inst.host || "-"),
          el("td", {}, inst.update_domain),
          el("td", {}, inst.fault_domain),
          el("td", { class: "restarts" }, inst.restarts),
          el("td", { class: "rotation" }, rotation ? "in" : "out"),
          el("td", {}, instanceAction(d, inst, "reboot"), " ", instanceAction(d, inst, "reimage")),
        ),
      );
    }
  }
  body.replaceChildren(...rows);
}

// A status event is shown at once, before the deployments are read again.
function applyStatus(event) {
  lastStatus.set(rowId(event.service, event.slot, event.instance), { status: event.status, seq: event.seq });
  const row = document.getElementById(rowId(event.service, event.slot, event.instance));
  if (!row) return;
  const cells = row.children;
  cells[4].replaceWith(statusCell(event.status));
  cells[9].textContent = event.status === "ReadyRole" ? "in" : "out";
  if (event.host) cells[5].textContent = event.host;
}

// -- services and deployments -------------------------------------------------------------------

function deploymentAction(label, run, confirmText) {
  return el(
    "button",
    {
      type: "button",
      class: `action-${label.toLowerCase().replaceAll(" ", "-")}`,
      onclick: async () => {
        if (confirmText && !confirm(confirmText)) return;
        try {
          await run();
          say(`${label}: accepted`);
        } catch (error) {
          say(`${label}: ${error.message}`, true);
        }
      },
    },
    label,
  );
}

function renderDeployments() {
  const box = $("#deployments");
  const cards = state.deployments.map((d) => {
    const actions = [];
    if (d.status === "Running") {
      actions.push(deploymentAction("Suspend", () => api("POST", `${slotPath(d)}?comp=status`, { Status: "Suspended" })));
    } else if (d.status === "Suspended") {
      actions.push(deploymentAction("Resume", () => api("POST", `${slotPath(d)}?comp=status`, { Status: "Running" })));
    }
    if (d.next_upgrade_domain >= 0) {
      actions.push(
        deploymentAction(`Walk domain ${d.next_upgrade_domain}`, () =>
          api("POST", `${slotPath(d)}?comp=walkupgradedomain`, { UpgradeDomain: d.next_upgrade_domain }),
        ),
      );
    }
    actions.push(
      deploymentAction("VIP swap", () =>
        api("POST", `/subscriptions/${state.subscription}/services/hostedservices/${encodeURIComponent(d.service)}?comp=swap`, {}),
      ),
    );
    actions.push(
      el("button", { type: "button", class: "action-configure", onclick: () => openConfiguration(d, card) }, "Configuration"),
    );
    actions.push(
      deploymentAction(
        "Delete",
        () => api("DELETE", slotPath(d)),
        `Delete deployment ${d.name} (${d.service}, ${d.slot})? Its instances stop.`,
      ),
    );
    const roles = Object.entries(d.roles || {}).map(([role, count]) => `${role} × ${count}`).join(", ");
    const endpoints = (d.endpoints || []).map((e) => `${e.role}/${e.name} ${e.host}:${e.port}`).join(", ");
    const card = el(
      "article",
      { class: "deployment", dataset: { service: d.service, slot: d.slot } },
      el("h3", {}, `${d.service} · ${d.slot} · ${d.name}`),
      el(
        "dl",
        {},
        el("dt", {}, "Status"), el("dd", { class: "deployment-status" }, d.status),
        el("dt", {}, "Label"), el("dd", {}, d.label || "-"),
        el("dt", {}, "Roles"), el("dd", {}, roles || "-"),
        el("dt", {}, "Update domains"),
        el("dd", {}, d.next_upgrade_domain >= 0 ? `${d.upgrade_domain_count} (next to walk: ${d.next_upgrade_domain})` : d.upgrade_domain_count),
        el("dt", {}, "Endpoints"), el("dd", {}, endpoints || "-"),
      ),
      el("div", { class: "actions" }, ...actions),
    );
    const open = openForms.get(`${d.service}/${d.slot}`);
    if (open) card.append(open);
    return card;
  });
  box.replaceChildren(...(cards.length ? cards : [el("p", {}, "No deployment yet: fabric deploy SERVICE")]));
}

// The configuration form: fields per role; each problem shown beside its field, in the words of
// `fabric validate`; nothing is sent to the fabric until the check finds none.
const openForms = new Map();

async function openConfiguration(d, card) {
  const key = `${d.service}/${d.slot}`;
  const query = `service=${encodeURIComponent(d.service)}&slot=${d.slot}`;
  let form;
  try {
    form = await api("GET", `/portal/configuration?${query}`);
  } catch (error) {
    say(`configuration of ${key}: ${error.message}`, true);
    return;
  }
  const errorFor = (role, field) => el("span", { class: "field-error", dataset: { role, field } });
  const fieldsets = form.roles.map((role) =>
    el(
      "fieldset",
      { dataset: { role: role.name } },
      el("legend", {}, role.name, " ", errorFor(role.name, "role")),
      el(
        "label",
        {},
        "Instances ",
        el("input", { name: "instances", value: role.instances, dataset: { role: role.name, field: "instances" } }),
        errorFor(role.name, "instances"),
      ),
      ...role.settings.map((s) =>
        el(
          "label",
          {},
          `${s.name} `,
          el("input", { name: `setting:${s.name}`, value: s.value, dataset: { role: role.name, field: `setting:${s.name}` } }),
          errorFor(role.name, `setting:${s.name}`),
        ),
      ),
    ),
  );
  const node = el(
    "form",
    { class: "configuration", dataset: { service: d.service, slot: d.slot } },
    el("h4", {}, `Configuration (${form.name}, generation ${form.generation})`),
    errorFor("", ""),
    ...fieldsets,
    el("button", { type: "submit" }, "Check and apply"),
    " ",
    el("button", { type: "button", onclick: () => { openForms.delete(key); node.remove(); } }, "Close"),
    el("span", { class: "form-result" }),
  );
  node.addEventListener("submit", (event) => {
    event.preventDefault();
    applyConfiguration(d, node, query);
  });
  openForms.set(key, node);
  card.querySelector("form.configuration")?.remove();
  card.append(node);
}

async function applyConfiguration(d, node, query) {
  const roles = {};
  for (const input of node.querySelectorAll("input[data-role]")) {
    const role = (roles[input.dataset.role] ||= { instances: "", settings: {} });
    if (input.dataset.field === "instances") role.instances = input.value;
    else role.settings[input.dataset.field.slice("setting:".length)] = input.value;
  }
  for (const span of node.querySelectorAll(".field-error")) span.textContent = "";
  const result = node.querySelector(".form-result");
  result.textContent = "checking…";
  try {
    const checked = await api("POST", `/portal/configuration/check?${query}`, { roles });
    if (checked.problems.length) {
      for (const p of checked.problems) {
        const span =
          node.querySelector(`.field-error[data-role="${CSS.escape(p.role)}"][data-field="${CSS.escape(p.field)}"]`) ||
          node.querySelector('.field-error[data-role=""]');
        span.textContent = span.textContent ? `${span.textContent}; ${p.message}` : p.message;
      }
      result.textContent = "not applied: fix the fields marked";
      return;
    }
    await api("POST", `${slotPath(d)}?comp=config`, { Configuration: checked.configuration, ConfigurationName: checked.name });
    result.textContent = "applied: the change is on its way (see Events)";
  } catch (error) {
    result.textContent = `not applied: ${error.message}`;
  }
}

// -- one instance: processes, RoleEnvironment, a log tailed live ---------------------------------

let logStream = null;

function rows(selector, items) {
  $(selector).replaceChildren(...items.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c)))));
}

async function loadInstance(vm) {
  $("#instance-name").textContent = vm.split(".").at(-1);
  const detail = await api("GET", `/portal/instance?vm=${encodeURIComponent(vm)}`);
  rows("#role-settings tbody", Object.entries(detail.settings));
  rows("#role-endpoints tbody", detail.endpoints.map((e) => [e.name, `${e.address}:${e.port}`, e.protocol]));
  rows("#role-storage tbody", detail.local_storage.map((s) => [s.name, s.path, s.sizeInMB]));
  // The tree: the agents and hosts chaos sees (WaAppAgent -> bootstrapper -> role host -> W3WP),
  // with CPU and memory from the Diagnostics plugin's last samples.
  const instanceId = vm.split(".").at(-1);
  const service = vm.split(".")[0];
  let processes = [];
  try {
    const map = await api("GET", `/chaos/targets?service=${encodeURIComponent(service)}`);
    processes = map.processes.filter((p) => p.instance === instanceId);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
  }
  const sampled = new Map(detail.processes.map((p) => [p.pid, p]));
  const byPid = new Map(processes.map((p) => [p.pid, { pid: p.pid, ppid: p.ppid, name: p.place || p.name }]));
  for (const p of detail.processes) if (!byPid.has(p.pid)) byPid.set(p.pid, { pid: p.pid, ppid: p.ppid, name: p.name });
  const item = (p) => {
    const s = sampled.get(p.pid);
    const figures = s ? ` · ${s.user} · CPU ${s.cpu_percent.toFixed(1)}% · ${(s.rss_bytes / 1048576).toFixed(1)} MiB` : "";
    const kids = [...byPid.values()].filter((c) => c.ppid === p.pid);
    return el("li", { dataset: { pid: p.pid } }, `${p.name} (pid ${p.pid})${figures}`, kids.length ? el("ul", {}, ...kids.map(item)) : "");
  };
  const roots = [...byPid.values()].filter((p) => !byPid.has(p.ppid));
  $("#processes").replaceChildren(...roots.map(item));
  $("#samples-at").textContent = detail.samples_at ? `Diagnostics sample ${detail.samples_at}` : "no Diagnostics sample yet";
  const select = $("#log-file");
  const chosen = select.dataset.vm === vm ? select.value : "";
  select.replaceChildren(...detail.logs.map((name) => el("option", { value: name }, name)));
  select.dataset.vm = vm;
  const roleLog = detail.logs.find((n) => ["WaIISHost", "WaWorkerHost", "WaWebHost"].includes(n));
  select.value = chosen || roleLog || detail.logs[0] || "";
  followLog(vm, select.value);
}

function followLog(vm, file) {
  if (logStream) logStream.abort();
  logStream = null;
  const pre = $("#log");
  pre.textContent = "";
  if (!file) return;
  const stream = (logStream = new AbortController());
  const path = `/portal/logs/stream?vm=${encodeURIComponent(vm)}&file=${encodeURIComponent(file)}`;
  (async () => {
    const resp = await openStream(path, { signal: stream.signal });
    await readEvents(resp, (kind, data) => {
      if (kind !== "line") return;
      pre.append(`${JSON.parse(data)}\n`);
      while (pre.textContent.length > 200000) pre.textContent = pre.textContent.slice(-150000);
      pre.scrollTop = pre.scrollHeight;
    });
  })().catch((error) => {
    if (!stream.signal.aborted && !(error instanceof ApiError)) say(`log ${file}: ${error.message}`, true);
  });
}

// -- hosts ---------------------------------------------------------------------------------------

async function loadHosts() {
  const pools = await api("GET", "/portal/hosts");
  const rows = [];
  for (const pool of pools) {
    for (const host of pool.hosts) {
      const vms = pool.instances.filter((i) => i.host === host.host).map((i) => `${i.instance} (${i.status})`);
      rows.push(
        el(
          "tr",
          { dataset: { host: host.host } },
          el("td", {}, host.host),
          el("td", {}, host.alive ? "yes" : "no"),
          el("td", {}, `${host.heartbeat_age.toFixed(1)} s`),
          el("td", { class: "cores" }, `${host.cores_used} of ${host.cores}`),
          el("td", { class: "memory" }, host.memory_bytes ? `${(host.memory_bytes / 1048576).toFixed(0)} MiB` : "-"),
          el("td", {}, vms.join(", ") || "-"),
        ),
      );
    }
  }
  $("#hosts tbody").replaceChildren(...rows);
}

// -- events --------------------------------------------------------------------------------------

function eventFilter() {
  const form = new FormData($("#event-filter"));
  return Object.fromEntries([...form.entries()].map(([k, v]) => [k, String(v).trim().toLowerCase()]).filter(([, v]) => v));
}

function eventMatches(event, filter) {
  return Object.entries(filter).every(([key, value]) => String(event[key] || "").toLowerCase() === value);
}

function eventRow(event) {
  const where = [event.service && `${event.service}/${event.slot}`, event.instance].filter(Boolean).join(" ");
  return el(
    "li",
    { class: `event event-${event.kind}`, dataset: { seq: event.seq, kind: event.kind, instance: event.instance, service: event.service, role: event.role } },
    el("time", { datetime: event.at }, event.at.replace("T", " ").replace("+00:00", "")),
    el("span", { class: "kind" }, event.kind),
    el("span", { class: "where" }, where || "-"),
    el("span", { class: "text" }, event.message),
  );
}

function addEvent(event) {
  const list = $("#events");
  const row = eventRow(event);
  row.hidden = !eventMatches(event, eventFilter());
  list.prepend(row);
  while (list.children.length > MAX_EVENT_ROWS) list.lastElementChild.remove();
}

function refilterEvents() {
  const filter = eventFilter();
  for (const row of $("#events").children) {
    row.hidden = !eventMatches(row.dataset, filter);
  }
}

// -- chaos ---------------------------------------------------------------------------------------

function chaosService() {
  return $("#chaos-service").value || (state.deployments[0] && state.deployments[0].service) || "";
}

function renderChaosServices() {
  const select = $("#chaos-service");
  const chosen = select.value;
  const services = [...new Set(state.deployments.map((d) => d.service))];
  select.replaceChildren(...services.map((s) => el("option", { value: s }, s)));
  if (services.includes(chosen)) select.value = chosen;
  const instances = state.deployments.filter((d) => d.service === chaosService() && d.slot === "production").flatMap((d) => d.instances);
  const instanceSelect = $("#chaos-instance");
  const picked = instanceSelect.value;
  instanceSelect.replaceChildren(...instances.map((i) => el("option", { value: i.id }, i.id)));
  if (instances.some((i) => i.id === picked)) instanceSelect.value = picked;
}

async function loadFaults() {
  const list = await api("GET", "/chaos/faults");
  state.faults = list.faults;
  const rows = list.faults.map((f) =>
    el(
      "tr",
      { id: `fault-${f.id}`, dataset: { state: f.state } },
      el("td", {}, f.id),
      el("td", {}, f.label),
      el("td", { class: "fault-state" }, f.state),
      el("td", {}, f.wall.replace("T", " ").replace("+00:00", "")),
      el("td", {}, f.detail),
      el(
        "td",
        {},
        f.state === "active"
          ? el("button", { type: "button", class: "undo", onclick: () => undoFault(f.id) }, "Undo")
          : "",
      ),
    ),
  );
  $("#faults tbody").replaceChildren(...rows);
}

async function undoFault(id) {
  try {
    await api("DELETE", `/chaos/faults/${id}`);
  } catch (error) {
    say(`undo ${id}: ${error.message}`, true);
  }
  refreshFaults();
}

async function loadTargets() {
  const service = chaosService();
  if (!service) return;
  const map = await api("GET", `/chaos/targets?service=${encodeURIComponent(service)}`);
  const rows = map.instances.map((i) =>
    el(
      "tr",
      {},
      el("td", {}, i.id),
      statusCell(i.status),
      el("td", {}, i.host),
      el("td", {}, i.rotation === null ? "-" : i.rotation ? "in" : "out"),
      el("td", {}, Object.entries(i.processes).map(([place, pid]) => `${place} ${pid}`).join(", ")),
    ),
  );
  $("#targets tbody").replaceChildren(...rows);
}

async function loadReport() {
  const service = chaosService();
  const html = await api("GET", `/portal/chaos/report${service ? `?service=${encodeURIComponent(service)}` : ""}`);
  // Server-drawn SVG (our own markup; every text in it is escaped there).
  $("#chaos-report").innerHTML = html;
}

async function inject(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const type = form.get("type");
  const target = { service: chaosService(), instance: form.get("instance") };
  // A partition cuts the controller off the instance's host; the others hit one process.
  const fault = type === "partition" ? { type, target, link: "host" } : { type, target: { ...target, place: form.get("place") } };
  const duration = String(form.get("duration") || "").trim();
  if ((type === "hang" || type === "partition") && duration) fault.duration = Number(duration);
  $("#inject-error").textContent = "";
  try {
    const record = await api("POST", "/chaos/faults", { fault });
    say(`${record.id}: ${record.label}: ${record.detail}`);
  } catch (error) {
    $("#inject-error").textContent = error.message;
  }
  refreshFaults();
  refreshTargets();
}

// Server-sent events read from a fetch() response (EventSource cannot send the session header):
// each event's kind, data and id to onEvent; returns when the stream ends.
async function readEvents(resp, onEvent) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let kind = "message";
      let id = "";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // a comment: the stream's keepalive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") kind = text;
        else if (field === "data") data.push(text);
        else if (field === "id") id = text;
      }
      if (data.length) onEvent(kind, data.join("\n"), id);
    }
  }
}

// A stream's response, or ApiError with the fabric's words.
async function openStream(path, init = {}) {
  const resp = await request(path, init);
  if (!resp.ok) {
    const data = await resp.json().catch(() => null);
    throw new ApiError(data && data.Error ? data.Error.Message : `${resp.status} ${resp.statusText}`);
  }
  return resp;
}

// A scenario runs in the request that started it: its progress and report come back as
// server-sent events on the POST's own response.
async function runScenario(event) {
  event.preventDefault();
  const text = new FormData(event.target).get("scenario");
  const progress = $("#scenario-progress");
  const error = $("#scenario-error");
  progress.textContent = "";
  error.textContent = "";
  $("#scenario-report").replaceChildren();
  const button = event.target.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const resp = await openStream("/portal/chaos/scenario", {
      method: "POST",
      headers: { "content-type": "application/toml" },
      body: text,
    });
    await readEvents(resp, (kind, data) => {
      const payload = JSON.parse(data);
      if (kind === "progress") progress.append(`${payload}\n`);
      else if (kind === "failed") error.textContent = payload;
      else if (kind === "report") showScenarioReport(payload);
    });
  } catch (failure) {
    error.textContent = failure.message;
  } finally {
    button.disabled = false;
  }
}

function showScenarioReport(html) {
  // Our own page (every text in it escaped by the server); DOMParser runs no script.
  const page = new DOMParser().parseFromString(html, "text/html");
  const link = el("a", { href: URL.createObjectURL(new Blob([html], { type: "text/html" })), download: "chaos-report.html" }, "Download the report (one HTML file)");
  $("#scenario-report").replaceChildren(link, ...page.body.children);
  refreshFaults();
  refreshReport();
}

// -- views and the live stream ------------------------------------------------------------------

function show(route) {
  const [view, arg] = route.split(/\/(.*)/s);
  state.view = view;
  if (view !== "instance" && logStream) {
    logStream.abort();
    logStream = null;
  }
  for (const section of document.querySelectorAll("main section")) section.hidden = section.dataset.view !== view;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("current", link.dataset.view === view);
  if (view === "hosts") refreshHosts();
  if (view === "instance" && arg) loadInstance(arg).catch((error) => say(error.message, true));
  if (view === "chaos") {
    refreshFaults();
    refreshTargets();
    refreshReport();
  }
}

function onEvent(data) {
  const event = JSON.parse(data);
  lastSeq = Math.max(lastSeq, event.seq);
  addEvent(event);
  if (event.kind === "status") applyStatus(event);
  refreshDeployments();
  if (state.view === "hosts") refreshHosts();
  if (state.view === "chaos") {
    if (event.kind === "fault") refreshFaults();
    refreshTargets();
    refreshReport();
  }
}

function live(on) {
  $("#live").textContent = on ? "live" : "reconnecting…";
  $("#live").classList.toggle("on", on);
}

// Follows /events/stream for as long as the page is open: from the last MAX_EVENT_ROWS events,
// then, after a break, from the last event seen (nothing is missed, nothing shown twice).
async function follow() {
  let failures = 0;
  for (;;) {
    const began = Date.now();
    try {
      const resp = await openStream(lastSeq ? `/events/stream?after=${lastSeq}` : `/events/stream?tail=${MAX_EVENT_ROWS}`);
      live(true);
      await readEvents(resp, (kind, data) => {
        if (EVENT_KINDS.includes(kind)) onEvent(data);
      });
    } catch (error) {
      if (error instanceof ApiError && error.message === "signed out") return;
    }
    live(false);
    // At once after a stream that ran a while; 1, 2, 4 s... (at most 10) while the fabric is away.
    failures = Date.now() - began > 5000 ? 0 : failures + 1;
    await new Promise((resolve) => setTimeout(resolve, failures ? Math.min(10000, 500 * 2 ** failures) : 0));
  }
}

async function signIn(event) {
  event.preventDefault();
  const error = $("#signin-error");
  error.hidden = true;
  const resp = await fetch("/portal/signin", {
    method: "POST",
    credentials: "omit",
    body: new URLSearchParams(new FormData(event.target)),
  }).catch((failure) => ({ ok: false, status: 0, statusText: failure.message, json: async () => null }));
  const data = await resp.json().catch(() => null);
  if (!resp.ok || !data || !data.session) {
    error.textContent = data && data.Error ? data.Error.Message : `${resp.status} ${resp.statusText}`;
    error.hidden = false;
    return;
  }
  $("#token").value = "";
  session = data.session;
  sessionStorage.setItem(SESSION_KEY, session);
  await main();
}

async function main() {
  document.body.classList.remove("signin");
  $("#signin-view").hidden = true;
  $("#app").hidden = false;
  $("#signout").addEventListener("click", async () => {
    await request("/portal/signout", { method: "POST" }).catch(() => null);
    sessionStorage.removeItem(SESSION_KEY);
    location.assign("/");
  });
  $("#event-filter").addEventListener("input", refilterEvents);
  $("#log-file").addEventListener("change", (event) => followLog(event.target.dataset.vm, event.target.value));
  $("#inject").addEventListener("submit", inject);
  $("#scenario").addEventListener("submit", runScenario);
  $("#scenario-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) $("#scenario textarea").value = await file.text();
  });
  $("#chaos-service").addEventListener("change", () => {
    renderChaosServices();
    refreshTargets();
    refreshReport();
  });
  window.addEventListener("hashchange", () => show(location.hash.slice(1) || "instances"));
  await refreshDeployments();
  follow(); // from the last MAX_EVENT_ROWS events: the events view fills with the recent timeline
  show(location.hash.slice(1) || "instances");
  document.body.dataset.ready = "true";
}

if (session) main();
else $("#signin").addEventListener("submit", signIn);
