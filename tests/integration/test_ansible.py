"""The atoll.os Ansible collection with real ansible-core against real atoll hosts.

A host here is a sysroot that booted version 1 from a real update repository on HTTP
(127.0.0.1), with version 2 published; playbooks reach it with ``connection: local`` and
the modules' ``sysroot`` option (as `atoll --sysroot`). The promises tested: check mode
predicts exactly what the real run then does and changes nothing; a second run reports
``changed=false``; ``needs_reboot`` is true while an applied update waits for its reboot;
bad parameters get Ansible's own validation errors, a host that is not an atoll host
atoll's message. The inventory plugin and atoll_rollout run against a real control plane.
``ansible-test sanity`` runs on the collection as its authors' CI would.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.ansible_fixtures import (
    ANSIBLE_HOME,
    ATOLL,
    COLLECTION,
    PLAY_HEAD,
    VENV,
    AtollSite,
    ansible_env,
    ansible_venv,
    host_state,
    inventory_for,
    run_playbook,
)
from tests.integration.apps_fixtures import *  # noqa: F403  (fixtures: app_env, ...)
from tests.integration.apps_fixtures import AppEnv
from tests.integration.delivery_fixtures import serve_www

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def venv() -> Path:
    return ansible_venv()


@pytest.fixture
def site(tmp_path: Path, venv: Path) -> Iterator[AtollSite]:
    (tmp_path / "www").mkdir()
    with serve_www(tmp_path / "www") as server:
        s = AtollSite(tmp_path, server.url)
        s.publish(2)
        yield s


UPDATE = PLAY_HEAD + """
    - name: update
      atoll.os.atoll_update:
        state: pending
    - name: facts
      atoll.os.atoll_facts:
        gather: [packages]
"""


def test_update_check_mode_predicts_then_idempotent(site: AtollSite, tmp_path: Path) -> None:
    inv = inventory_for(site.host)
    v1 = site.status()["booted"]

    before = host_state(site.host)
    check = run_playbook(tmp_path, UPDATE, inv, "--check", "--diff")
    assert check.rc == 0, check.stderr
    predicted = check.task("update")
    assert predicted["changed"] is True and predicted["needs_reboot"] is True
    assert predicted["update_state"] == "pending" and predicted["target"]["version"] == "2"
    assert predicted["packages"]["upgraded"] == [{"name": "db-tool", "old": "1", "new": "2"}]
    assert predicted["diff"]["before"]["update_state"] == "available"
    assert host_state(site.host) == before, "check mode changed the host"
    assert site.status()["pending"] is None

    real = run_playbook(tmp_path, UPDATE, inv, "--diff")
    assert real.rc == 0, real.stderr
    done = real.task("update")
    for key in ("changed", "needs_reboot", "update_state", "target", "packages", "diff"):
        assert done[key] == predicted[key], key
    for key in ("version", "commit"):  # the deployment check mode predicts, by what it holds
        assert predicted["pending"][key] == done["pending"][key], key
    assert predicted["pending"]["id"] is None and predicted["prepared"] == done["prepared"]
    assert done["diff"]["after"]["next_boot"] == f"2 ({done['target']['commit'][:12]})"
    st = site.status()
    assert st["pending"]["version"] == "2" and st["booted"]["id"] == v1["id"]
    assert done["pending"]["id"] == st["pending"]["id"]
    facts = real.task("facts")["ansible_facts"]["atoll"]
    assert facts["version"] == "1" and facts["needs_reboot"] is True
    assert facts["pending"]["version"] == "2" and facts["update"]["state"] == "pending"
    assert facts["packages"] == [{"name": "db-tool", "version": "1"}]

    again = run_playbook(tmp_path, UPDATE, inv)
    assert again.rc == 0 and again.stats()["changed"] == 0
    assert again.task("update")["needs_reboot"] is True  # still waiting for its reboot
    check2 = run_playbook(tmp_path, UPDATE, inv, "--check")
    assert check2.stats()["changed"] == 0


STEPS = PLAY_HEAD + """
    - name: download
      atoll.os.atoll_update:
        state: downloaded
    - name: prepare
      atoll.os.atoll_update:
        state: prepared
