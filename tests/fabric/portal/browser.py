"""Drive the portal in Debian's chromium with Playwright, in a process of its own (Playwright's API
is asyncio; the suite runs on trio).

    python -m tests.fabric.portal.browser SCENARIO URL TOKEN OUT_DIR

prints one JSON object (what the scenario saw) on its last line and exits 0; on a failure it
saves a screenshot of every view to OUT_DIR, prints {"error": ...} and exits 1.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWS = ("instances", "services", "hosts", "events", "chaos")
#: generous: CI is a loaded 2-core machine and a role host restart takes real processes
WAIT_MS = 90_000

Scenario = Callable[[Page, str, str], dict[str, Any]]


def until(page: Page, expression: str, timeout: float = WAIT_MS) -> None:
    """Poll a JavaScript expression until it is true (page.wait_for_function evaluates strings,
    which the portal's Content-Security-Policy forbids, as it should)."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout / 1000:.0f} s: {expression}")
        page.wait_for_timeout(20)


def sign_in(page: Page, url: str, token: str) -> None:
    """Sign in and wait for the page to have read the fabric."""
    page.goto(url + "/")
    page.fill("#token", token)
    page.click("#signin button[type=submit]")
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)


def role_site_sees(page: Page) -> dict[str, Any]:
    """Open a site on another port of the portal's host (as a role's, behind the load balancer,
    is) in a new tab of the signed-in browser: what it was sent, and what its page can read."""
    seen: dict[str, Any] = {}

    class Site(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.setdefault("cookie", self.headers.get("cookie"))
            body = b"<!doctype html><title>a role</title><p>hello</p>"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    host = page.url.split("//")[1].split(":")[0]
    with ThreadingHTTPServer((host, 0), Site) as site:
        thread = threading.Thread(target=site.serve_forever, daemon=True)
        thread.start()
        try:
            tab = page.context.new_page()
            tab.goto(f"http://{host}:{site.server_address[1]}/")
            seen["storage"] = tab.evaluate("sessionStorage.length")
            tab.close()
        finally:
            site.shutdown()
            thread.join(10)
    return seen


def status_of(page: Page, instance: str) -> str:
    return str(page.inner_text(f'#instances tr[data-instance="{instance}"] td.status'))


def signin(page: Page, url: str, token: str) -> dict[str, Any]:
    """A wrong token is refused; the right one shows the instances, all ReadyRole."""
    page.goto(url + "/")
    page.fill("#token", "not-the-token")
    page.click("#signin button[type=submit]")
    page.wait_for_selector("#signin-error")
    refused = {"error": page.inner_text("#signin-error"), "cookies": len(page.context.cookies())}
    page.fill("#token", token)
    page.click("#signin button[type=submit]")
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    until(
        page,
        "document.querySelectorAll('#instances tbody td.status').length > 0 && "
        "[...document.querySelectorAll('#instances tbody td.status')].every(td => td.textContent === 'ReadyRole')",
        timeout=WAIT_MS,
    )
    rows = page.eval_on_selector_all(
        "#instances tbody tr",
        "rows => rows.map(r => [r.dataset.instance, r.querySelector('td.status').textContent])",
    )
    cookies = page.context.cookies()
    stored = page.evaluate("sessionStorage.getItem('reddog-session') !== null")
    role_site = role_site_sees(page)
    # A new tab of the portal is not signed in: the session is this tab's.
    tab = page.context.new_page()
    tab.goto(page.url)
    tab.wait_for_selector("#signin #token")
    new_tab = {"signin": tab.is_visible("#signin"), "app": tab.is_visible("#app")}
    tab.close()
    page.click('nav a[data-view="hosts"]')
    until(page, "document.querySelectorAll('#hosts tbody tr').length > 0")
    until(page, "[...document.querySelectorAll('#hosts td.memory')].every(td => td.textContent !== '-')")
    hosts = page.eval_on_selector_all(
        "#hosts tbody tr", "rows => rows.map(r => [...r.children].map(td => td.textContent))"
    )
    # Sign out: the tab forgets the secret and the fabric ends it.
    secret = page.evaluate("sessionStorage.getItem('reddog-session')")
    page.click("#signout")
    page.wait_for_selector("#signin #token")
    signed_out = {
        "stored": page.evaluate("sessionStorage.length"),
        "replayed": page.evaluate(
            "s => fetch('/subscriptions', {headers: {'x-reddog-session': s}}).then(r => r.status)", secret
        ),
    }
    return {
        "hosts": hosts,
        "refused": refused,
        "rows": rows,
        "cookies": cookies,
        "stored": stored,
        "role_site": role_site,
        "new_tab": new_tab,
        "signed_out": signed_out,
    }


def kill_from_chaos(page: Page, url: str, token: str) -> dict[str, Any]:
    """Kill Web_IN_0's role host from the chaos page; its row leaves ReadyRole and comes back
    without a reload; the chaos report then draws one mark and one bar for the fault."""
    sign_in(page, url, token)
    return kill_and_watch(page)


def kill_and_watch(page: Page) -> dict[str, Any]:
    """The signed-in half of kill_from_chaos."""
    until(
        page,
        """document.querySelector('#instances tr[data-instance="Web_IN_0"] td.status')?.textContent === 'ReadyRole'""",
        timeout=WAIT_MS,
    )
    # Every status the row shows, in order (the page is never reloaded: the marker survives).
    page.evaluate(
        """() => {
        window.__marker = 'no reload';
        window.__seen = ['ReadyRole'];
        const look = () => {
          const td = document.querySelector('#instances tr[data-instance="Web_IN_0"] td.status');
          if (td && window.__seen.at(-1) !== td.textContent) window.__seen.push(td.textContent);
        };
        new MutationObserver(look).observe(document.querySelector('#instances tbody'),
          {subtree: true, childList: true, characterData: true});
      }"""
    )
    page.click('nav a[data-view="chaos"]')
    page.wait_for_selector('#chaos-instance option[value="Web_IN_0"]', state="attached", timeout=WAIT_MS)
    page.select_option("#inject select[name=type]", "kill")
    page.select_option("#inject select[name=place]", "role-host")
    page.select_option("#chaos-instance", "Web_IN_0")
    page.click("#inject button[type=submit]")
    page.wait_for_selector("#faults tbody tr", timeout=WAIT_MS)
    until(page, "window.__seen.length > 1 && window.__seen.at(-1) === 'ReadyRole'", timeout=WAIT_MS)
    until(
        page,
        "document.querySelectorAll('#chaos-report svg.availability g.fault-mark').length === 1 && "
        "document.querySelector('#chaos-report svg.fault-bars g.fault-bar rect') !== null",
        timeout=WAIT_MS,
    )
    page.click('nav a[data-view="events"]')
    page.fill('#event-filter input[name="instance"]', "web_in_0")
    kinds = page.eval_on_selector_all("#events li:not([hidden])", "items => items.map(li => li.dataset.kind)")
    return {
        "seen": page.evaluate("window.__seen"),
        "marker": page.evaluate("window.__marker"),
        "fault_rows": page.eval_on_selector_all(
            "#faults tbody tr", "rows => rows.map(r => r.children[1].textContent)"
        ),
        "marks": page.eval_on_selector_all(
            "#chaos-report svg.availability g.fault-mark", "g => g.map(m => m.dataset.fault)"
        ),
        "event_kinds": kinds,
    }


def configure(page: Page, url: str, token: str) -> dict[str, Any]:
    """A bad instance count shows `fabric validate`'s message beside the field and changes
    nothing; a new Title is applied and the role's Changed shows in Web_IN_0's live log."""
    sign_in(page, url, token)
    generation = (
        "fetch('/portal/configuration?service=guestbook&slot=production', "
        "{headers: {'x-reddog-session': sessionStorage.getItem('reddog-session')}})"
        ".then(r => r.json()).then(f => f.generation)"
    )
    before = page.evaluate(generation)
    page.click('nav a[data-view="services"]')
    page.click("article.deployment button.action-configure")
    instances = 'form.configuration input[data-role="Web"][data-field="instances"]'
    page.wait_for_selector(instances, timeout=WAIT_MS)
    page.fill(instances, "abc")
    page.click("form.configuration button[type=submit]")
    beside = 'form.configuration .field-error[data-role="Web"][data-field="instances"]'
    until(page, f"document.querySelector('{beside}').textContent !== ''")
    refused = {
        "beside": page.inner_text(beside),
        "result": page.inner_text("form.configuration .form-result"),
        "generation": page.evaluate(generation),
    }
    page.fill(instances, "2")
    page.fill(
        'form.configuration input[data-role="Web"][data-field="setting:Title"]', "changed in the portal"
    )
    page.click("form.configuration button[type=submit]")
    until(page, "document.querySelector('form.configuration .form-result').textContent.startsWith('applied')")
    page.click('nav a[data-view="instances"]')
    page.click('#instances tr[data-instance="Web_IN_0"] td.instance a')
    until(page, "document.querySelector('#log-file').value !== ''")
    until(page, "document.querySelector('#log').textContent.includes('changed setting Title')")
    line = next(text for text in page.inner_text("#log").splitlines() if "changed setting Title" in text)
    until(page, "document.querySelectorAll('#role-settings tbody tr').length > 0")
    return {
        "before": before,
        "refused": refused,
        "log_file": page.evaluate("document.querySelector('#log-file').value"),
        "line": line,
        "processes": page.eval_on_selector_all("#processes li", "items => items.map(li => li.dataset.pid)"),
        "storage": page.eval_on_selector_all(
            "#role-storage tbody tr", "rows => rows.map(r => r.children[0].textContent)"
        ),
    }


def services_and_undo(page: Page, url: str, token: str) -> dict[str, Any]:
    """Suspend then resume the deployment from the services view; VIP swap it to staging and
    back; a dismissed delete keeps the deployment; a hang injected from the chaos page is undone
    with its Undo button."""
    sign_in(page, url, token)
    page.click('nav a[data-view="services"]')
    status = "article.deployment .deployment-status"
    page.wait_for_selector(status, timeout=WAIT_MS)
    statuses = [page.inner_text(status)]
    page.click("article.deployment button.action-suspend")
    until(page, f"document.querySelector('{status}').textContent === 'Suspended'")
    statuses.append(page.inner_text(status))
    page.click("article.deployment button.action-resume")
    until(page, f"document.querySelector('{status}').textContent === 'Running'")
    statuses.append(page.inner_text(status))
    slots = [page.eval_on_selector("article.deployment", "card => card.dataset.slot")]
    for expected in ("staging", "production"):  # a VIP swap with nothing in the other slot moves it
        page.click("article.deployment button.action-vip-swap")
        until(page, f"document.querySelector('article.deployment')?.dataset.slot === '{expected}'")
        slots.append(expected)
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("article.deployment button.action-delete")
    kept = page.eval_on_selector_all("article.deployment", "cards => cards.length")
    page.click('nav a[data-view="instances"]')  # resumed: wait until its instances run again
    until(
        page,
        "[...document.querySelectorAll('#instances tbody td.status')].every(td => td.textContent === 'ReadyRole')",
    )
    page.click('nav a[data-view="chaos"]')
    page.wait_for_selector('#chaos-instance option[value="Worker_IN_1"]', state="attached", timeout=WAIT_MS)
    page.select_option("#inject select[name=type]", "hang")
    page.select_option("#inject select[name=place]", "role-host")
    page.select_option("#chaos-instance", "Worker_IN_1")
    page.fill("#inject input[name=duration]", "120")
    page.click("#inject button[type=submit]")
    until(
        page,
        "document.querySelector('#faults tbody tr button.undo') !== null || document.querySelector('#inject-error').textContent !== ''",
    )
    assert not page.inner_text("#inject-error"), page.inner_text("#inject-error")
    states = [page.inner_text("#faults tbody tr .fault-state")]
    page.click("#faults tbody tr button.undo")
    until(page, "document.querySelector('#faults tbody tr .fault-state').textContent === 'undone'")
    states.append(page.inner_text("#faults tbody tr .fault-state"))
    page.select_option("#inject select[name=type]", "partition")
    page.fill("#inject input[name=duration]", "1")
    page.click("#inject button[type=submit]")
    until(
        page,
        "[...document.querySelectorAll('#faults tbody tr')].some(r => r.children[1].textContent.startsWith('partition'))",
    )
    until(
        page,
        "[...document.querySelectorAll('#faults tbody tr')].some(r => r.children[1].textContent.startsWith('partition') && r.dataset.state === 'undone')",
    )
    states.append("partition undone")
    return {
        "statuses": statuses,
        "slots": slots,
        "kept_after_dismissed_delete": kept,
        "fault_states": states,
    }


SCENARIO = """
title = "two web kills"
duration = 4
[load]
endpoint = "Web/HttpIn"
rate = 10
[steady_state]
title = "the guestbook answers"
before = 1
after = 1
[[steady_state.probes]]
type = "instances-ready"
[[method]]
fault = "kill"
target = "role-host"
instance = "Web_IN_0"
at = 0.5
[[method]]
fault = "kill"
target = "role-host"
instance = "Web_IN_1"
at = 2.5
"""


def run_scenario(page: Page, url: str, token: str) -> dict[str, Any]:
    """A bad scenario is refused in one line; a good one runs from the chaos page, its progress
    shows, then its report: availability with a mark per fault, a bar per fault."""
    sign_in(page, url, token)
    page.click('nav a[data-view="chaos"]')
    page.fill("#scenario textarea", 'title = "x"\nnonsense = 1\n')
    page.click("#scenario button[type=submit]")
    until(page, "document.querySelector('#scenario-error').textContent !== ''")
    refused = page.inner_text("#scenario-error")
    page.fill("#scenario textarea", SCENARIO)
    page.click("#scenario button[type=submit]")
    until(
        page,
        "document.querySelector('#scenario-report svg.availability') !== null || document.querySelector('#scenario-error').textContent !== ''",
    )
    assert not page.inner_text("#scenario-error"), page.inner_text("#scenario-error")
    return {
        "refused": refused,
        "progress": page.inner_text("#scenario-progress").splitlines(),
        "marks": page.eval_on_selector_all("#scenario-report svg.availability g.fault-mark", "g => g.length"),
        "bars": page.eval_on_selector_all("#scenario-report svg.fault-bars g.fault-bar", "g => g.length"),
        "download": page.get_attribute("#scenario-report a[download]", "download"),
    }


def screenshots(page: Page, url: str, token: str) -> dict[str, Any]:
    """The README's pictures: the instances view live, and the chaos view after a kill."""
    out = Path(sys.argv[4])
    out.mkdir(parents=True, exist_ok=True)
    sign_in(page, url, token)
    until(
        page,
        "[...document.querySelectorAll('#instances tbody td.status')].every(td => td.textContent === 'ReadyRole')",
    )
    page.screenshot(path=str(out / "portal-instances.png"))
    kill_and_watch(page)
    page.click('nav a[data-view="chaos"]')
    until(page, "document.querySelector('#chaos-report svg.fault-bars g.fault-bar rect') !== null")
    page.screenshot(path=str(out / "portal-chaos.png"), full_page=True)
    return {"saved": [str(out / "portal-instances.png"), str(out / "portal-chaos.png")]}


def latency(page: Page, url: str, token: str) -> dict[str, Any]:
    """Record when each status reaches the DOM (Date.now(), ms) for the benchmark; runs until
    the benchmark writes OUT_DIR/stop, then answers what it saw."""
    sign_in(page, url, token)
    page.evaluate(
        """() => {
        window.__dom = [];
        new MutationObserver((records) => {
          const now = Date.now();
          for (const r of records) for (const n of r.addedNodes) {
            // the row from the record: a cell replaced again in the same task is detached by now
            if (n.nodeType === 1 && n.matches('td.status')) {
              window.__dom.push([r.target.dataset.instance, n.textContent, now]);
            }
          }
        }).observe(document.querySelector('#instances tbody'), {subtree: true, childList: true});
      }"""
    )
    print(json.dumps({"ready": True}), flush=True)
    stop = Path(sys.argv[4]) / "stop"
    while not stop.exists():
        page.wait_for_timeout(50)
    return {"dom": page.evaluate("window.__dom")}


SCENARIOS: dict[str, Scenario] = {
    "signin": signin,
    "kill_from_chaos": kill_from_chaos,
    "configure": configure,
    "services_and_undo": services_and_undo,
    "screenshots": screenshots,
    "run_scenario": run_scenario,
    "latency": latency,
}


def main() -> int:
    """Run one scenario; the last line printed is its JSON result."""
    name, url, token, out = sys.argv[1:5]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        # a context of its own (not browser.new_page's): a scenario may open a second tab in it
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        try:
            result = SCENARIOS[name](page, url, token)
        except Exception:
            shots = Path(out)
            shots.mkdir(parents=True, exist_ok=True)
            for view in VIEWS:
                try:
                    page.evaluate(f"location.hash = '#{view}'")
                    page.screenshot(path=str(shots / f"{name}-{view}.png"), full_page=True)
                except Exception:
                    pass
            print(json.dumps({"error": traceback.format_exc(), "screenshots": str(shots)}), flush=True)
            return 1
        finally:
            browser.close()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
