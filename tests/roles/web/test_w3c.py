"""The W3C extended access log: exact IIS format, daily files, flushing, lines per request."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import anyio
import httpx

from roles.hosts._web import AccessRecord, BindingSpec, SiteSpec, W3CLog, parse_log

HEADER = re.compile(
    r"#Software: Microsoft Internet Information Services 10\.0\n"
    r"#Version: 1\.0\n"
    r"#Date: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\n"
    r"#Fields: date time s-sitename s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username "
    r"c-ip cs\(User-Agent\) cs\(Referer\) sc-status sc-substatus sc-win32-status time-taken\n"
)


def record(when: datetime, **changes: object) -> AccessRecord:
    fields: dict[str, object] = {
        "when": when,
        "site_name": "W3SVC1",
        "server_ip": "10.0.0.4",
        "server_port": 80,
        "method": "GET",
        "uri_stem": "/a b.html",
        "uri_query": "",
        "client_ip": "10.0.0.9",
        "user_agent": "Mozilla/5.0 (X11; Linux)",
        "referer": "",
        "status": 200,
        "time_taken_ms": 15,
    }
    fields.update(changes)
    return AccessRecord(**fields)  # type: ignore[arg-type]


def test_file_has_the_iis_header_and_exact_lines(tmp_path: Path) -> None:
    log = W3CLog(tmp_path / "W3SVC1")
    log.log(record(datetime(2024, 1, 31, 23, 59, 58, tzinfo=UTC)))
    log.flush()
    text = (tmp_path / "W3SVC1" / "u_ex240131.log").read_text()
    assert HEADER.match(text)
    assert text.splitlines()[4] == (
        "2024-01-31 23:59:58 W3SVC1 10.0.0.4 GET /a+b.html - 80 - 10.0.0.9 "
        "Mozilla/5.0+(X11;+Linux) - 200 0 0 15"
    )


def test_a_new_day_starts_a_new_file_and_old_files_get_no_second_header(tmp_path: Path) -> None:
    log = W3CLog(tmp_path)
    day = datetime(2024, 2, 28, 23, 59, 59, tzinfo=UTC)
    log.log(record(day))
    log.flush()
    log.log(record(day, status=404))
    log.log(record(day + timedelta(seconds=2), status=500))
    log.flush()
    first = (tmp_path / "u_ex240228.log").read_text()
    second = (tmp_path / "u_ex240229.log").read_text()
    assert first.count("#Fields:") == 1
    assert [row["sc-status"] for row in parse_log(first)] == ["200", "404"]
    assert HEADER.match(second)
    assert [row["date"] for row in parse_log(second)] == ["2024-02-29"]


def test_times_are_written_in_utc(tmp_path: Path) -> None:
    log = W3CLog(tmp_path)
    local = datetime(2024, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=8)))
    log.log(record(local))
    log.flush()
    (row,) = parse_log((tmp_path / "u_ex240301.log").read_text())
    assert (row["date"], row["time"]) == ("2024-03-01", "01:30:00")


def test_control_characters_cannot_break_a_line(tmp_path: Path) -> None:
    log = W3CLog(tmp_path)
    when = datetime(2024, 1, 1, tzinfo=UTC)
    log.log(record(when, uri_stem="/x\n\ty\x01z", user_agent="", referer="http://r/ p"))
    log.flush()
    (row,) = parse_log((tmp_path / "u_ex240101.log").read_text())
    assert row["cs-uri-stem"] == "/x++y%01z"
    assert (row["cs(User-Agent)"], row["cs(Referer)"]) == ("-", "http://r/+p")


async def test_flusher_writes_within_a_second_and_on_exit(web, tmp_path: Path) -> None:
    log = W3CLog(tmp_path)
    async with anyio.create_task_group() as tasks:
        await tasks.start(log.run_flusher)
        log.log(record(datetime.now(UTC)))
        await web.poll_until(lambda: log_text(tmp_path) != "", timeout=3)
        log.log(record(datetime.now(UTC), status=304))
        tasks.cancel_scope.cancel()
    assert [row["sc-status"] for row in parse_log(log_text(tmp_path))] == ["200", "304"]


def log_text(folder: Path) -> str:
    return "".join(p.read_text() for p in sorted(folder.glob("u_ex*.log")))


async def test_every_request_is_logged_field_by_field(web, listener, tmp_path: Path) -> None:
    alpha = web.asgi_site(tmp_path / "sitesroot" / "0", "alpha")
    beta = web.static_site(tmp_path / "sitesroot" / "1")
    sites = [
        SiteSpec("Alpha", 0, str(alpha), (BindingSpec("HttpIn", "alpha.example"),)),
        SiteSpec("Beta", 1, str(beta), (BindingSpec("HttpIn", "beta.example"),)),
    ]
    spec = web.spec(sites, {"HttpIn": listener.fileno()})
    port = listener.getsockname()[1]
    headers = {"User-Agent": "probe agent/1.0", "Referer": "http://alpha.example/start"}
    before = datetime.now(UTC).replace(microsecond=0)
    async with web.serving(spec) as binds, web.client(binds["HttpIn"]) as http:
        await http.get("/search", params={"q": "a b"}, headers={**headers, "Host": "alpha.example"})
        await http.get("/missing.png", headers={"Host": "beta.example"})
        await http.get("/boom", headers={"Host": "alpha.example"})
        await http.get("/slow?0.2", headers={"Host": "alpha.example"})
        await http.get("/", headers={"Host": "nobody.example"})
    after = datetime.now(UTC)
    text = web.log_text()
    assert HEADER.match(text)
    rows = web.log_rows()
    assert [(r["s-sitename"], r["cs-uri-stem"], r["sc-status"]) for r in rows] == [
        ("W3SVC1", "/search", "200"),
        ("W3SVC2", "/missing.png", "404"),
        ("W3SVC1", "/boom", "500"),
        ("W3SVC1", "/slow", "200"),
        ("-", "/", "404"),
    ]
    first = rows[0]
    stamp = datetime.strptime(f"{first['date']} {first['time']}", "%Y-%m-%d %H:%M:%S")
    assert before <= stamp.replace(tzinfo=UTC) <= after
    assert first["s-ip"] == "127.0.0.1"
    assert first["cs-method"] == "GET"
    assert first["cs-uri-query"] == "q=a+b"
    assert first["s-port"] == str(port)
    assert first["cs-username"] == "-"
    assert first["c-ip"] == "127.0.0.1"
    assert first["cs(User-Agent)"] == "probe+agent/1.0"
    assert first["cs(Referer)"] == "http://alpha.example/start"
    assert (first["sc-substatus"], first["sc-win32-status"]) == ("0", "0")
    assert rows[1]["cs(User-Agent)"] == f"python-httpx/{httpx.__version__}"
    assert rows[1]["cs(Referer)"] == "-"
    assert 200 <= int(rows[3]["time-taken"]) < 2000
    assert all(int(r["time-taken"]) >= 0 for r in rows)