"""


def test_download_and_prepare_steps(site: AtollSite, tmp_path: Path) -> None:
    inv = inventory_for(site.host)
    check = run_playbook(tmp_path, STEPS, inv, "--check", "--diff")
    assert check.rc == 0, check.stderr
    assert check.task("download")["changed"] and check.task("download")["download_bytes"] > 0
    real = run_playbook(tmp_path, STEPS, inv, "--diff")
    assert real.rc == 0, real.stderr
    assert real.task("download")["changed"] and real.task("prepare")["changed"]
    assert real.task("download")["diff"] == check.task("download")["diff"]
    assert real.task("prepare")["diff"]["after"] == check.task("prepare")["diff"]["after"]
    prep = real.task("prepare")
    assert check.task("prepare")["prepared"]["commit"] == prep["prepared"]["commit"]
    assert prep["update_state"] == "prepared" and prep["needs_reboot"] is False
    st = site.status()
    assert st["prepared"]["version"] == "2" and st["pending"] is None  # not the next boot
    again = run_playbook(tmp_path, STEPS, inv)
    assert again.stats()["changed"] == 0


ROLLBACK = PLAY_HEAD + """
    - name: rollback
      atoll.os.atoll_rollback:
"""


def test_rollback_is_idempotent_and_predicted(site: AtollSite, tmp_path: Path) -> None:
    inv = inventory_for(site.host)
    assert run_playbook(tmp_path, UPDATE, inv).rc == 0  # v2 pending
    booted = site.status()["booted"]["id"]
    before = host_state(site.host)
    check = run_playbook(tmp_path, ROLLBACK, inv, "--check", "--diff")
    assert check.rc == 0, check.stderr
    predicted = check.task("rollback")
    assert predicted["changed"] and predicted["next_boot"]["id"] == booted
    assert predicted["needs_reboot"] is False
    assert host_state(site.host) == before
    real = run_playbook(tmp_path, ROLLBACK, inv, "--diff")
    done = real.task("rollback")
    assert done["changed"] and done["next_boot"] == predicted["next_boot"]
    assert done["diff"] == predicted["diff"]
    assert done["needs_reboot"] is False and done["rollback_available"] is True
    st = site.status()
    assert st["deployments"][0]["id"] == booted and st["rollback"]["version"] == "2"
    again = run_playbook(tmp_path, ROLLBACK, inv)
    assert again.stats()["changed"] == 0
    assert site.status()["deployments"][0]["id"] == booted  # not toggled back


SCHEDULE = PLAY_HEAD + """
    - name: schedule
      atoll.os.atoll_update:
        state: "{{ want }}"
        window: "{{ want == 'scheduled' }}"
"""


def schedule_and_cancel(site: AtollSite, tmp_path: Path, inv: str) -> None:
    """With a maintenance window in the policy: scheduled, then cancelled."""
    agent_json = site.host / "atoll/state/agent.json"

    def request() -> object:
        return json.loads(agent_json.read_text()).get("request") if agent_json.exists() \
            else None

    for want in ("scheduled", "cancelled"):
        before = request()
        check = run_playbook(tmp_path, SCHEDULE, inv, "--check", "-e", f"want={want}")
        assert check.rc == 0, check.stderr
        assert check.task("schedule")["changed"] is True and request() == before
        real = run_playbook(tmp_path, SCHEDULE, inv, "-e", f"want={want}")
        assert real.task("schedule")["changed"] is True
        got = real.task("schedule")["request"]
        assert (got["kind"] == "window") if want == "scheduled" else got is None
        again = run_playbook(tmp_path, SCHEDULE, inv, "-e", f"want={want}")
        assert again.stats()["changed"] == 0


POLICY = PLAY_HEAD + """
    - name: policy
      atoll.os.atoll_policy:
        mode: prepare
        windows: ["Sat,Sun 02:00-04:00 Europe/Berlin"]
        reboot: false
        interval: 7200
        security_threshold: medium
