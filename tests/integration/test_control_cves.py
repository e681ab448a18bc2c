"""CVEs in the control plane over real HTTP on SQLite and PostgreSQL: signed check-ins
carrying the booted deployment's CVE facts, kept with the host, shown per host, filtered,
summarized fleet-wide, and scoped to a token's customers (docs/control-plane.md)."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from atoll.cli import main
from atoll.control.console import users as console_users
from atoll.control.console.web import SESSION_COOKIE
from tests.integration.control_fixtures import (
    Control,
    SimHost,
    control_db_fixture,  # noqa: F401 (a fixture)
    control_fixture,  # noqa: F401 (a fixture)
    host_status,
    pg_fixture,  # noqa: F401 (a fixture)
)

pytestmark = pytest.mark.integration

WORDS = ("unimportant", "low", "medium", "high", "not yet assigned")


def cves(open_cves: list[tuple[str, str]], *, expires: str = "2026-12-05T00:00:00Z",
         fixes: dict[str, int] | None = None) -> dict[str, Any]:
    counts = dict.fromkeys(WORDS, 0)
    for _, u in open_cves:
        counts[u] += 1
    doc: dict[str, Any] = {
        "commit": "a" * 64, "source": "tracker", "generated": "2026-11-30T00:00:00Z",
        "expires": expires, "age_seconds": 3600, "stale": False, "open": counts,
        "open_cves": [{"cve": c, "urgency": u, "source": "openssl", "fixed_version": None}
                      for c, u in open_cves]}
    if fixes is not None:
        doc["update"] = {"commit": "b" * 64, "state": "downloaded", "version": "2",
                         "source": "tracker", "fixes": fixes,
                         "fixes_total": sum(fixes.values())}
    return doc


def enrolled(c: Control, name: str, customer: str, **kw: Any) -> SimHost:
    h = SimHost(c.server.url, name)
    status, doc = h.enrol(c.enrol_token(customer, **kw))
    assert status == 200, doc
    return h


def token_file(tmp_path: Path, name: str, secret: str) -> str:
    path = tmp_path / name
    path.write_text(secret + "\n")
    os.chmod(path, 0o600)
    return str(path)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    assert main(["--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_cves_per_host_and_fleet_wide_scoped_by_customer(
        control: Control, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = control
    c.customer("acme")
    c.customer("beta")
    a1 = enrolled(c, "db01", "acme", labels={"site": "fra"})
    a2 = enrolled(c, "db02", "acme", labels={"site": "ber"})
    old = enrolled(c, "db03", "acme")
    b1 = enrolled(c, "web01", "beta")
    assert a1.checkin(cves=cves([("CVE-2026-1", "high"), ("CVE-2026-2", "low")],
                                fixes={"high": 1}))[0] == 200
    assert a2.checkin(cves=cves([("CVE-2026-1", "high")],
                                expires="2026-12-01T00:00:00Z"))[0] == 200  # stale by now
    assert old.checkin()[0] == 200  # an agent from before CVE reporting: still accepted
    assert b1.checkin(cves=cves([("CVE-2026-9", "medium")]))[0] == 200
    # a malformed cves part is refused whole, and the host keeps its last report
    bad = cves([("CVE-2026-1", "high")])
    bad["open"]["critical"] = 1  # not a tracker urgency
    assert a1.checkin(cves=bad)[0] == 422

    # per host: the stored report keeps the facts; the brief says stale by the server clock
    status, host = c.api.call("GET", "/v1/hosts/db02")
    assert status == 200 and host["report"]["cves"]["open_cves"][0]["cve"] == "CVE-2026-1"
    assert host["cves"]["stale"] is True and host["cves"]["open"]["high"] == 1
    status, host = c.api.call("GET", "/v1/hosts/db01")
    assert host["cves"]["update"]["fixes"]["high"] == 1 and host["cves"]["stale"] is False
    assert c.api.call("GET", "/v1/hosts/db03")[1]["cves"]["source"] == "unreported"
    status, rows = c.api.call("GET", "/v1/hosts", query={"cve_at_least": "high"})
    assert [r["name"] for r in rows] == ["db01", "db02"]
    assert [r["name"] for r in c.api.call("GET", "/v1/hosts", query={
        "cve_at_least": "medium"})[1]] == ["db01", "db02", "web01"]
    status, err = c.api.call("GET", "/v1/hosts", query={"cve_at_least": "critical"})
    assert status == 422 and "not an urgency" in err["brief"]

    # fleet-wide, every customer
    status, doc = c.api.call("GET", "/v1/cves")
    assert status == 200, doc
    assert (doc["hosts"], doc["with_data"]) == (4, 3)
    assert doc["exposed"]["high"] == 2 and doc["exposed"]["medium"] == 1
    assert [(t["cve"], t["hosts"]) for t in doc["top"]] == [
        ("CVE-2026-1", 2), ("CVE-2026-9", 1), ("CVE-2026-2", 1)]
    assert [s["name"] for s in doc["stale"]] == ["db02"]
    assert [w["name"] for w in doc["without_data"]] == ["db03"]
    assert doc["update_fixes"]["high"] == 1
    # by label
    doc = c.api.call("GET", "/v1/cves", query={"label": "site=fra"})[1]
    assert doc["hosts"] == 1 and [t["cve"] for t in doc["top"]] == ["CVE-2026-1",
                                                                   "CVE-2026-2"]

    # a token scoped to beta sees beta's hosts only, and no other customer by name
    beta = c.token("beta-viewer", "viewer", ["beta"])
    doc = c.api.call("GET", "/v1/cves", token=beta)[1]
    assert doc["hosts"] == 1 and [t["cve"] for t in doc["top"]] == ["CVE-2026-9"]
    assert doc["exposed"]["high"] == 0 and doc["stale"] == []
    assert c.api.call("GET", "/v1/cves", query={"customer": "acme"}, token=beta)[0] == 404
    assert [r["name"] for r in c.api.call("GET", "/v1/hosts", query={
        "cve_at_least": "low"}, token=beta)[1]] == ["web01"]
    assert c.api.call("GET", "/v1/cves", token="atl_op_nope")[0] == 401

    # the command line, in-process against the same server
    ops = ("--server", c.server.url, "--token-file", token_file(tmp_path, "admin", c.admin))
    out = cli(capsys, "fleet", "cves", "--label", "site=ber", *ops)
    assert [s["name"] for s in out["stale"]] == ["db02"]
    rows = cli(capsys, "fleet", "hosts", "--cve-at-least", "high", *ops)
    assert [(r["name"], r["cves"]["open"]["high"]) for r in rows] == [("db01", 1), ("db02", 1)]
    assert cli(capsys, "fleet", "host", "db01", *ops)["cves"]["source"] == "tracker"
    scoped = ("--server", c.server.url, "--token-file", token_file(tmp_path, "beta", beta))
    assert cli(capsys, "fleet", "cves", *scoped)["hosts"] == 1
    assert main(["fleet", "host", "db01", *ops]) == 0
    text = capsys.readouterr().out
    assert "cves        open 1 high, 1 low; data expires 2026-12-05T00:00:00Z" in text
    assert "update      fixes 1 CVE(s): 1 high [tracker]" in text
    assert main(["fleet", "hosts", *ops]) == 0
    table = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert table["db01"].endswith(" 1 high") and table["db02"].endswith(" 1 high STALE")
    assert table["db03"].endswith(" -") and table["web01"].endswith(" 1 medium")
    assert main(["fleet", "cves", *ops]) == 0
    text = capsys.readouterr().out
    assert "stale: db02 (acme)" in text and "CVE-2026-1" in text

    # the console's host page (an acme viewer): the open CVEs and what the update fixes
    now = c.clock()  # the server's clock judges the session
    with c.db.write() as s:
        console_users.add_user(s, "ann", "correct horse battery staple", "viewer", ["acme"], now)
    secret = console_users.log_in(c.db, "ann", "correct horse battery staple", now).secret
    assert secret is not None

    def page(host: str) -> str:
        hid = c.api.call("GET", f"/v1/hosts/{host}")[1]["id"]
        req = urllib.request.Request(f"{c.server.url}/console/hosts/{hid}",
                                     headers={"Cookie": f"{SESSION_COOKIE}={secret}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return str(resp.read().decode())

    html = page("db01")
    assert '<dd id="host-cves">1 high, 1 low; data expires 2026-12-05T00:00:00Z</dd>' in html
    assert '<dd id="host-cve-fixes">1 CVE(s), 1 high</dd>' in html
    html = page("db02")
    assert "1 high <strong class=\"state-unhealthy\">(data stale)</strong>" in html
    assert '<dd id="host-cves">not reported</dd>' in page("db03")

    # a hotfix deployment (atoll status's `hotfix`, docs/hotfix.md) shows on the host page
    status_doc = host_status("1")
    status_doc["booted"]["hotfix"] = status_doc["deployments"][0]["hotfix"] = {
        "base": "c" * 64, "base_version": "1",
        "packages": [{"name": "openssl", "version": "3.0.15-1~deb12u1", "kind": "pin"}]}
    assert a1.checkin(status=status_doc)[0] == 200
    assert ('<td class="hotfixes">openssl 3.0.15-1~deb12u1 (pin); base <code>cccccccccccc'
            '</code></td>') in page("db01")
    assert '<td class="hotfixes">-</td>' in page("db02")
    # ... in the API and `fleet hosts`/`fleet host`, counted by its base version
    host = c.api.call("GET", "/v1/hosts/db01")[1]
    assert host["booted_version"] == "1" and host["hotfixes"] == [
        {"name": "openssl", "version": "3.0.15-1~deb12u1", "kind": "pin", "expires": None}]
    assert c.api.call("GET", "/v1/hosts/db02")[1]["hotfixes"] == []
    assert main(["fleet", "hosts", *ops]) == 0
    table = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert table["db01"][2] == "1+1hf" and table["db02"][2] == "1"
    assert main(["fleet", "host", "db01", *ops]) == 0
    assert "  hotfix      openssl 3.0.15-1~deb12u1 (pin)\n" in capsys.readouterr().out


def test_hostile_cve_facts_are_refused_whole(control: Control) -> None:
    """Markup or a terminal escape as a CVE id, an absurd count: the check-in is refused
    (422) and the host keeps its last report."""
    c = control
    c.customer("acme")
    h = enrolled(c, "db01", "acme")
    assert h.checkin(cves=cves([("CVE-2026-0001", "high")]))[0] == 200
    for bad in (cves([("<img src=x onerror=alert(1)>", "high")]),
                cves([("CVE-2026-1\x1b[2J", "high")])):
        assert h.checkin(cves=bad)[0] == 422
    huge = cves([("CVE-2026-0002", "high")])
    huge["open"]["high"] = 10**9
    assert h.checkin(cves=huge)[0] == 422
    doc = c.api.call("GET", "/v1/cves")[1]
    assert [t["cve"] for t in doc["top"]] == ["CVE-2026-0001"]
