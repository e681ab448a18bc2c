"""The web console in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium) against a real ``atoll fleet serve`` process
on SQLite on 127.0.0.1, with hosts checked in through the real protocol
(:class:`SimHost`): log in, read the fleet, filter it, open a host; a customer's
viewer never reaches another customer's host; CSRF and the login rate limit over
plain HTTP.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from axe_core_python.selenium import Axe
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import select

from atoll.control.db import Database
from atoll.control.models import Customer, VersionSample
from tests.integration.control_fixtures import Api, SimHost, host_status
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
APP = {"name": "pg", "image": "postgres:15", "role": "db",
       "container": {"state": "running", "health": "healthy"},
       "database": {"role": "replica", "lag_s": 1.5}}
REASON = 'health check "postgres" failed <script>alert(1)</script>'  # as a host says it


HOTFIX = {"base": "b" * 64, "base_version": "2", "packages": [
    {"name": "less", "version": "590-2.1~deb12u2+atoll1", "kind": "pin",
     "expires": "2099-01-01T00:00:00Z"}]}


def _cves(name: str) -> dict[str, Any]:
    """The check-in's CVE facts (as atoll.security.host.checkin_facts sends them): db01
    fresh data with 2 high and 1 medium open, db02 data 10 days old and expired (3
    medium, 1 low), db03 none (an older agent), gx01 (globex) 5 high."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def facts(age: dt.timedelta, valid: dt.timedelta, **opened: int) -> dict[str, Any]:
        counts = {u: opened.get(u.replace(" ", "_"), 0) for u in
                  ("unimportant", "low", "medium", "high", "not yet assigned")}
        stamp = "%Y-%m-%dT%H:%M:%SZ"
        return {"cves": {"commit": "c" * 64, "source": "tracker",
                         "generated": (now - age).strftime(stamp),
                         "expires": (now - age + valid).strftime(stamp),
                         "age_seconds": int(age.total_seconds()), "stale": age > valid,
                         "open": counts,
                         "open_cves": [{"cve": f"CVE-2099-{i:04d}", "urgency": "high"}
                                       for i in range(counts["high"])]}}

    day = dt.timedelta(days=1)
    return {"db01": facts(2 * day / 24, 7 * day, high=2, medium=1),
            "db02": facts(10 * day, 7 * day, medium=3, low=1),
            "gx01": facts(day / 24, 7 * day, high=5, not_yet_assigned=2)}.get(name, {})


def _atoll(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "atoll.cli", *args], input=stdin,
                          capture_output=True, text=True, env=env, timeout=120, check=False)