"""


NO_REMOTE = PLAY_HEAD + """
    - name: policy
      atoll.os.atoll_policy:
        remote: nosuch
"""


BAD_WINDOW = PLAY_HEAD + """
    - name: policy
      atoll.os.atoll_policy:
        windows: ["{{ window }}"]
"""


def test_policy_and_scheduled_apply(site: AtollSite, tmp_path: Path) -> None:
    inv = inventory_for(site.host)
    # no window in the policy yet: atoll refuses the request, and check mode says so too
    for args in (("--check",), ()):
        refused = run_playbook(tmp_path, SCHEDULE, inv, "-e", "want=scheduled", *args)
        res = refused.task("schedule")
        assert res["failed"] and res["msg"] == "atoll: no maintenance windows are configured"
        assert res["exit_code"] == 2
    policy = site.host / "atoll/state/policy.json"
    before = policy.read_bytes() if policy.exists() else None
    for args in (("--check",), ()):  # a remote the host lacks: refused, in check mode too
        res = run_playbook(tmp_path, NO_REMOTE, inv, *args).task("policy")
        assert res["failed"] and res["msg"] == f"atoll: no remote 'nosuch' on {site.host}"
    assert (policy.read_bytes() if policy.exists() else None) == before
    for window in ("Funday 02:00-04:00 UTC", "Sat 02:00-04:00 Mars/Olympus", "Sat 2-4"):
        runs = [run_playbook(tmp_path, BAD_WINDOW, inv, "-e", json.dumps({"window": window}), *args)
                .task("policy") for args in (("--check",), ())]
        assert all(r["failed"] for r in runs), runs
        assert runs[0]["msg"] == runs[1]["msg"] and runs[0]["msg"].startswith(
            f"atoll: --window {window!r}: "), runs
    assert (policy.read_bytes() if policy.exists() else None) == before
    check = run_playbook(tmp_path, POLICY, inv, "--check", "--diff")
    predicted = check.task("policy")
    assert predicted["changed"] and predicted["diff"]["after"]["mode"] == "prepare"
    assert (policy.read_bytes() if policy.exists() else None) == before
    real = run_playbook(tmp_path, POLICY, inv)
    done = real.task("policy")
    assert done["changed"] and done["policy"] == predicted["policy"]
    shown = json.loads(subprocess.run(
        [str(ATOLL), "--json", "--sysroot", str(site.host), "policy", "show"],
        check=True, capture_output=True, text=True).stdout)
    assert shown["mode"] == "prepare" and shown["reboot"] is False
    assert shown["windows"] == ["Sat,Sun 02:00-04:00 Europe/Berlin"]
    assert shown["security_threshold"] == "medium"
    assert run_playbook(tmp_path, POLICY, inv).stats()["changed"] == 0
    schedule_and_cancel(site, tmp_path, inv)


BAD_TYPE = PLAY_HEAD + """
    - name: bad
      atoll.os.atoll_update:
        state: installed
"""

NOT_ATOLL = PLAY_HEAD + """
    - name: facts
      atoll.os.atoll_facts:
      ignore_errors: true
    - name: app
      atoll.os.atoll_app:
        name: mariadb
        state: absent
"""

SECRET = PLAY_HEAD + """
    - name: app
      atoll.os.atoll_app:
        name: "no such app!"
        spec: /nonexistent/spec.yaml
        secrets:
          root_password: s3cr3t-do-not-show
"""


MISSING_SPEC = PLAY_HEAD + """
    - name: app
      atoll.os.atoll_app:
        name: mariadb
        spec: /nonexistent/spec.yaml
