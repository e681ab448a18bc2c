"""Real ansible-core driving real atoll sysroots: the venv, a host, playbook runs.

ansible-core lives in its own venv, ``.venv-ansible`` beside atoll's (built from
``integrations/ansible/requirements.txt`` when missing or older than that file), so
atoll's dependencies are not disturbed. ``ansible-test`` keeps its sanity venvs and the
pip bootstrap under ``.venv-ansible/home`` (its ``HOME``; docs/ansible-salt.md says why
the bootstrap is a stand-in).

``AtollSite`` is a publisher with a www/ on HTTP and a host (a sysroot) that booted
version 1 from it, with version 2 published: a real update to take.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atoll.cli import main
from atoll.deploy.sysroot import Sysroot
from atoll.store.repo import Repo
from tests.integration.delivery_fixtures import snapshot_dirs

ROOT = Path(__file__).resolve().parents[2]
INTEGRATIONS = ROOT / "integrations/ansible"
COLLECTION = INTEGRATIONS / "ansible_collections/atoll/os"
VENV = ROOT / ".venv-ansible"
ANSIBLE_HOME = VENV / "home"
ATOLL = ROOT / ".venv/bin/atoll"


def ansible_venv() -> Path:
    """The venv with ansible-core (built once; rebuilt when the requirements change)."""
    req = INTEGRATIONS / "requirements.txt"
    stamp = VENV / ".installed"
    if not (VENV / "bin/python").exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(VENV)], check=True)
    if not stamp.exists() or stamp.stat().st_mtime < req.stat().st_mtime:
        subprocess.run([str(VENV / "bin/pip"), "install", "-q", "-r", str(req)], check=True)
        stamp.touch()
    # ansible-test fetches a pip bootstrap script from a host these machines cannot reach;
    # it reads a cached copy first (its error message names the place)
    pip = subprocess.run(
        [str(VENV / "bin/python"), "-c", "from types import SimpleNamespace as N; from "
         "ansible_test._internal.python_requirements import get_venv_packages as g; "
         "print(g(N(version='3.11'))['pip'])"], check=True, capture_output=True, text=True
    ).stdout.strip()
    cache = ANSIBLE_HOME / ".ansible/test/cache" / f"get_pip_{pip.replace('.', '_')}.py"
    cache.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(INTEGRATIONS / "tests/get_pip_standin.py", cache)
    return VENV


def ansible_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "ATOLL_"))}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(INTEGRATIONS),
               ANSIBLE_CALLBACK_PLUGINS=str(INTEGRATIONS / "tests/callback"),
               ANSIBLE_STDOUT_CALLBACK="atoll_test_json",
               ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_PIPELINING="1",
               ANSIBLE_LOCAL_TEMP=str(ANSIBLE_HOME / "tmp"), **extra)
    return env


def make_tree(root: Path, version: int) -> Path:
    rnd = random.Random(version)
    for d in ("usr/bin", "usr/etc", "etc", "var"):
        (root / d).mkdir(parents=True)
    (root / "usr/bin/db-tool").write_bytes(rnd.randbytes(100_000))
    (root / "usr/etc/os-release").write_text(f"VERSION={version}\n")
    return root


class AtollSite:
    """A publisher (store, keys, www/ on ``url``) and a host that runs version 1."""

    def __init__(self, tmp: Path, url: str):
        self.tmp = tmp
        self.pub = Repo.create(tmp / "pub")
        self.www, self.keys, self.host = tmp / "www", tmp / "keys", tmp / "host"
        assert main(["-q", "keys", "init", str(self.keys), "--to", str(self.www)]) == 0
        self.publish(1)
        sr = Sysroot(self.host)
        sr.init()
        (self.host / "etc").mkdir()
        (self.host / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
        assert main(["-q", "--sysroot", str(self.host), "remote", "add", "origin", url,
                     "--root", str(self.www / "metadata/root.json")]) == 0
        assert main(["-q", "--sysroot", str(self.host), "update", "download"]) == 0
        dep = sr.deploy("origin:site/base")
        (self.host / "run/atoll").mkdir(parents=True, exist_ok=True)
        (self.host / "run/atoll/booted").write_text(dep.id + "\n")
        self.sr = sr

    def publish(self, version: int) -> str:
        cid = self.pub.commit_dir(make_tree(self.tmp / f"t{version}", version),
                                  ref="site/base", version=str(version),
                                  manifest=[{"name": "db-tool", "version": str(version)}])
        assert main(["-q", "publish", "site/base", "--repo", str(self.pub.path), "--to",
                     str(self.www), "--keys", str(self.keys)]) == 0
        return cid

    def status(self) -> dict[str, Any]:
        out = subprocess.run([str(ATOLL), "--json", "--sysroot", str(self.host), "status"],
                             check=True, capture_output=True, text=True).stdout
        return dict(json.loads(out))


def host_state(sysroot: Path) -> dict[str, tuple[int, int, bytes | str]]:
    """What an update, a rollback or a policy change writes: the store (objects, refs),
    deployments and boot order, the prepared record, the policy; not the time of the last
    check, the signed metadata it refreshes, nor what it records of the target (its CVEs):
    check mode asks the remote, as `atoll update check` does."""
    snap = snapshot_dirs(sysroot, ("atoll/repo", "atoll/state", "atoll/deploy", "boot"))
    return {k: v for k, v in snap.items()
            if k != "atoll/state/update.json" and not k.startswith("atoll/state/cves/")
            and not k.endswith("/lock")
            and "/metadata" not in k.partition("atoll/state/remotes/")[2]}


@dataclass
class PlaybookRun:
    """One ``ansible-playbook`` run read from the json callback."""

    rc: int
    doc: dict[str, Any]
    stderr: str
    stdout: str = ""  # all of it: what -v..-vvvv printed, then the callback's line

    def stats(self, host: str = "host1") -> dict[str, int]:
        return dict(self.doc["stats"][host])

    def task(self, name: str, host: str = "host1") -> dict[str, Any]:
        for play in self.doc["plays"]:
            for t in play["tasks"]:
                if t["task"]["name"] == name:
                    return dict(t["hosts"][host])
        raise KeyError(name)


def run_playbook(workdir: Path, playbook: str, inventory: str, *args: str,
                 env: dict[str, str] | None = None) -> PlaybookRun:
    """Write and run a playbook against ``inventory`` (INI text); never raises on failure."""
    (workdir / "site.yml").write_text(playbook)
    (workdir / "inventory.ini").write_text(inventory)
    (ANSIBLE_HOME / "tmp").mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [str(VENV / "bin/ansible-playbook"), "-i", str(workdir / "inventory.ini"),
         str(workdir / "site.yml"), *args], cwd=workdir, env=env or ansible_env(),
        capture_output=True, text=True, timeout=600)
    try:  # the callback's one line, after whatever -v printed
        doc = json.loads(next(line for line in reversed(proc.stdout.splitlines())
                              if line.startswith('{"plays"')))
    except (StopIteration, ValueError):
        raise AssertionError(f"ansible-playbook printed no JSON (exit {proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}") from None
    return PlaybookRun(proc.returncode, doc, proc.stderr, proc.stdout)


def inventory_for(sysroot: Path) -> str:
    """One host, ``connection: local``, whose modules act on ``sysroot``."""
    return ("[atoll]\n"
            f"host1 ansible_connection=local ansible_python_interpreter={VENV}/bin/python "
            f"atoll_sysroot={sysroot} atoll_executable={ATOLL}\n")


PLAY_HEAD = """
- hosts: atoll
  gather_facts: false
  module_defaults:
    group/atoll.os.atoll:
      sysroot: "{{ atoll_sysroot }}"
      executable: "{{ atoll_executable }}"
  tasks:
"""

__all__ = ["ATOLL", "COLLECTION", "PLAY_HEAD", "AtollSite", "PlaybookRun", "ansible_env",
           "ansible_venv", "host_state", "inventory_for", "run_playbook"]