@dataclass
class Site:
    url: str
    api: Api
    db: str
    hosts: dict[str, str]  # name -> host id


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("console")
    db = f"sqlite:///{tmp}/control.db"
    done = _atoll("fleet", "db", "init", "--db", db, "--token-file", str(tmp / "admin"))
    assert done.returncode == 0, done.stderr
    port = free_port()
    log = open(tmp / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "atoll.cli", "fleet", "serve", "--db", db,
                             "--listen", f"127.0.0.1:{port}"], stdout=log, stderr=log,
                            env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp / "serve.log").read_text()
            try:
                urllib.request.urlopen(url + "/v1/health", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        api = Api(url, (tmp / "admin").read_text().strip())
        hosts: dict[str, str] = {}
        for customer in ("acme", "globex"):
            assert api.call("POST", "/v1/customers", {"name": customer})[0] == 201
        for name, customer, site_, version, result in [
                ("db01", "acme", "ams", "2", "good"), ("db02", "acme", "fra", "1", "good"),
                ("db03", "acme", "ams", "2", "rolled-back"),
                ("gx01", "globex", "ams", "2", "good")]:
            status, doc = api.call("POST", "/v1/enrol-tokens", {
                "customer": customer, "labels": {"site": site_}})
            assert status == 201, doc
            h = SimHost(url, name)
            assert h.enrol(doc["token"])[0] == 200
            reason = REASON if result != "good" else ""
            status = host_status(version, result=result, reason=reason)
            if result != "good":
                status["last_boot"]["checks"] = [
                    {"name": "postgres", "required": True, "ok": False, "exit_code": 2,
                     "output": "connection refused"}]
            if name == "db02":  # runs a hotfix deployment: a pin with an expiry
                status["booted"]["hotfix"] = HOTFIX
            if name == "gx01":  # a hostile host: `hotfix` is an open field of its report
                status["deployments"] = [dict(status["booted"], hotfix={
                    "base": 5, "packages": 7})]
            code, answer = h.checkin(status=status, apps=[APP], **_cves(name))
            assert code == 200, answer
            hosts[name] = h.host_id
        (tmp / "pw").write_text(PASSWORD + "\n")
        os.chmod(tmp / "pw", 0o600)
        for user, role, customers in [("ann", "viewer", ["acme"]), ("root", "admin", []),
                                      ("locked", "viewer", ["acme"]),
                                      ("op", "operator", ["acme"])]:
            extra = [a for c in customers for a in ("--customer", c)]
            done = _atoll("fleet", "users", "add", user, "--role", role, *extra, "--db", db,
                          "--password-file", str(tmp / "pw"))
            assert done.returncode == 0, done.stderr
        # the password from standard input (never argv)
        done = _atoll("fleet", "users", "add", "ben", "--role", "viewer", "--customer",
                      "globex", "--db", db, "--json", stdin=PASSWORD + "\n")
        assert done.returncode == 0, done.stderr
        assert PASSWORD not in done.stdout
        sampled = Database(db)
        with sampled.write() as s:
            ids = dict(s.execute(select(Customer.name, Customer.id)).all())
            s.add_all(VersionSample(bucket=b, customer_id=ids[c], version=v, hosts=n)
                      for b, c, v, n in [(SAMPLED[0], "acme", "1", 3),
                                         (SAMPLED[1], "acme", "2", 2),
                                         (SAMPLED[1], "acme", "1", 1),
                                         (SAMPLED[1], "globex", "9.9-globex", 4)])
        sampled.close()
        yield Site(url, api, db, hosts)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1024"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options,
                              service=Service(executable_path="/usr/bin/chromedriver"))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _submit(driver: webdriver.Chrome, element: WebElement) -> None:
    """Click ``element`` and wait until the browser has left the page it was on."""
    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 60).until(expected_conditions.staleness_of(page))


def _log_in(driver: webdriver.Chrome, site: Site, name: str) -> None:
    driver.delete_all_cookies()
    driver.get(site.url + "/console/login")
    _accessible(driver)
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    _submit(driver, driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]"))
    assert driver.find_element(By.TAG_NAME, "h1").text == "Fleet", driver.page_source


# what the page's markup promises assistive technology, checked in the rendered DOM
# (Selenium's scripts run through the driver; the page's CSP allows only its own files)
_MARKUP_PROBLEMS = """
const problems = [];
if (!document.documentElement.lang) problems.push('html without lang');
if (document.querySelectorAll('h1').length !== 1) problems.push('not exactly one h1');
for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
  if (!el.id || !document.querySelector('label[for="' + el.id + '"]'))
    problems.push('no label for ' + (el.name || el.outerHTML));
}
for (const table of document.querySelectorAll('table')) {
  if (!table.querySelector('thead th[scope=col]')) problems.push('a table without column headers');
}
for (const a of document.querySelectorAll('a')) {
  if (!a.textContent.trim()) problems.push('a link without text');
}
for (const b of document.querySelectorAll('button')) {
  if (!b.textContent.trim()) problems.push('a button without text');
}
return problems;
"""