"""


def test_bad_input_and_not_an_atoll_host(site: AtollSite, tmp_path: Path) -> None:
    bad = run_playbook(tmp_path, BAD_TYPE, inventory_for(site.host))
    res = bad.task("bad")
    assert bad.rc != 0 and res["failed"]
    assert "value of state must be one of" in res["msg"] and "Traceback" not in json.dumps(res)

    (tmp_path / "plain").mkdir()
    other = run_playbook(tmp_path, NOT_ATOLL, inventory_for(tmp_path / "plain"))
    res = other.task("facts")
    assert res["failed"] and res["msg"].startswith("atoll: ")
    assert "not an atoll sysroot" in res["msg"] and res["exit_code"] == 7
    assert res["error"] == "HostStateError" and res["resolution"]
    app = other.task("app")  # `atoll app list` alone would find no app there: "absent"
    assert app["failed"] and "not an atoll sysroot" in app["msg"]

    # a spec the install cannot read: check mode fails as the real run does
    runs = [run_playbook(tmp_path, MISSING_SPEC, inventory_for(site.host), *args).task("app")
            for args in (("--check",), ())]
    assert all(r["failed"] for r in runs), runs
    assert runs[0]["msg"] == runs[1]["msg"] == (
        "atoll: spec /nonexistent/spec.yaml: cannot read: No such file or directory")

    leaked = run_playbook(tmp_path, SECRET, inventory_for(site.host), "-vvv")
    assert leaked.task("app")["failed"]
    assert "s3cr3t-do-not-show" not in json.dumps(leaked.doc) + leaked.stderr


APP = PLAY_HEAD + """
    - name: app
      atoll.os.atoll_app: &app
        name: "{{ app }}"
        state: "{{ want }}"
        spec: "{{ spec }}"
        secrets:
          root-password: "SECRET"
    - name: again
      atoll.os.atoll_app: *app
      when: not ansible_check_mode
"""


def test_app_lifecycle_on_docker(app_env: AppEnv, tmp_path: Path, venv: Path) -> None:
    """atoll_app against a real app (MariaDB) on a real Docker: install (the secret a
    no_log parameter, absent from -vvv), stop, start, remove each change once, then the same
    task again changes nothing; check mode before each predicts it and changes nothing."""
    import atoll.apps
    from atoll.apps.plan import container_name
    from atoll.deploy.sysroot import Sysroot

    Sysroot(app_env.sysroot).init()  # an atoll host with no deployment yet
    app, secret = app_env.name(), f"s3cr3t-{os.urandom(8).hex()}"
    spec = Path(atoll.apps.__file__).parent / "specs/mariadb.yaml"
    play = APP.replace("SECRET", secret)
    inv, env = inventory_for(app_env.sysroot), ansible_env(DOCKER_HOST=app_env.url)
    state_dir = app_env.sysroot / "var/lib/atoll/apps" / app

    def run(want: str, *args: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        r = run_playbook(tmp_path, play, inv, "-e", f"app={app}", "-e", f"want={want}",
                         "-e", f"spec={spec}", "--diff", *args, env=env)
        assert r.rc == 0, json.dumps(r.doc)[-3000:] + r.stderr[-3000:]
        out = r.stdout + r.stderr + json.dumps(r.doc)
        assert secret not in out
        if "-vvv" in args:  # the secret was there, masked
            assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in out and "<host1> EXEC" in out
        return r.task("app"), None if "--check" in args else r.task("again")

    def container() -> str | None:
        info = app_env.runtime.inspect(container_name(app))
        return None if info is None else info.status

    predicted, _ = run("started", "--check")
    assert predicted["changed"] is True and predicted["app"] is None
    assert predicted["diff"]["after"] == {"installed": True, "status": "running"}
    assert container() is None and not state_dir.exists(), "check mode changed the host"

    done, again = run("started", "-vvv")
    assert done["changed"] is True and done["diff"] == predicted["diff"]
    assert done["app"]["container"]["status"] == "running" == container()
    assert done["app"]["secrets"] == ["monitor-password", "root-password"]
    (arg,) = [a for cmd in done["commands"] for a in cmd if a.startswith("root-password=@")]
    assert not Path(arg.partition("@")[2]).parent.exists()  # the secret's file is gone
    res = app_env.runtime.exec(container_name(app),
                               ["mysql", "-uroot", f"-p{secret}", "-sN", "-e", "SELECT 7"])
    assert res.stdout.strip() == b"7"  # the secret given is the root password
    assert again is not None and again["changed"] is False

    for want, status in (("stopped", "exited"), ("started", "running")):
        was = container()
        predicted, _ = run(want, "--check")
        assert predicted["changed"] is True and container() == was
        done, again = run(want)
        assert done["changed"] is True and done["app"]["container"]["status"] == status
        assert done["diff"] == predicted["diff"] and predicted["diff"]["after"]["status"] == status
        assert status == container()
        assert again is not None and again["changed"] is False

    predicted, _ = run("absent", "--check")
    assert predicted["changed"] is True and container() == "running" and state_dir.exists()
    done, again = run("absent")
    assert done["changed"] is True and done["app"] is None and done["diff"] == predicted["diff"]
    assert container() is None and not state_dir.exists()
    assert again is not None and again["changed"] is False


HOST_CONFIG = PLAY_HEAD + """
    - name: host config
      atoll.os.atoll_host_config:
        src: "{{ src }}"
        root: "{{ root }}"
        phase: "{{ phase | default(omit) }}"
        apps: "{{ apps | default(true) }}"
