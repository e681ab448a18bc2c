"""The console's Rollouts and Releases pages and the Host page's package changes, in
a real headless Chromium (Selenium, Debian's ``chromium``) against a real ``atoll
fleet serve --repo`` process that reads a real signed update repository (``atoll
publish``; the package manifests are this machine's dpkg status, changed from version
to version), with hosts checking in through the real protocol (:class:`SimHost`):
create a rollout, watch it halt by itself when a host rolls back, open the failing
host's package changes, resume it with a reason; read the releases' package changes.
Over plain HTTP: who may see and act on which rollout, CSRF on every action.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from atoll.cli import main
from atoll.control.console import plots
from atoll.control.console.rollout_views import REFRESH_S
from atoll.control.protocol import Package, manifest_digest
from atoll.store.packages import parse_dpkg_status
from atoll.store.repo import Repo
from tests.integration.control_fixtures import Api, SimHost, host_status
from tests.integration.test_console import (
    PASSWORD,
    ROOT,
    Site,
    _accessible,
    _atoll,
    _log_in,
    _request,
    _session,
    _submit,
    browser,  # noqa: F401 (a fixture)
    site,  # noqa: F401 (a fixture: a server that reads no update repository)
)
from tests.services import free_port

ALL = ["download", "prepare", "apply"]
CHANNEL = "site/db"


@dataclass
class RolloutSite(Site):
    commits: dict[str, str]  # version -> commit
    manifests: dict[str, list[dict[str, str]]]
    sims: dict[str, SimHost]


def _manifests() -> dict[str, list[dict[str, str]]]:
    """Version 1: this machine's installed Debian packages (real dpkg status);
    2: one upgraded, one removed, one added; 3: one more upgraded."""
    v1 = parse_dpkg_status(Path("/var/lib/dpkg/status").read_text(errors="replace"))
    assert len(v1) > 20
    names = [p["name"] for p in v1]
    up, gone, up3 = names[0], names[1], names[2]
    v2 = [dict(p, version=p["version"] + "+atoll1") if p["name"] == up else p
          for p in v1 if p["name"] != gone] + [{"name": "atoll-demo", "version": "1.0-1"}]
    v3 = [dict(p, version=p["version"] + "+atoll1") if p["name"] == up3 else p for p in v2]
    return {"1": v1, "2": v2, "3": v3}


def _publish(tmp: Path, manifests: dict[str, list[dict[str, str]]]) -> dict[str, str]:
    pub = Repo.create(tmp / "pub")
    www, keys = tmp / "www", tmp / "keys"
    assert main(["-q", "keys", "init", str(keys), "--to", str(www)]) == 0
    commits = {}
    for version, manifest in manifests.items():
        tree = tmp / f"t{version}"
        for d in ("usr/bin", "usr/etc", "etc", "var"):
            (tree / d).mkdir(parents=True)
        (tree / "usr/bin/db-tool").write_bytes(random.Random(version).randbytes(4096))
        (tree / "usr/etc/os-release").write_text(f"VERSION={version}\n")
        commits[version] = pub.commit_dir(tree, ref=CHANNEL, version=version,
                                          manifest=manifest)
        assert main(["-q", "publish", CHANNEL, "--repo", str(pub.path), "--to", str(www),
                     "--keys", str(keys)]) == 0
    return commits


def _status(version: str, commits: dict[str, str], **kw: Any) -> dict[str, Any]:
    st = host_status(version, **kw)
    for dep in (st["booted"],):
        dep.update(commit=commits[version], id=f"{commits[version]}.0")
    st["deployments"] = [st["booted"]]
    st["last_boot"]["deployment"] = st["booted"]["id"]
    return st


def _rolled_back(commits: dict[str, str]) -> dict[str, Any]:
    """Version 1 booted again after 2 failed its boot: a boot-count rollback."""
    st = _status("1", commits, result="rolled-back", reason="boot counting: 3 failed boots",
                 boot_time="2026-12-01T12:10:00Z", rollbacks=1)
    v2 = dict(st["booted"], id=f"{commits['2']}.1", commit=commits["2"], version="2",
              role="rollback", index=1)
    st["deployments"].append(v2)
    st["rollback"] = v2
    st["last_boot"]["deployment"] = v2["id"]
    return st


def _prepared(rs: RolloutSite, name: str, status: dict[str, Any] | None = None,
              **kw: Any) -> dict[str, Any]:
    code, doc = rs.sims[name].checkin(
        status=status or _status("1", rs.commits, update="prepared"),
        policy={"mode": "apply"}, **kw)
    assert code == 200, doc
    return dict(doc)


@pytest.fixture(scope="module", name="rs")
def rsite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RolloutSite]:
    tmp = tmp_path_factory.mktemp("console-rollouts")
    manifests = _manifests()
    commits = _publish(tmp, manifests)
    db = f"sqlite:///{tmp}/control.db"
    done = _atoll("fleet", "db", "init", "--db", db, "--token-file", str(tmp / "admin"))
    assert done.returncode == 0, done.stderr
    port = free_port()
    log = open(tmp / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "atoll.cli", "fleet", "serve", "--db", db,
                             "--listen", f"127.0.0.1:{port}", "--repo", str(tmp / "www"),
                             "--repo-root", str(tmp / "www/metadata/root.json")],
                            stdout=log, stderr=log,
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
        for customer in ("acme", "globex"):
            assert api.call("POST", "/v1/customers", {"name": customer})[0] == 201
        sims: dict[str, SimHost] = {}
        for name, customer in [("db01", "acme"), ("db02", "acme"), ("db03", "acme"),
                               ("db04", "acme"), ("gx01", "globex")]:
            code, doc = api.call("POST", "/v1/enrol-tokens", {
                "customer": customer, "labels": {"role": "db"}})
            assert code == 201, doc
            sims[name] = SimHost(url, name)
            assert sims[name].enrol(doc["token"])[0] == 200
        rs = RolloutSite(url, api, db, {n: h.host_id for n, h in sims.items()}, commits,
                           manifests, sims)
        for name in sims:
            _prepared(rs, name)
        (tmp / "pw").write_text(PASSWORD + "\n")
        os.chmod(tmp / "pw", 0o600)
        for user, role, customers in [("op", "operator", ["acme"]),
                                      ("ann", "viewer", ["acme"]),
                                      ("gop", "operator", ["globex"])]:
            extra = [a for c in customers for a in ("--customer", c)]
            done = _atoll("fleet", "users", "add", user, "--role", role, *extra, "--db", db,
                          "--password-file", str(tmp / "pw"))
            assert done.returncode == 0, done.stderr
        yield rs
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _text(driver: webdriver.Chrome, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def test_create_watch_halt_and_resume_a_rollout(rs: RolloutSite,
                                                browser: webdriver.Chrome) -> None:  # noqa: F811
    _log_in(browser, rs, "op")
    _submit(browser, browser.find_element(By.LINK_TEXT, "Rollouts"))
    assert _text(browser, "h1") == "Rollouts"
    _accessible(browser)
    _submit(browser, browser.find_element(By.ID, "new-rollout"))
    _accessible(browser, "rollout-new")
    # the target is chosen among the signed versions, read from the repository
    options = [o.text for o in Select(browser.find_element(By.ID, "r-target")).options]
    assert options == [f"{CHANNEL} 3 (newest)", f"{CHANNEL} 2", f"{CHANNEL} 1"]
    # a customer's operator chooses among its customers only
    assert [o.text for o in Select(browser.find_element(By.ID, "r-customer")).options] \
        == ["acme"]
    # bad input: the form comes back with the error, nothing is created
    browser.find_element(By.ID, "r-id").send_keys("r1")
    browser.find_element(By.ID, "r-labels").send_keys("role=db")
    Select(browser.find_element(By.ID, "r-target")).select_by_visible_text(f"{CHANNEL} 2")
    waves = browser.find_element(By.ID, "r-waves")
    waves.clear()
    waves.send_keys("50, 10")
    _submit(browser, browser.find_element(By.CSS_SELECTOR, "form.rollout-new button"))
    assert "do not increase" in _text(browser, "#form-message")
    assert rs.api.call("GET", "/v1/rollouts")[1] == []
    waves = browser.find_element(By.ID, "r-waves")
    waves.clear()
    waves.send_keys("50, 100")
    _submit(browser, browser.find_element(By.CSS_SELECTOR, "form.rollout-new button"))
    assert _text(browser, "h1") == "Rollout r1", browser.page_source
    assert _text(browser, "#rollout-state") == "running"
    assert _text(browser, "#rollout-target") == f"{CHANNEL} 2"
    _accessible(browser)
    # what the API says is what the form made (one implementation: rollout_ops)
    code, doc = rs.api.call("GET", "/v1/rollouts/r1", query={"hosts": "true"})
    assert code == 200 and doc["customer"] == "acme" and doc["members"] == 4, doc
    assert doc["created_by"] == "operator:console-op" and doc["spec"]["waves"] == [50, 100]
    assert [v["version"] for v in doc["versions"]] == ["1", "2", "3"]

    # wave 0 applies; one of its hosts rolls back: the budget (0) halts the rollout
    answers = {n: _prepared(rs, n) for n in ("db01", "db02", "db03", "db04")}
    first = sorted(n for n, a in answers.items() if a["allow"] == ALL)
    assert len(first) == 2, answers
    bad = first[0]
    rolled = _rolled_back(rs.commits)
    packages = [Package(**p) for p in rs.manifests["1"]]
    _prepared(rs, bad, rolled, manifest_sha256=manifest_digest(packages),
              manifest=[p.model_dump(exclude_none=True) for p in packages])
    # the page reloads itself (static/live.js, the only script: no inline one) and
    # shows the halt; a reload between finding the element and reading it leaves a
    # stale element: read it again
    WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: d.find_element(By.ID, "rollout-state").text == "halted")
    assert "failed hosts, more than the budget of 0" in _text(browser, "#halt-reason")
    assert _text(browser, "#rollout-failures").startswith("1 failed")
    assert _text(browser, "#halt-hosts") == bad
    scripts = browser.find_elements(By.TAG_NAME, "script")
    assert [s.get_attribute("src").split("/console/")[1] for s in scripts] == [
        "static/live.js"] and not any(s.get_attribute("innerHTML") for s in scripts)
    # the user can stop the reloading (WCAG 2.2.1), and it stays stopped
    toggle = browser.find_element(By.ID, "live-toggle")
    assert toggle.text == "Pause live updates"
    toggle.click()
    assert toggle.get_attribute("aria-pressed") == "true"
    # the progress plot: one bar per wave, its parts the API's phases grouped
    plot = browser.find_element(By.ID, "waves-plot")
    assert plot.get_attribute("role") == "img"
    assert "Progress per wave: wave 0, 0 of 2 done, 1 in flight, 1 failed" in \
        plot.find_element(By.TAG_NAME, "title").get_attribute("textContent")
    bars = {g.get_attribute("data-wave"): {r.get_attribute("data-part"):
                                           int(r.get_attribute("data-hosts"))
                                           for r in g.find_elements(By.TAG_NAME, "rect")}
            for g in plot.find_elements(By.CSS_SELECTOR, "g.wave")}
    api_waves = rs.api.call("GET", "/v1/rollouts/r1")[1]["waves"]
    assert bars == {str(w["index"]): {part: n for part, names in plots.WAVE_PARTS
                                      if (n := sum(w["phases"].get(p, 0) for p in names))}
                    for w in api_waves}
    assert bars["0"] == {"in flight": 1, "failed": 1} and sum(bars["1"].values()) == 2
    browser.execute_script("window.atollStayed = true")
    time.sleep(REFRESH_S + 2)
    assert browser.execute_script("return window.atollStayed === true")  # not reloaded
    browser.find_element(By.ID, "live-toggle").click()  # live again, for what follows
    _accessible(browser, "rollout-halted")

    # the failing host: what its rollback changed, from the signed manifests
    _submit(browser, browser.find_element(By.CSS_SELECTOR, "#halt-hosts a"))
    assert _text(browser, "h1") == f"Host {bad}"
    _accessible(browser, "host-package-changes")
    names = [p["name"] for p in rs.manifests["1"]]
    changes = _text(browser, "#packages-rollback")
    assert f"upgraded {names[0]}" in changes and "added atoll-demo - 1.0-1" in changes
    assert f"removed {names[1]}" in changes
    browser.back()

    # resume, with a reason: recorded; the rollout runs again
    browser.get(f"{rs.url}/console/rollouts/r1")
    assert browser.find_elements(By.ID, "halt-link") == []  # halted: resume or abort
    _submit(browser, browser.find_element(By.ID, "resume-link"))
    _accessible(browser)
    assert "failed hosts, more than the budget" in browser.page_source
    browser.find_element(By.ID, "resume-why").send_keys("db01's disk replaced")
    _submit(browser, browser.find_element(By.CSS_SELECTOR, "#resume-form button"))
    assert _text(browser, "#rollout-state") == "running"
    events = rs.api.call("GET", "/v1/events", query={"limit": 1000})[1]
    resumed = [e for e in events if e["kind"] == "rollout-resumed"]
    assert [(e["actor"], e["data"]["reason"]) for e in resumed] == [
        ("operator:console-op", "db01's disk replaced")], resumed
    assert _prepared(rs, first[1])["allow"] == ALL

    # the list shows it, with failures against the budget
    _submit(browser, browser.find_element(By.LINK_TEXT, "All rollouts"))
    row = _text(browser, "#rollouts tbody tr")
    assert row.startswith(f"r1 running acme role=db {CHANNEL} 2") and "at most 0 failed" in row


def test_releases_list_signed_versions_with_package_changes(
        rs: RolloutSite, browser: webdriver.Chrome) -> None:  # noqa: F811
    _log_in(browser, rs, "ann")  # a viewer reads them too
    _submit(browser, browser.find_element(By.LINK_TEXT, "Releases"))
    assert _text(browser, "h1") == "Releases"
    _accessible(browser, "releases")
    headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h3")]
    assert headings == [f"{CHANNEL} 3 (newest)", f"{CHANNEL} 2", f"{CHANNEL} 1"]
    names = [p["name"] for p in rs.manifests["1"]]
    tables = browser.find_elements(By.CSS_SELECTOR, "table.changes")
    assert len(tables) == 2
    v3, v2 = tables[0].text, tables[1].text
    assert "Changes against 2" in v3 and f"upgraded {names[2]}" in v3
    assert "atoll-demo" not in v3 and names[1] not in v3.split()
    assert "Changes against 1" in v2 and "added atoll-demo - 1.0-1" in v2
    assert f"removed {names[1]}" in v2 and f"upgraded {names[0]}" in v2
    assert "nothing to compare with" in browser.page_source


def test_who_may_see_and_act_on_a_rollout(rs: RolloutSite) -> None:
    body = {"id": "r2", "customer": "acme", "labels": {"role": "db"}, "channel": CHANNEL,
            "to_version": "3"}
    code, doc = rs.api.call("POST", "/v1/rollouts", body)
    assert code == 201, doc
    ann, ann_csrf = _session(rs, "ann")  # acme's viewer
    op, op_csrf = _session(rs, "op")  # acme's operator
    gop, gop_csrf = _session(rs, "gop")  # globex's operator
    form = {"reason": "because"}

    def post(path: str, jar: dict[str, str], data: dict[str, str]) -> int:
        return _request(rs, "POST", path, data, jar)[0]

    # a viewer sees it but may not act: refused by the server, not just a hidden button
    code, page, _ = _request(rs, "GET", "/console/rollouts/r2", cookies=ann)
    assert code == 200 and "r2" in page and "halt-link" not in page
    for kind in ("halt", "abort", "resume"):
        assert post(f"/console/rollouts/r2/{kind}", ann, form | {"csrf": ann_csrf}) == 403
    assert post("/console/rollouts", ann, {"csrf": ann_csrf, "id": "r9", "customer": "acme",
                                           "target": f"{CHANNEL} 3"}) == 403
    assert _request(rs, "GET", "/console/rollouts/new", cookies=ann)[0] == 403
    assert _request(rs, "GET", "/console/rollouts/r2/halt", cookies=ann)[0] == 403
    # another customer's operator: it does not exist
    code, page, _ = _request(rs, "GET", "/console/rollouts", cookies=gop)
    assert code == 200 and "r2" not in page and "r1" not in page
    assert _request(rs, "GET", "/console/rollouts/r2", cookies=gop)[0] == 404
    assert post("/console/rollouts/r2/halt", gop, form | {"csrf": gop_csrf}) == 404
    assert _request(rs, "GET", "/console/rollouts/r2/halt", cookies=gop)[0] == 404
    # nor may it create one over acme's hosts
    code, page, _ = _request(rs, "POST", "/console/rollouts", {
        "csrf": gop_csrf, "id": "r9", "customer": "acme", "target": f"{CHANNEL} 3"}, gop)
    assert code == 404 and "r9" not in [r["id"] for r in
                                        rs.api.call("GET", "/v1/rollouts")[1]]
    # the right operator, without the CSRF token or without a reason: nothing changes
    assert post("/console/rollouts/r2/halt", op, form) == 403
    assert post("/console/rollouts/r2/halt", op, {"csrf": op_csrf}) == 422
    assert rs.api.call("GET", "/v1/rollouts/r2")[1]["state"] == "running"
    # ... and with both: halted, by the console user, with the reason
    code, _, resp = _request(rs, "POST", "/console/rollouts/r2/halt",
                             form | {"csrf": op_csrf}, op)
    assert code == 303 and resp.getheader("location") == "/console/rollouts/r2"
    doc = rs.api.call("GET", "/v1/rollouts/r2")[1]
    assert doc["state"] == "halted" and doc["halt"]["reason"] == "because"
    assert doc["halt"]["by"] == "operator:console-op"
    assert post("/console/rollouts/r2/abort", op, form | {"csrf": op_csrf}) == 303
    assert rs.api.call("GET", "/v1/rollouts/r2")[1]["state"] == "aborted"
    assert post("/console/rollouts/r2/resume", op, form | {"csrf": op_csrf}) == 409
    # without a session: to the login page
    code, _, resp = _request(rs, "GET", "/console/rollouts/r2")
    assert code == 303 and resp.getheader("location") == "/console/login"
    assert _request(rs, "POST", "/console/rollouts/r2/halt", form)[0] == 303


def test_without_an_update_repository_the_pages_say_so(site: Site) -> None:  # noqa: F811
    """``fleet serve`` without ``--repo``: nothing signed to offer or compare."""
    session, _ = _session(site, "root")
    code, page, _ = _request(site, "GET", "/console/rollouts", cookies=session)
    assert code == 200 and "No rollout." in page
    for path in ("/console/releases", "/console/rollouts/new"):
        code, page, _ = _request(site, "GET", path, cookies=session)
        assert code == 404 and "reads no update repository" in page, path
    code, page, _ = _request(site, "GET", f"/console/hosts/{site.hosts['db01']}",
                             cookies=session)
    assert code == 200 and "Not known: this control plane reads no update repository" in page