def _accessible(driver: webdriver.Chrome, shot: str | None = None) -> None:
    """The page passes our markup checks and axe-core's WCAG 2.0/2.1 A and AA rules
    (labels, contrast, landmarks, keyboard-reachable names...; axe-core-python bundles
    axe-core 4.4). ``shot``: the page's screenshot name, saved as ``console-SHOT.png``
    when ATOLL_CONSOLE_SCREENSHOTS names a directory (scripts/console-screenshots.sh)."""
    assert driver.execute_script(_MARKUP_PROBLEMS) == [], driver.current_url
    found = Axe().run(driver, options={"runOnly": {"type": "tag", "values": [
        "wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}})
    problems = [f"{v['id']} ({v['impact']}): {v['help']}: "
                f"{[n['target'] for n in v['nodes']][:5]}" for v in found["violations"]]
    assert problems == [], f"{driver.current_url}: {problems}"
    shots = os.environ.get("ATOLL_CONSOLE_SCREENSHOTS")
    if shot and shots:
        assert driver.save_screenshot(str(Path(shots) / f"console-{shot}.png"))


def _host_names(driver: webdriver.Chrome) -> list[str]:
    return [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#hosts tbody th")]


def _table(driver: webdriver.Chrome, table: str) -> list[list[str]]:
    """The cells of a table, header row first (shown or not: its textContent)."""
    return [[c.get_attribute("textContent").strip() for c in
             r.find_elements(By.CSS_SELECTOR, "th, td")]
            for r in driver.find_elements(By.CSS_SELECTOR, f"#{table} tr")]


# version samples the site holds (written as the server writes them): acme's two days
# ago (3 hosts on 1) and one day ago (2 on 2, 1 on 1); globex's, which acme never sees
_NOW = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
SAMPLED = [_NOW - dt.timedelta(days=2), _NOW - dt.timedelta(days=1)]


def _when(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%SZ")


def _counts(driver: webdriver.Chrome, table: str) -> dict[str, str]:
    rows = driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")
    return {r.find_element(By.TAG_NAME, "th").text: r.find_element(By.TAG_NAME, "td").text
            for r in rows}


def test_a_viewer_logs_in_filters_the_fleet_and_opens_a_host(
        site: Site, browser: webdriver.Chrome) -> None:
    _log_in(browser, site, "ann")
    cookie = browser.get_cookie("__Host-atoll-console")
    assert cookie is not None and cookie["httpOnly"] and cookie["secure"]
    assert cookie["sameSite"] == "Strict"
    # acme's hosts only: globex's gx01 is not in the table or the counts
    assert _host_names(browser) == ["db01", "db02", "db03"]
    assert _counts(browser, "by-state") == {"up-to-date": "2", "rolled-back": "1"}
    assert _counts(browser, "by-version") == {"2": "2", "1": "1"}
    assert "gx01" not in browser.page_source and "globex" not in browser.page_source
    assert browser.find_elements(By.ID, "by-customer") == []  # one customer: no table
    # versions over time: the samples of acme only (globex's never), then now
    plot = browser.find_element(By.ID, "versions-plot")
    assert plot.get_attribute("role") == "img"
    assert "Hosts by booted version" in plot.find_element(By.TAG_NAME, "title") \
        .get_attribute("textContent")
    assert [a.get_attribute("data-version") for a in
            plot.find_elements(By.TAG_NAME, "path")] == ["2", "1"]
    rows = _table(browser, "versions-table")
    assert rows[0] == ["Time", "2", "1", "All"]
    assert rows[1:3] == [[_when(SAMPLED[0]), "0", "3", "3"], [_when(SAMPLED[1]), "2", "1", "3"]]
    assert rows[-1] == ["now", "2", "1", "3"]
    assert "9.9-globex" not in browser.page_source
    # the breakdown: by site (the default label), each row by state and version
    assert _counts(browser, "breakdown-label") == {"ams": "2", "fra": "1"}
    assert _table(browser, "breakdown-label")[1] == ["ams", "2", "1", "1", "2: 2"]
    _accessible(browser, "fleet")
    _submit(browser, browser.find_element(By.LINK_TEXT, "1 day"))
    assert "days=1" in browser.current_url
    rows = _table(browser, "versions-table")
    assert rows[-1] == ["now", "2", "1", "3"]
    assert not {_when(t) for t in SAMPLED} & {r[0] for r in rows}  # older than a day

    browser.find_element(By.ID, "f-label").send_keys("site=ams")
    _submit(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    assert _host_names(browser) == ["db01", "db03"]
    Select(browser.find_element(By.ID, "f-state")).select_by_value("rolled-back")
    _submit(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    assert _host_names(browser) == ["db03"]
    assert "state=rolled-back" in browser.current_url and "label=site" in browser.current_url

    _submit(browser, browser.find_element(By.LINK_TEXT, "db03"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Host db03"
    _accessible(browser, "host")
    assert browser.find_element(By.ID, "host-state").text == "rolled-back"
    assert browser.find_element(By.ID, "boot-result").text == "rolled-back"
    # what a host reports is text, never markup
    assert browser.find_element(By.ID, "boot-reason").text == REASON
    assert browser.find_elements(By.TAG_NAME, "script") == []
    checks = browser.find_element(By.ID, "health-checks").text
    assert "postgres yes failed 2 connection refused" in checks
    apps = browser.find_element(By.CSS_SELECTOR, "#apps + table").text
    assert "pg postgres:15 running healthy replica 1.5" in apps
    deployments = browser.find_element(By.CSS_SELECTOR, "#deployments + table").text
    assert "booted" in deployments and " 2 " in f" {deployments} "
    assert "enrolled" in browser.find_element(By.ID, "host-events").text

    # the Security page: acme's hosts only (globex's gx01 has 5 high)
    _submit(browser, browser.find_element(By.LINK_TEXT, "Security"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Security"
    _accessible(browser, "security")
    by_urgency = {r.find_element(By.TAG_NAME, "th").text:
                  [td.text for td in r.find_elements(By.TAG_NAME, "td")]
                  for r in browser.find_elements(By.CSS_SELECTOR, "#by-urgency tbody tr")}
    assert by_urgency == {"high": ["1", "2"], "medium": ["2", "4"], "low": ["1", "1"],
                          "unimportant": ["0", "0"], "not yet assigned": ["0", "0"]}
    worst = browser.find_elements(By.CSS_SELECTOR, "#worst tbody tr")
    assert [r.find_element(By.TAG_NAME, "th").text for r in worst] == ["db01", "db02"]
    assert "(stale)" in worst[1].text and "(stale)" not in worst[0].text
    hotfixes = browser.find_element(By.ID, "hotfixes").text
    assert "db02" in hotfixes and "less 590-2.1~deb12u2+atoll1 (pin, expires 2099-01-01" \
        in hotfixes and "db01" not in hotfixes
    assert _counts(browser, "ages") == {"under a day": "1", "1 to 7 days": "0",
                                        "over 7 days": "1", "no CVE data": "1"}
    assert "gx01" not in browser.page_source and "globex" not in browser.page_source
    assert browser.find_elements(By.ID, "sec-customers") == []  # one customer

    # another customer's host, by its id: as if it did not exist
    browser.get(f"{site.url}/console/hosts/{site.hosts['gx01']}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "404"
    assert "gx01" not in browser.page_source

    # log out: the session is gone on the server, not just the cookie
    _submit(browser, browser.find_element(By.CSS_SELECTOR, "header form button"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Log in"
    browser.get(site.url + "/console/fleet")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Log in"


def test_an_admin_sees_every_customer(site: Site, browser: webdriver.Chrome) -> None:
    _log_in(browser, site, "root")
    assert _host_names(browser) == ["db01", "db02", "db03", "gx01"]
    assert _counts(browser, "by-customer") == {"acme": "3", "globex": "1"}
    assert _counts(browser, "breakdown-customer") == {"acme": "3", "globex": "1"}
    assert "9.9-globex" in _table(browser, "versions-table")[0]  # a series of its own
    browser.get(f"{site.url}/console/hosts/{site.hosts['gx01']}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Host gx01"


# -- plain HTTP: what a browser would not send -------------------------------------


def _request(site: Site, method: str, path: str,
             form: dict[str, str] | list[tuple[str, str]] | None = None,
             cookies: dict[str, str] | None = None) -> tuple[int, str, http.client.HTTPResponse]:
    parts = urllib.parse.urlsplit(site.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    headers = {}
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), resp
    finally:
        conn.close()


def _login_form(site: Site) -> tuple[dict[str, str], str]:
    status, page, resp = _request(site, "GET", "/console/login")
    assert status == 200
    cookie = re.search(r"__Host-atoll-console-login=([^;]+)", resp.getheader("set-cookie", ""))
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert cookie and token
    return {"__Host-atoll-console-login": cookie.group(1)}, token.group(1)


def _session(site: Site, name: str) -> tuple[dict[str, str], str]:
    cookies, csrf = _login_form(site)
    status, _, resp = _request(site, "POST", "/console/login",
                               {"csrf": csrf, "name": name, "password": PASSWORD}, cookies)
    assert status == 303, status
    secret = re.search(r"__Host-atoll-console=([^;]+)", resp.getheader("set-cookie", ""))
    assert secret
    session = {"__Host-atoll-console": secret.group(1)}
    _, page, _ = _request(site, "GET", "/console/fleet", cookies=session)
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert token
    return session, token.group(1)


def test_forms_without_the_csrf_token_are_refused(site: Site) -> None:
    cookies, csrf = _login_form(site)
    for form, jar in [({"name": "ann", "password": PASSWORD}, cookies),  # no token
                      ({"csrf": "0" * 64, "name": "ann", "password": PASSWORD}, cookies),
                      ({"csrf": csrf, "name": "ann", "password": PASSWORD}, {})]:  # no cookie
        status, page, resp = _request(site, "POST", "/console/login", form, jar)
        assert status == 403, page
        assert "atoll-console=" not in (resp.getheader("set-cookie") or "")
        # no cookie at all (a browser on plain HTTP to another address drops Secure
        # ones): the page says why, not only "stale"
        assert ("only over HTTPS or to a loopback address" in page) == (not jar), page
    session, token = _session(site, "ann")
    status, _, _ = _request(site, "POST", "/console/logout", {}, session)
    assert status == 403
    status, page, _ = _request(site, "GET", "/console/fleet", cookies=session)
    assert status == 200 and "<h1>Fleet</h1>" in page  # still logged in
    status, _, _ = _request(site, "POST", "/console/logout", {"csrf": token}, session)
    assert status == 303


def test_pages_carry_the_security_headers_and_need_a_session(site: Site) -> None:
    # a newcomer learns where the console is from `fleet serve` itself
    served = (Path(site.db.removeprefix("sqlite:///")).parent / "serve.log").read_text()
    assert f"web console on {site.url}/console/" in served, served
    session, _ = _session(site, "ann")
    status, page, resp = _request(site, "GET", "/console/fleet", cookies=session)
    assert status == 200
    csp = resp.getheader("content-security-policy") or ""
    assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp and "eval" not in csp
    assert resp.getheader("x-frame-options") == "DENY"
    assert resp.getheader("cache-control") == "no-store"
    assert "<script" not in page
    for path in ("/console/fleet", f"/console/hosts/{site.hosts['db01']}"):
        status, _, resp = _request(site, "GET", path, cookies={"__Host-atoll-console": "x"})
        assert status == 303 and resp.getheader("location") == "/console/login"
    # the viewer of globex: acme's host does not exist for it
    other, _ = _session(site, "ben")
    status, page, _ = _request(site, "GET", f"/console/hosts/{site.hosts['db01']}",
                               cookies=other)
    assert status == 404 and "db01" not in page


def test_wrong_passwords_lock_the_user_out_for_a_while(site: Site) -> None:
    statuses = []
    for _ in range(6):
        cookies, csrf = _login_form(site)
        status, _, resp = _request(site, "POST", "/console/login",
                                   {"csrf": csrf, "name": "locked", "password": "wrong" * 3},
                                   cookies)
        statuses.append(status)
    assert statuses[:4] == [401] * 4 and statuses[4:] == [429, 429], statuses
    assert int(resp.getheader("retry-after") or 0) >= 60
    # the right password does not get through the wait either
    cookies, csrf = _login_form(site)
    status, page, resp = _request(site, "POST", "/console/login",
                                  {"csrf": csrf, "name": "locked", "password": PASSWORD},
                                  cookies)
    assert status == 429 and "Too many login attempts" in page
    assert "atoll-console=" not in (resp.getheader("set-cookie") or "")


def test_every_page_for_every_kind_of_user(site: Site) -> None:
    """Route x user: a page in scope (200), out of scope (404), no session (303 to the
    login page)."""
    sessions = {name: _session(site, name)[0] for name in ("ann", "ben", "root")}
    sessions["nobody"] = {}
    acme, globex = f"/console/hosts/{site.hosts['db01']}", f"/console/hosts/{site.hosts['gx01']}"
    expected = {
        ("ann", "/console/fleet"): 200, ("ann", acme): 200, ("ann", globex): 404,
        ("ben", "/console/fleet"): 200, ("ben", acme): 404, ("ben", globex): 200,
        ("root", "/console/fleet"): 200, ("root", acme): 200, ("root", globex): 200,
        ("nobody", "/console/fleet"): 303, ("nobody", acme): 303, ("nobody", globex): 303,
        ("ann", "/console/hosts/no-such-host"): 404,
        ("ben", "/console/security"): 200, ("nobody", "/console/security"): 303,
    }
    got = {(user, path): _request(site, "GET", path, cookies=sessions[user])[0]
           for user, path in expected}
    assert got == expected
    _, page, _ = _request(site, "GET", "/console/fleet", cookies=sessions["ben"])
    assert "gx01" in page and "db01" not in page and "acme" not in page
    # a viewer's refusal speaks of its role, not of an API token it never had
    status, page, _ = _request(site, "GET", "/console/rollouts/any/halt",
                               cookies=sessions["ann"])
    assert status == 403 and "the operator role; &#39;console-ann&#39; has the viewer" \
        in page and "token" not in page, page
    # gx01 reported a `hotfix` of the wrong shape: its page still shows (was a 500)
    _, page, _ = _request(site, "GET", globex, cookies=sessions["ben"])
    assert re.search(r'<td class="hotfixes">; base <code></code></td>', page), page
    # the Security page in each scope: globex's one host; every customer for an admin
    _, page, _ = _request(site, "GET", "/console/security", cookies=sessions["ben"])
    assert "gx01" in page and not re.search(r"\bdb0", page) and "acme" not in page  # (\b:
    # not inside the page's random CSRF token, which is hex)
    assert re.search(r"<th scope=\"row\">high</th><td>1</td><td>5</td>", page)
    _, page, _ = _request(site, "GET", "/console/security", cookies=sessions["root"])
    assert re.search(r"<th scope=\"row\">high</th><td>2</td><td>7</td>", page)
    assert re.search(r"<th scope=\"row\">acme</th><td>3</td><td>2</td>\s*<td>1</td>"
                     r"<td>2</td><td>1</td>", page)
    assert re.search(r"<th scope=\"row\">globex</th><td>1</td><td>1</td>\s*<td>1</td>"
                     r"<td>0</td><td>0</td>", page)


def test_users_add_refuses_bad_input_and_changes_nothing(site: Site, tmp_path: Path) -> None:
    loose = tmp_path / "pw"
    loose.write_text(PASSWORD + "\n")
    os.chmod(loose, 0o644)
    for args, stdin, message in [
            (["--password-file", str(loose)], None, "readable by others (mode 0644)"),
            ([], "too short\n", "12 characters or more"),
            (["--customer", "initech"], PASSWORD + "\n", "no such customer 'initech'"),
            ([], "", "12 characters or more")]:
        done = _atoll("fleet", "users", "add", "eve", "--role", "viewer", *args,
                      "--db", site.db, stdin=stdin)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    # names that could never log in (the login form takes 63 characters), or that are
    # no name at all, were accepted
    for name in ("", "e" * 64, "=Eve <b>"):
        done = _atoll("fleet", "users", "add", name, "--role", "viewer", "--db", site.db,
                      stdin=PASSWORD + "\n")
        assert done.returncode == 2 and "lower case letters, digits and '-'" in done.stderr
        assert "Traceback" not in done.stderr
    done = _atoll("fleet", "users", "add", "ann", "--role", "viewer", "--db", site.db,
                  stdin=PASSWORD + "\n")
    assert done.returncode != 0 and "exists already" in done.stderr
    done = _atoll("fleet", "users", "list", "--db", site.db, "--json")
    listed = {u["name"]: u for u in json.loads(done.stdout)}
    assert sorted(listed) == ["ann", "ben", "locked", "op", "root"]
    assert listed["ann"]["customers"] == ["acme"] and listed["root"]["customers"] is None
    assert "argon2" not in done.stdout


def _bulk(browser: webdriver.Chrome, hosts: list[str], action: str) -> dict[str, str]:
    """Select ``hosts`` on the Fleet page, send ``action``: each host's outcome."""
    browser.get(browser.current_url.split("/console/")[0] + "/console/fleet")
    for name in hosts:
        label = browser.find_element(By.XPATH, f'//label[text()="select {name}"]')
        browser.find_element(By.ID, label.get_attribute("for") or "").click()
    Select(browser.find_element(By.ID, "bulk-action")).select_by_value(action)
    _submit(browser, browser.find_element(By.ID, "bulk-submit"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Bulk action"
    rows = browser.find_elements(By.CSS_SELECTOR, "#bulk-results tbody tr")
    return {r.find_element(By.TAG_NAME, "th").text: r.find_element(By.TAG_NAME, "td").text
            for r in rows}


def test_an_operator_sends_a_bulk_action_to_selected_hosts(
        site: Site, browser: webdriver.Chrome) -> None:
    """Requests for several hosts at once, through the API's own checks: a host whose
    policy leaves the apply to the customer waits for the customer; the others get the
    request at their next check-in."""
    _log_in(browser, site, "op")
    labels = browser.find_elements(By.CSS_SELECTOR, "#hosts td label")
    assert [label.get_attribute("textContent") for label in labels] == [
        "select db01", "select db02", "select db03"]
    _accessible(browser)
    waiting = "waiting for the customer: its policy leaves the apply to them"
    assert _bulk(browser, ["db01", "db03"], "apply") == {"db01": waiting, "db03": waiting}
    _accessible(browser)
    outcome = _bulk(browser, ["db03"], "ack-rollback")
    assert outcome["db03"].startswith("request ") and "queued" in outcome["db03"]
    status, doc = site.api.call("GET", f"/v1/hosts/{site.hosts['db03']}")
    assert status == 200 and [(r["kind"], r["state"], r["created_by"]) for r in
                              doc["requests"]] == [
        ("ack-rollback", "queued", "operator:console-op")]
    assert site.api.call("GET", f"/v1/hosts/{site.hosts['db01']}")[1]["requests"] == []

    # over plain HTTP: a viewer may not, another customer's host is not found, the
    # token is needed, nothing is created by any of these
    session, token = _session(site, "ann")
    form = [("csrf", token), ("action", "cancel"), ("host", site.hosts["db01"])]
    assert _request(site, "POST", "/console/fleet/requests", form, session)[0] == 403
    session, token = _session(site, "op")
    status, page, _ = _request(site, "POST", "/console/fleet/requests", [
        ("csrf", token), ("action", "cancel"), ("host", site.hosts["gx01"])], session)
    assert status == 200 and "0 of 1 hosts" in page and "gx01" not in page
    assert _request(site, "POST", "/console/fleet/requests", [
        ("action", "cancel"), ("host", site.hosts["db01"])], session)[0] == 403
    assert _request(site, "POST", "/console/fleet/requests", [
        ("csrf", token), ("action", "reboot-now"), ("host", site.hosts["db01"])],
        session)[0] == 422
    for name in ("db01", "gx01"):
        assert site.api.call("GET", f"/v1/hosts/{site.hosts[name]}")[1]["requests"] == []


def test_bulk_actions_refuse_hostile_forms_and_change_nothing_twice(site: Site) -> None:
    """1,001 host fields, a body that is not UTF-8, unknown or deleted-looking ids, and
    the same host named three times (one request, not three)."""
    session, token = _session(site, "op")
    before = {n: len(site.api.call("GET", f"/v1/hosts/{h}")[1]["requests"])
              for n, h in site.hosts.items()}
    many = [("csrf", token), ("action", "cancel")] + [("host", site.hosts["db02"])] * 1001
    assert _request(site, "POST", "/console/fleet/requests", many, session)[0] in (400, 413)
    parts = urllib.parse.urlsplit(site.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    try:
        conn.request("POST", "/console/fleet/requests",
                     body=f"csrf={token}&action=cancel&host=%FF%FE%80".encode(),
                     headers={"Content-Type": "application/x-www-form-urlencoded",
                              "Cookie": "; ".join(f"{k}={v}" for k, v in session.items())})
        resp = conn.getresponse()
        assert resp.status == 422 and "malformed" in resp.read().decode()
    finally:
        conn.close()
    status, page, _ = _request(site, "POST", "/console/fleet/requests", [
        ("csrf", token), ("action", "pin"), ("host", "0" * 8 + "-0000-0000-0000-" + "0" * 12),
        ("host", "<script>")], session)
    assert status == 422 and "<script>" not in page
    assert {n: len(site.api.call("GET", f"/v1/hosts/{h}")[1]["requests"])
            for n, h in site.hosts.items()} == before
    status, page, _ = _request(site, "POST", "/console/fleet/requests", [
        ("csrf", token), ("action", "cancel"), ("host", site.hosts["db02"]),
        ("host", site.hosts["db02"]), ("host", " " + site.hosts["db02"] + " ")], session)
    assert status == 200 and "1 of 1 hosts" in page
    assert len(site.api.call("GET", f"/v1/hosts/{site.hosts['db02']}")[1]["requests"]) == \
        before["db02"] + 1