"""


def test_host_config_check_mode_honours_phase_and_apps(site: AtollSite, tmp_path: Path) -> None:
    """Check mode predicts from the record of the last apply and the phases the task runs."""
    inv = inventory_for(site.host)
    (tmp_path / "root").mkdir()
    (tmp_path / "site.yaml").write_text("hostname: db01\n")  # no apps
    base = ("-e", f"src={tmp_path / 'site.yaml'}", "-e", f"root={tmp_path / 'root'}")
    record = tmp_path / "root/var/lib/atoll/provision/applied.json"

    def check_then_real(*extra: str) -> bool:
        was = record.read_bytes() if record.exists() else None
        check = run_playbook(tmp_path, HOST_CONFIG, inv, "--check", *base, *extra)
        assert check.rc == 0, check.stderr
        assert (record.read_bytes() if record.exists() else None) == was, "check mode wrote"
        real = run_playbook(tmp_path, HOST_CONFIG, inv, *base, *extra)
        assert real.rc == 0, real.stderr
        assert check.task("host config")["changed"] == real.task("host config")["changed"]
        return bool(real.task("host config")["changed"])

    # nothing applied yet, but the apps phase of a config without apps changes nothing
    assert check_then_real("-e", "phase=apps") is False
    assert check_then_real("-e", "apps=false") is True  # the system phase, never applied
    assert check_then_real("-e", "apps=false") is False
    assert check_then_real() is False  # both phases: the apps one has nothing to do
    assert check_then_real("-e", "phase=apps", "-e", "apps=false") is False  # no phase at all


def unsafe_free(v: Any) -> Any:
    """``ansible-inventory --list`` marks what an inventory source gave as not to be
    templated (``{"__ansible_unsafe": "1"}``, ansible-core 2.19): the plain values."""
    if isinstance(v, dict):
        if set(v) == {"__ansible_unsafe"}:
            return v["__ansible_unsafe"]
        return {k: unsafe_free(x) for k, x in v.items()}
    if isinstance(v, list):
        return [unsafe_free(x) for x in v]
    return v


INJECTED = "{{ 6 * 7 }}"
SHOW_REASON = """
- hosts: db2
  gather_facts: false
  tasks:
    - name: reason
      ansible.builtin.debug:
        msg: "{{ atoll_booted_version }}"
