"""atoll's Salt modules with real Salt (``salt-call --local``) against a real atoll host.

The host is a sysroot that booted version 1 from a real update repository on HTTP
(127.0.0.1), with version 2 published (``AtollSite``). Salt lives in its own venv,
``.venv-salt`` (from ``integrations/salt/requirements.txt``), built when missing. The
minion's config points ``module_dirs``/``states_dirs``/``grains_dirs``/``beacons_dirs`` at
``integrations/salt/`` and ``atoll.sysroot`` at the host.
"""

from __future__ import annotations

import json
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.ansible_fixtures import ATOLL, ROOT, AtollSite, host_state
from tests.integration.delivery_fixtures import serve_www

pytestmark = pytest.mark.integration

SALT = ROOT / "integrations/salt"
VENV = ROOT / ".venv-salt"


def salt_venv() -> Path:
    req = SALT / "requirements.txt"
    stamp = VENV / ".installed"
    if not (VENV / "bin/python").exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(VENV)], check=True)
    if not stamp.exists() or stamp.stat().st_mtime < req.stat().st_mtime:
        subprocess.run([str(VENV / "bin/pip"), "install", "-q", "-r", str(req)], check=True)
        stamp.touch()
    return VENV


class Minion:
    """``salt-call --local`` with a config of its own in ``tmp``."""

    def __init__(self, tmp: Path, sysroot: Path):
        self.conf = tmp / "salt-conf"
        self.conf.mkdir(exist_ok=True)
        (self.conf / "minion").write_text(textwrap.dedent(f"""\
            id: host1
            file_client: local
            root_dir: {tmp / "salt-root"}
            module_dirs: [{SALT / "_modules"}]
            states_dirs: [{SALT / "_states"}]
            grains_dirs: [{SALT / "_grains"}]
            beacons_dirs: [{SALT / "_beacons"}]
            atoll.executable: {ATOLL}
            atoll.sysroot: {sysroot}
            log_level: quiet
            """))

    def call(self, *args: str) -> tuple[int, Any]:
        proc = self.run(*args)
        try:
            doc = json.loads(proc.stdout)["local"] if proc.stdout.strip() else None
        except (ValueError, KeyError):
            doc = proc.stdout
        return proc.returncode, doc if doc is not None else proc.stderr

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(VENV / "bin/salt-call"), "--local", "-c", str(self.conf),
                               "--out", "json", "--retcode-passthrough", *args],
                              capture_output=True, text=True, timeout=300)

    def state(self, fun: str, *args: str) -> dict[str, Any]:
        rc, doc = self.call("state.single", fun, "name=atoll", *args)
        assert isinstance(doc, dict), doc
        (ret,) = doc.values()
        return dict(ret) | {"rc": rc}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[AtollSite]:
    salt_venv()
    (tmp_path / "www").mkdir()
    with serve_www(tmp_path / "www") as server:
        s = AtollSite(tmp_path, server.url)
        s.publish(2)
        yield s


def test_update_state_test_mode_then_real_then_nothing(site: AtollSite, tmp_path: Path) -> None:
    m = Minion(tmp_path, site.host)
    before = host_state(site.host)
    dry = m.state("atoll_update.pending", "test=True")
    assert dry["result"] is None and dry["changes"]["steps"] == ["download", "apply"]
    assert dry["changes"]["version"] == "2" and "would download, apply 2" in dry["comment"]
    assert host_state(site.host) == before, "test=True changed the host"

    real = m.state("atoll_update.pending")
    assert real["result"] is True and real["rc"] == 0
    assert real["changes"] == dry["changes"]  # test=True predicted every key and value
    assert real["changes"]["pending"]["new"] == f"2 ({site.status()['pending']['commit'][:12]})"
    assert real["changes"]["needs_reboot"] is True
    assert real["changes"]["update_state"]["new"] == "pending"
    st = site.status()
    assert st["pending"]["version"] == "2" and st["booted"]["version"] == "1"

    again = m.state("atoll_update.pending")
    assert again["result"] is True and again["changes"] == {}
    assert "already" in again["comment"]
    assert m.state("atoll_update.pending", "test=True")["result"] is True  # nothing to do

    rc, grains = m.call("grains.get", "atoll")
    assert rc == 0 and grains["version"] == "1" and grains["pending"] == "2"
    assert grains["needs_reboot"] is True and grains["update_state"] == "pending"
    rc, view = m.call("atoll.update_check")
    assert rc == 0 and view["applied"] is True
    rc, needs = m.call("atoll.needs_reboot")
    assert needs is True


