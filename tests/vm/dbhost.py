"""A provisioned database host in QEMU: the fixtures' building blocks.

* :func:`composed_dbhost`: examples/db-host.yaml composed (boot, docker with the
  MariaDB image shipped inside, agent, checkmk, provision), once per inputs;
* :func:`derive`: a new commit made from an existing one plus a change (the
  tests' v2 and the broken v3), without composing again;
* :class:`Site`: a host config like an operations team writes, with its own
  SSH key and DB secret, following the test's update server;
* :class:`Guest`: SSH into the VM over a forwarded loopback port, with a real
  ``ssh`` client and the site's key.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from atoll.boot.devsysroot import _source_hash, prune_cache
from atoll.compose.build import compose
from atoll.compose.treefile import load_treefile
from atoll.store import Repo
from atoll.store.checkout import checkout
from tests.compose_fixtures import deb_cache
from tests.conftest import ROOT

TREEFILE = ROOT / "examples" / "db-host.yaml"


def composed_dbhost(cache: Path) -> tuple[Repo, str]:
    """The composed db host (ref site/db) in a cached store; (repo, commit)."""
    key = hashlib.sha256(TREEFILE.read_bytes() + _source_hash().encode()).hexdigest()[:16]
    base = cache / f"dbhost-{key}"
    with open(cache / "dbhost.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        done = base / "done"
        if not done.exists():
            prune_cache(cache, "dbhost-*", base)
            shutil.rmtree(base, ignore_errors=True)
            repo = Repo.create(base / "repo")
            done.write_text(compose(load_treefile(TREEFILE), TREEFILE.parent, repo,
                                    deb_cache=deb_cache(cache)).commit)
        os.utime(base)
        return Repo.open(base / "repo"), done.read_text().strip()


def derive(repo: Repo, commit: str, ref: str, version: str,
           change: Callable[[Path], None]) -> str:
    """Commit ``change`` applied to a checkout of ``commit`` on ``ref``; the new commit.

    ``change`` must replace files (unlink, then write), never write into one:
    a checkout shares its files with the store.
    """
    with tempfile.TemporaryDirectory(dir=repo.tmp) as tmp:
        tree = Path(tmp) / "tree"
        checkout(repo, commit, tree)
        change(tree)
        old = repo.read_commit(commit)
        return repo.commit_dir(tree, ref=ref, version=version, parent=commit,
                               timestamp=1764170000 + int(version), subject=f"test v{version}",
                               manifest=list(old.manifest), metadata=old.metadata)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Site:
    """A host config directory: site.yaml, its secret, the update root, an SSH key."""

    dir: Path

    @property
    def config(self) -> Path:
        return self.dir / "site.yaml"

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    @classmethod
    def write(cls, d: Path, *, url: str, root_json: Path, mode: str = "prepare") -> Site:
        d.mkdir(parents=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops@test",
                        "-f", d / "id_ed25519"], check=True)
        (d / "site").mkdir()
        (d / "site/db-root-password").write_text("root-secret-" + hashlib.sha256(
            str(d).encode()).hexdigest()[:12] + "\n")
        shutil.copy(root_json, d / "site/root.json")
        pub = (d / "id_ed25519.pub").read_text().strip()
        (d / "site.yaml").write_text(f"""\
hostname: db01
timezone: Europe/Berlin
users:
  - name: ops
    sudo: true
    ssh_authorized_keys: ["{pub}"]
apps:
  - name: mariadb
    secrets: {{root-password: site/db-root-password}}
updates:
  remote: {{name: origin, url: "{url}", root: site/root.json, channel: site/db}}
  policy: {{mode: {mode}, check_interval_s: 20, jitter_s: 2}}
checkmk:
  only_from: [10.0.2.2, 127.0.0.1]
sysctl:
  vm.swappiness: 1
""")
        return cls(d)


@dataclass(frozen=True)
class Guest:
    """SSH into the guest as ``user`` (the site's key) through a forwarded port."""

    port: int
    key: Path
    user: str = "ops"

    def argv(self, command: str) -> list[str]:
        return ["ssh", "-i", str(self.key), "-p", str(self.port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
                f"{self.user}@127.0.0.1", command]

    def run(self, command: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(command), capture_output=True, text=True,
                              timeout=timeout)

    def ok(self, command: str, timeout: float = 180) -> str:
        """Run ``command``; its stdout. Fails the test with stderr when it fails."""
        res = self.run(command, timeout)
        assert res.returncode == 0, f"{command!r} -> {res.returncode}: {res.stderr[-2000:]}"
        return res.stdout

    def reboot_command(self, command: str) -> None:
        """Run a command that reboots the guest (the connection may drop)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.run(command, timeout=120)