"""


def test_inventory_plugin_and_rollout_on_a_control_plane(tmp_path: Path, venv: Path) -> None:
    from atoll.control.db import Database
    from tests.integration.control_fixtures import SimHost, commit_of, start_control

    db = Database(f"sqlite:///{tmp_path}/control.db")
    db.upgrade()
    control = start_control(db)
    try:
        control.customer("acme")
        operator = control.token("ops", "operator", ["acme"])
        for name, role in (("db1", "db"), ("db2", "db"), ("web1", "web")):
            h = SimHost(control.server.url, name)
            assert h.enrol(control.enrol_token("acme", labels={"role": role}))[0] == 200
            # what a host reports is data: a template in it must never run on the controller
            assert h.checkin(version=INJECTED if name == "db2" else "1")[0] == 200
        token_file = tmp_path / "fleet-token"
        token_file.write_text(operator + "\n")
        token_file.chmod(0o600)
        (tmp_path / "fleet.atoll_fleet.yml").write_text(
            f"plugin: atoll.os.atoll_fleet\nserver: {control.server.url}\n"
            f"token_file: {token_file}\nlabels: {{role: db}}\n")
        env = ansible_env()
        out = subprocess.run([str(VENV / "bin/ansible-inventory"), "-i",
                              str(tmp_path / "fleet.atoll_fleet.yml"), "--list"],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        inv = json.loads(out.stdout)
        assert sorted(inv["atoll_label_role_db"]["hosts"]) == ["db1", "db2"]
        assert sorted(inv["atoll_customer_acme"]["hosts"]) == ["db1", "db2"]
        hv = unsafe_free(inv["_meta"]["hostvars"]["db1"])
        assert hv["atoll_booted_version"] == "1" and hv["atoll_labels"] == {"role": "db"}
        assert hv["atoll_customer"] == "acme" and hv["atoll_update_state"] == "up-to-date"
        assert operator not in out.stdout + out.stderr
        shown = run_playbook(tmp_path, SHOW_REASON, "", "-i",
                             str(tmp_path / "fleet.atoll_fleet.yml"))
        assert shown.rc == 0, json.dumps(shown.doc)[-3000:]
        assert shown.task("reason", "db2")["msg"] == INJECTED  # not 42

        play = f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - name: rollout
      atoll.os.atoll_rollout:
        id: db-2
        state: "{{{{ want }}}}"
        server: {control.server.url}
        token_file: {token_file}
        customer: acme
        labels: {{role: db}}
        channel: site/db
        versions:
          - {{version: "1", commit: {commit_of("1")}}}
          - {{version: "2", commit: {commit_of("2")}}}
        to_version: "{{{{ to | default('2') }}}}"
        spec: {{waves: [50, 100], soak_s: 60}}
"""
        local = "[local]\nlocalhost ansible_connection=local " \
                f"ansible_python_interpreter={VENV}/bin/python\n"

        def rollout(want: str, *args: str) -> dict[str, object]:
            r = run_playbook(tmp_path, play, local, "-e", f"want={want}", *args)
            return r.task("rollout", "localhost")

        predicted = rollout("running", "--check")
        assert predicted["changed"] and predicted["rollout"] is None
        status, _ = control.api.call("GET", "/v1/rollouts/db-2")
        assert status == 404  # check mode created nothing
        made = rollout("running")
        assert made["changed"] and made["rollout"]["state"] == "running"
        assert made["rollout"]["members"] == 2
        assert not rollout("running")["changed"]
        other = rollout("running", "-e", "to=1")  # the same id, another target: not "ok"
        assert other["failed"] and "to_version: '2', not '1'" in other["msg"]
        assert rollout("halted", "--check")["changed"]
        assert control.api.call("GET", "/v1/rollouts/db-2")[1]["state"] == "running"
        halted = rollout("halted")
        assert halted["changed"] and halted["rollout"]["state"] == "halted"
        assert not rollout("halted")["changed"]
        assert rollout("running")["rollout"]["state"] == "running"  # resumed
    finally:
        control.server.stop()
        db.close()