def test_prepared_state_and_app_absent(site: AtollSite, tmp_path: Path) -> None:
    m = Minion(tmp_path, site.host)
    real = m.state("atoll_update.prepared")
    assert real["result"] is True and real["changes"]["steps"] == ["download", "prepare"]
    st = site.status()
    assert st["prepared"]["version"] == "2" and st["pending"] is None
    assert m.state("atoll_update.prepared")["changes"] == {}
    gone = m.state("atoll_app.absent")  # no app named atoll installed: nothing to do
    assert gone["result"] is True and gone["changes"] == {}


def test_update_state_failing_partway_reports_what_changed(site: AtollSite,
                                                            tmp_path: Path) -> None:
    """The download done, the apply refused (its FleetLock server does not answer)."""
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    subprocess.run([str(ATOLL), "-q", "--sysroot", str(site.host), "policy", "set",
                    "--fleet-lock", f"http://127.0.0.1:{port}", "--reboot"], check=True)
    m = Minion(tmp_path, site.host)
    ret = m.state("atoll_update.pending", "reboot=True")
    assert ret["result"] is False and ret["rc"] != 0, ret
    assert ret["comment"].startswith("atoll: ") and ret["comment"].endswith("(done: download)")
    st = site.status()
    assert st["pending"] is None and st["update"]["state"] != "available"
    assert ret["changes"] == {"steps": ["download"], "version": "2",
                              "update_state": {"old": "available", "new": st["update"]["state"]},
                              "pending": {"old": None, "new": None}, "needs_reboot": False}


BEACON = """
import json, sys
import salt.config, salt.loader
opts = salt.config.minion_config(sys.argv[1])
opts["grains"] = salt.loader.grains(opts)
beacons = salt.loader.beacons(opts, salt.loader.minion_mods(opts))
cfg = [{"sysroot": sys.argv[2]}, {"interval": 5}]
assert beacons["atoll.validate"](cfg)[0]
print(json.dumps(beacons["atoll.beacon"](cfg)))
"""


def test_beacon_fires_on_update_and_rollback(site: AtollSite, tmp_path: Path) -> None:
    """Each interval in a new process, as a minion restarted by the reboot it reports."""
    m = Minion(tmp_path, site.host)
    assert m.state("atoll_update.downloaded")["result"] is True

    def interval() -> list[dict[str, Any]]:
        proc = subprocess.run([str(VENV / "bin/python"), "-c", BEACON, str(m.conf / "minion"),
                               str(site.host)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return list(json.loads(proc.stdout.splitlines()[-1]))

    assert interval() == []  # the first interval records
    assert interval() == []  # nothing happened
    subprocess.run([str(ATOLL), "-q", "--sysroot", str(site.host), "update", "apply"],
                   check=True)
    applied = interval()
    assert [e["tag"] for e in applied] == ["update-pending"] and applied[0]["version"] == "2"
    st = site.status()
    booted, pending = st["booted"]["id"], st["pending"]["id"]
    (site.host / "run/atoll/booted").write_text(pending + "\n")  # the reboot into it
    rebooted = interval()
    assert [e["tag"] for e in rebooted] == ["booted"] and rebooted[0]["version"] == "2"
    assert rebooted[0]["previous"] == "1"
    # its health check fails: the boot layer records it and rolls back
    with open(site.host / "atoll/state/events.jsonl", "a") as f:
        f.write(json.dumps({"time": "2026-11-29T12:00:00Z", "event": "boot",
                            "deployment": pending, "result": "rolled-back",
                            "reason": "required check db failed", "checks": []}) + "\n")
    (site.host / "run/atoll/booted").write_text(booted + "\n")
    rolled = interval()
    assert "rollback" in [e["tag"] for e in rolled]
    rb = next(e for e in rolled if e["tag"] == "rollback")
    assert rb["reason"] == "required check db failed" and rb["version"] == "1"
    assert interval() == []  # fired once


def test_bad_input_and_not_an_atoll_host(site: AtollSite, tmp_path: Path) -> None:
    m = Minion(tmp_path, site.host)
    proc = m.run("atoll.apply", "reboot=True", "window=True")  # Salt's usage error
    assert "Passed invalid arguments: give one of reboot, at, window" in proc.stderr
    assert site.status()["pending"] is None
    proc = m.run("atoll.app_install", "mariadb", "secrets=s3cr3t")  # not a mapping
    assert "Passed invalid arguments: secrets: give a mapping" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    (tmp_path / "plain").mkdir()
    other = Minion(tmp_path / "plain", tmp_path / "plain")
    rc, out = other.call("atoll.status")
    assert rc != 0 and "atoll: " in str(out) and "not an atoll sysroot" in str(out)
    assert "Traceback" not in str(out)
    for fun in ("atoll_update.pending", "atoll_app.absent"):  # the states: result False
        ret = other.state(fun)
        assert ret["result"] is False and ret["rc"] != 0, ret
        assert ret["comment"].startswith("atoll: ") and "not an atoll " in ret["comment"]
        assert "Traceback" not in json.dumps(ret) and "Additional info" not in ret["comment"]