def test_ansible_test_sanity(venv: Path) -> None:
    """`ansible-test sanity --venv --python 3.11`, all of its tests (24 in ansible-core
    2.19: validate-modules, pylint, pep8, ansible-doc, yamllint, import, compile...)."""
    env = ansible_env(HOME=str(ANSIBLE_HOME))
    proc = subprocess.run(
        [str(VENV / "bin/ansible-test"), "sanity", "--venv", "--python", "3.11", "--color",
         "no"],
        cwd=COLLECTION, env=env, capture_output=True, text=True, timeout=900)
    try:
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    finally:
        subprocess.run(["rm", "-rf", str(COLLECTION / "tests/output")], check=False)



def test_collection_builds_and_installs(tmp_path: Path, venv: Path) -> None:
    """`ansible-galaxy collection build`, then the tarball installed elsewhere documents
    its modules (what a user of the tarball gets)."""
    env = ansible_env()
    subprocess.run([str(VENV / "bin/ansible-galaxy"), "collection", "build", "--output-path",
                    str(tmp_path), str(COLLECTION)], env=env, check=True, capture_output=True)
    (tarball,) = tmp_path.glob("atoll-os-*.tar.gz")
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    assert {"MANIFEST.json", "meta/runtime.yml", "plugins/modules/atoll_update.py",
            "plugins/inventory/atoll_fleet.py",
            "plugins/module_utils/atoll_cli.py"} <= names
    assert not any(n.startswith("tests/output") or "__pycache__" in n for n in names)
    env["ANSIBLE_COLLECTIONS_PATH"] = str(tmp_path / "installed")  # not the source tree
    subprocess.run([str(VENV / "bin/ansible-galaxy"), "collection", "install", str(tarball),
                    "-p", str(tmp_path / "installed")], env=env, check=True,
                   capture_output=True)
    doc = subprocess.run([str(VENV / "bin/ansible-doc"), "--json", "-t", "module",
                          "atoll.os.atoll_update"], env=env, check=True, capture_output=True,
                         text=True).stdout
    module = json.loads(doc)
    assert list(module) == ["atoll.os.atoll_update"], doc[:2000]
    module = module["atoll.os.atoll_update"]
    assert "needs_reboot" in module["return"]
    assert module["doc"]["options"]["state"]["choices"] == [
        "checked", "downloaded", "prepared", "pending", "scheduled", "cancelled"]


def test_update_prepare_command(site: AtollSite) -> None:
    """`atoll update prepare`, the step `state: prepared` needs (atoll's own command)."""
    def prepare() -> tuple[int, dict[str, Any]]:
        proc = subprocess.run([str(ATOLL), "--json", "--sysroot", str(site.host), "update",
                               "prepare"], capture_output=True, text=True)
        return proc.returncode, json.loads(proc.stdout)

    def atoll(*args: str) -> None:
        subprocess.run([str(ATOLL), "-q", "--sysroot", str(site.host), *args], check=True,
                       capture_output=True)

    atoll("update", "check")
    rc, out = prepare()
    assert rc == 7 and out["error"] == "HostStateError" and "not downloaded" in out["brief"]
    assert site.status()["prepared"] is None
    atoll("update", "download")
    rc, out = prepare()
    assert rc == 0 and out["changed"] is True and out["prepared"]["version"] == "2"
    st = site.status()
    assert st["prepared"]["id"] == out["prepared"]["id"] and st["pending"] is None
    rc, again = prepare()
    assert rc == 0 and again["changed"] is False
    assert again["prepared"]["id"] == st["prepared"]["id"] and "already prepared" in again["note"]
    atoll("update", "apply")
    rc, out = prepare()
    assert rc == 0 and out["changed"] is False and out["prepared"] is None
