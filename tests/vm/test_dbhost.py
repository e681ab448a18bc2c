"""A database host's life in QEMU, as an operations team lives it.

A blank image of examples/db-host.yaml with a host config baked in boots and
provisions itself (hostname, an SSH key user, the MariaDB app from the image
the OS ships, the Checkmk agent's only-from, the update remote and policy).
Then, with rows in the database: an OS update (downloaded and prepared by the
agent, applied by the "customer"), a manual rollback, and an update that
breaks Docker, rolled back by boot-complete's database check by itself, and a
one-package hotfix (`atoll hotfix add`) booted. The rows survive all of it. A
second guest gets a bad config on a NoCloud seed: it boots, refuses it, and says
why.

The tests of the first guest share one VM and run in file order: each is one
step of the same host's life.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from atoll.boot.qemu import VM
from atoll.cli import main
from atoll.monitor.facts import load_host_facts
from atoll.monitor.localchecks import CRIT, host_checks
from atoll.provision.seed import LABEL
from atoll.store import Repo
from tests.integration.delivery_fixtures import WwwServer, serve_www
from tests.integration.test_hotfix import MARKER, build_deb
from tests.vm.conftest import markers, mounted_root
from tests.vm.dbhost import Guest, Site, composed_dbhost, derive, free_port

FIRST_BOOT = 1500  # power-on to boot-complete the first time: image load, DB init
BOOT = 900
ROWS = 250


@dataclass
class World:
    pub: Repo
    keys: Path
    www: Path
    server: WwwServer
    commits: dict[str, str]
    work: Path

    def publish(self) -> None:
        # zstd level 3: the tests need signed packs, not the smallest ones
        assert main(["-q", "publish", "site/db", "--repo", str(self.pub.path),
                     "--to", str(self.www), "--keys", str(self.keys), "--level", "3"]) == 0


@pytest.fixture(scope="module")
def world(artifact_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The publisher: site/db v1 (composed) signed and served on 127.0.0.1."""
    cache_repo, c1 = composed_dbhost(artifact_cache)
    work = tmp_path_factory.mktemp("dbhost")
    pub = Repo.create(work / "pub")
    pub.pull_local(cache_repo, c1)
    pub.set_ref("site/db", c1)
    www, keys = work / "www", work / "keys"
    www.mkdir()
    assert main(["-q", "keys", "init", str(keys), "--to", str(www)]) == 0
    with serve_www(www) as server:
        w = World(pub, keys, www, server, {"v1": c1}, work)
        w.publish()
        yield w


@dataclass
class Host:
    vm: VM
    guest: Guest
    cmk_port: int
    site: Site
    image: Path


@pytest.fixture(scope="module")
def host(world: World) -> Iterator[Host]:
    """db01: built with `atoll image build --config`, powered on, first boot done."""
    port = world.server.url.rsplit(":", 1)[1].strip("/")
    site = Site.write(world.work / "site", url=f"http://10.0.2.2:{port}/",
                      root_json=world.www / "metadata/root.json")
    image = world.work / "db01.qcow2"
    assert main(["-q", "image", "build", "site/db", "--repo", str(world.pub.path),
                 "--config", str(site.config), "--out", str(image), "--size", "8G",
                 "--firmware", "bios"]) == 0
    ssh_port, cmk_port = free_port(), free_port()
    vm = VM(image, world.work / "console.log", firmware="bios", memory=3072,
            forwards={ssh_port: 22, cmk_port: 6556})
    with vm:
        vm.wait_for(r"ATOLL-BOOT-STATUS \{.*\}\r?\n", FIRST_BOOT)
        yield Host(vm, Guest(ssh_port, site.key), cmk_port, site, image)


def _status(guest: Guest) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(guest.ok("sudo atoll --json status"))
    return out


def _rows(guest: Guest) -> int:
    return int(guest.ok("sudo atoll app sql mariadb --root "
                        "'SELECT COUNT(*) FROM shop.orders'").strip())


def _wait_prepared(guest: Guest, commit: str, timeout: float = 900) -> dict[str, Any]:
    """Until the agent has downloaded and prepared ``commit``."""
    deadline = time.monotonic() + timeout
    st: dict[str, Any] = {}
    while time.monotonic() < deadline:
        st = _status(guest)
        if (st.get("prepared") or {}).get("commit") == commit:  # applied when told
            return st
        time.sleep(10)
    raise AssertionError(f"{commit[:12]} not prepared in {timeout:.0f}s: {st.get('update')}, "
                         f"prepared {st.get('prepared')}")


def _apply_and_reboot(host: Host, world: World, version: str) -> int:
    """The customer applies the prepared update and reboots; console offset of the reboot."""
    start = len(host.vm.console.read_bytes())
    host.guest.reboot_command("sudo atoll update apply --reboot")
    host.vm.wait_for(rf"ATOLL-INITRAMFS: mounted deployment {world.commits[version]}\.\d+",
                     BOOT, start)
    return start


def test_first_boot_provisions_the_host(host: Host) -> None:
    text = host.vm.text()
    (event,) = markers(text, "BOOT-COMPLETE")
    assert event["result"] == "good", event
    checks = {c["name"]: c["ok"] for c in event["checks"]}
    assert checks.get("50-app-mariadb") is True, checks  # the DB accepted a write at boot
    g = host.guest
    assert g.ok("hostname").strip() == "db01"
    assert g.ok("cat /etc/timezone").strip() == "Europe/Berlin"
    assert g.ok("cat /proc/sys/vm/swappiness").strip() == "1"
    # keys only: without the key, no way in
    refused = g.argv("true")
    refused[1:1] = ["-o", "PreferredAuthentications=password,keyboard-interactive",
                    "-o", "PubkeyAuthentication=no"]
    assert subprocess.run(refused, capture_output=True, timeout=60).returncode != 0
    # the database answers
    assert "MariaDB" in g.ok("sudo atoll app sql mariadb --root 'SELECT VERSION()'")
    # the update policy is the configured one
    agent = json.loads(g.ok("sudo atoll --json agent status"))
    policy = agent["policy"]
    assert (policy["mode"], policy["remote"], policy["check_interval_s"]) == \
        ("prepare", "origin", 20)
    # the Checkmk agent answers on its port, to the host (10.0.2.2 in only-from)
    with socket.create_connection(("127.0.0.1", host.cmk_port), timeout=60) as s:
        s.settimeout(60)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    agent_text = out.decode()
    assert agent_text.startswith("<<<check_mk>>>")
    # the database app is polled (its sections may time out in a TCG guest: the
    # agent then says so in its own report instead of hanging)
    assert '"name": "mysql"' in agent_text
    assert '0 "atoll provisioning" - host config applied' in agent_text
    assert '\n0 "atoll update metadata"' in agent_text  # a fresh timestamp is not an alarm
    # the same config again changes nothing
    again = json.loads(g.ok("sudo atoll --json host-config apply /etc/atoll/host-config.yaml"))
    assert again["result"] == "applied" and again["changes"] == [], again


def test_os_update_keeps_the_rows(host: Host, world: World) -> None:
    values = ",".join(f"({i},'item-{i}')" for i in range(ROWS))
    host.guest.ok("sudo atoll app sql mariadb --root 'CREATE DATABASE shop; "
                  "CREATE TABLE shop.orders (id INT PRIMARY KEY, item TEXT) ENGINE=InnoDB; "
                  f"INSERT INTO shop.orders VALUES {values}'")
    assert _rows(host.guest) == ROWS

    def v2(tree: Path) -> None:
        (tree / "usr/share/atoll-test-version").write_text("2\n")

    world.commits["v2"] = derive(world.pub, world.commits["v1"], "site/db", "2", v2)
    world.publish()
    _wait_prepared(host.guest, world.commits["v2"])
    start = _apply_and_reboot(host, world, "v2")
    m = host.vm.wait_for(r"ATOLL-BOOT-STATUS \{.*\}\r?\n", BOOT, start)
    event = markers(host.vm.text()[start:m.end()], "BOOT-COMPLETE")[-1]
    assert event["result"] == "good" and event["deployment"].startswith(world.commits["v2"])
    assert {c["name"]: c["ok"] for c in event["checks"]}["50-app-mariadb"] is True
    assert host.guest.ok("cat /usr/share/atoll-test-version").strip() == "2"
    assert _rows(host.guest) == ROWS
    # the agent took a consistent backup of the database before applying
    app = json.loads(host.guest.ok("sudo atoll --json app status mariadb"))
    assert app["backups"]["count"] >= 1, app["backups"]
    host.guest.ok(f"sudo atoll app sql mariadb --root 'INSERT INTO shop.orders VALUES "
                  f"({ROWS},\"written-under-v2\")'")
    assert _rows(host.guest) == ROWS + 1


# Run in the guest as root: seals, refused writes and read-time checks of fs-verity.
_SEAL_PROBE = r"""
import errno, fcntl, json, mmap, os, struct, subprocess
from pathlib import Path
out = {}
tree = Path("/var/tmp/sealtest")
(tree / "usr/share").mkdir(parents=True, exist_ok=True)
(tree / "usr/share/a").write_bytes(b"a" * 8192)
(tree / "usr/share/b").write_bytes(b"b" * 8192)
subprocess.run(["atoll", "-q", "store", "commit", str(tree), "--ref", "test/seal"], check=True)
objs = {}  # the two objects: found by content
for path in Path("/atoll/repo/objects").glob("*/*.file"):
    if not path.is_symlink() and path.lstat().st_size == 8192:
        data = path.read_bytes()
        if data in (b"a" * 8192, b"b" * 8192):
            objs[data[:1].decode()] = path
a, b = objs["a"], objs["b"]
out["b_id"] = b.parent.name + b.name.split(".")[0]
flags = fcntl.ioctl(os.open(a, os.O_RDONLY), 0x80086601, b"\0" * 8)
out["sealed"] = bool(struct.unpack("=i", flags[:4])[0] & 0x00100000)
out["mtime"] = a.lstat().st_mtime
# atoll's own view, through the one statx its seal check makes per object
import sys
sys.path.insert(0, "/usr/lib/atoll/python")
from atoll.store.repo import Repo
from atoll.store.seal import stat_object
out["statx_verity"] = stat_object(str(a)).verity
out["is_sealed"] = Repo.open(Path("/atoll/repo")).is_sealed(a.parent.name + a.name.split(".")[0])
try:
    os.open(a, os.O_WRONLY)
    out["write"] = "allowed"
except OSError as exc:
    out["write"] = errno.errorcode[exc.errno]
# change a's block under the filesystem: the kernel must refuse what it reads
fiemap = struct.pack("=QQIIII", 0, 2**64 - 1, 1, 0, 1, 0) + b"\0" * 56
res = fcntl.ioctl(os.open(a, os.O_RDONLY), 0xC020660B, fiemap)
physical = struct.unpack("=QQQ", res[32:56])[1]
dev = os.open("/dev/disk/by-label/atoll-root", os.O_WRONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
buf.write(b"X" * 4096)
os.pwrite(dev, buf, physical)
os.close(dev)
Path("/proc/sys/vm/drop_caches").write_text("3")
try:
    a.read_bytes()
    out["read"] = "ok"
except OSError as exc:
    out["read"] = errno.errorcode[exc.errno]
# replace b with other bytes (a new inode, as a careless or hostile root would)
tmp = b.with_name(".x")
tmp.write_bytes(b"c" * 8192)
os.chmod(tmp, b.stat().st_mode)
os.rename(tmp, b)
# a scratch sysroot on the store's own mount (/atoll is a bind mount of its own: a
# local import from there hardlinks, as on a build machine)
subprocess.run(["atoll", "-q", "--sysroot", "/atoll/scratch", "init"], check=True)
res = subprocess.run(["atoll", "--sysroot", "/atoll/scratch", "deploy", "test/seal",
                      "--repo", "/atoll/repo"], capture_output=True, text=True)
out["deploy"] = [res.returncode, res.stderr]
q = Path("/atoll/repo/quarantine")
out["quarantined"] = sorted(os.listdir(q)) if q.is_dir() else []
print(json.dumps(out))
"""


def test_objects_are_sealed_and_tampering_is_refused(host: Host) -> None:
    """fs-verity in the guest (Debian's kernel has it; the image's ext4 has the
    feature): an object the store writes is sealed, cannot be opened for writing,
    and changed blocks under it give EIO when read; an object replaced by other
    bytes is refused at deploy and quarantined."""
    # the probe's commands print before it: its answer is the last line
    text = host.guest.ok(f"sudo python3 - <<'EOF'\n{_SEAL_PROBE}\nEOF", timeout=600)
    out = json.loads(text.strip().splitlines()[-1])
    try:
        assert out["sealed"] is True and int(out["mtime"]) == 0, out  # 0 s (+ its mark in ns)
        assert out["statx_verity"] is True and out["is_sealed"] is True, out
        assert out["write"] in ("EPERM", "ETXTBSY", "EACCES"), out
        assert out["read"] == "EIO", out
        code, err = out["deploy"]
        assert code == 3 and "damaged" in err, out
        assert any(n.startswith(out["b_id"] + ".file.") for n in out["quarantined"]), out
    finally:
        host.guest.run("sudo atoll -q store refs --delete test/seal; "
                       "sudo rm -rf /atoll/scratch /var/tmp/sealtest")


def test_rollback_keeps_the_rows(host: Host, world: World) -> None:
    start = len(host.vm.console.read_bytes())
    host.guest.reboot_command("sudo atoll rollback --reboot")
    host.vm.wait_for(rf"ATOLL-INITRAMFS: mounted deployment {world.commits['v1']}\.\d+",
                     BOOT, start)
    host.vm.wait_for(r"ATOLL-BOOT-STATUS \{.*\}\r?\n", BOOT, start)
    assert host.guest.run("test -e /usr/share/atoll-test-version").returncode != 0
    assert _rows(host.guest) == ROWS + 1  # the row written under v2 too: data is not versioned


def test_update_that_breaks_the_database_rolls_back_by_itself(host: Host, world: World) -> None:
    def v3(tree: Path) -> None:
        # an OS update with a bad Docker daemon config: dockerd does not start
        (tree / "usr/etc/docker").mkdir(parents=True, exist_ok=True)
        (tree / "usr/etc/docker/daemon.json").write_text('{"no-such-option": true}\n')

    world.commits["v3"] = derive(world.pub, world.commits["v2"], "site/db", "3", v3)
    world.publish()
    booted = _status(host.guest)["booted"]["id"]
    _wait_prepared(host.guest, world.commits["v3"])
    start = _apply_and_reboot(host, world, "v3")
    m = host.vm.wait_for(r"ATOLL-BOOT-STATUS \{.*\"rolled-back\".*\}\r?\n", 2 * BOOT, start)
    text = host.vm.text()[start:m.end()]
    failed, rolled = markers(text, "BOOT-COMPLETE")[-2:]
    assert failed["deployment"].startswith(world.commits["v3"]) and failed["result"] == "failed"
    assert "50-app-mariadb" in failed["reason"], failed["reason"]
    assert (rolled["deployment"], rolled["result"]) == (booted, "rolled-back")
    st = _status(host.guest)
    assert st["booted"]["id"] == booted
    assert st["last_boot"]["result"] == "rolled-back"
    assert "50-app-mariadb" in st["last_boot"]["reason"]
    assert _rows(host.guest) == ROWS + 1


def test_a_hotfix_boots_keeps_the_rows_and_is_marked(host: Host, world: World,
                                                     tmp_path: Path) -> None:
    """`atoll hotfix add` on the running host (a local .deb with its sha256: the offline
    way), then a reboot: the hotfix deployment boots with its checks passing, carries the
    package (its maintainer script ran in the throwaway root, so its mark is in the image),
    and status and `hotfix list` say so. The last step of this host's life: no clean-up."""
    deb, sha = build_deb(tmp_path, "atoll-hotfix-probe", "1.0", postinst=True)
    base = _status(host.guest)["booted"]
    sent = subprocess.run(host.guest.argv("cat > /var/tmp/probe.deb"), input=deb.read_bytes(),
                          capture_output=True, timeout=120)
    assert sent.returncode == 0, sent.stderr[-2000:]
    host.guest.ok(f"sudo atoll -q hotfix add /var/tmp/probe.deb --sha256 {sha} "
                  "--reason 'QEMU: the hotfix deployment boots'", timeout=1200)
    staged = _status(host.guest)["deployments"][0]
    assert staged["hotfix"] is not None and staged["hotfix"]["base"] == base["commit"], staged
    assert [p["name"] for p in staged["hotfix"]["packages"]] == ["atoll-hotfix-probe"]
    start = len(host.vm.console.read_bytes())
    host.guest.reboot_command("sudo systemctl reboot")
    host.vm.wait_for(rf"ATOLL-INITRAMFS: mounted deployment {staged['commit']}\.\d+",
                     BOOT, start)
    host.vm.wait_for(r"ATOLL-BOOT-STATUS \{.*\}\r?\n", BOOT, start)
    st = _status(host.guest)
    assert st["booted"]["commit"] == staged["commit"], st["booted"]
    assert st["last_boot"]["result"] == "good", st["last_boot"]
    assert st["booted"]["hotfix"]["packages"][0]["version"] == "1.0"
    assert host.guest.ok("cat /usr/share/atoll-hotfix-test/atoll-hotfix-probe.txt") == \
        "atoll-hotfix-probe 1.0\n"
    assert host.guest.ok(f"cat /{MARKER}").strip() == "ran"  # in the image, not the old root
    (row,) = json.loads(host.guest.ok("sudo atoll --json hotfix list"))["hotfixes"]
    assert (row["name"], row["status"], row["in_booted"]) == ("atoll-hotfix-probe", "active",
                                                              True), row
    assert _rows(host.guest) == ROWS + 1


def test_bad_config_on_a_seed_leaves_the_host_up_and_reporting(
        world: World, tmp_path: Path) -> None:
    bad = tmp_path / "cfg"
    bad.mkdir()
    (bad / "site.yaml").write_text("hostname: db02\nusers:\n  - name: ops\n"
                                   "    ssh_authorized_keys: [not-a-key]\n")
    seed = tmp_path / "seed.img"
    # `atoll provision` validates first; a team's own tooling might not: write the seed raw
    subprocess.run(["mkfs.vfat", "-C", "-n", LABEL, seed, "1024"], check=True,
                   capture_output=True)
    subprocess.run(["mmd", "-i", seed, "::atoll"], check=True)
    subprocess.run(["mcopy", "-i", seed, bad / "site.yaml", "::atoll/host-config.yaml"],
                   check=True)
    image = tmp_path / "blank.qcow2"
    assert main(["-q", "image", "build", "site/db", "--repo", str(world.pub.path),
                 "--out", str(image), "--format", "raw", "--size", "8G",
                 "--firmware", "bios"]) == 0
    with VM(image, tmp_path / "console.log", firmware="bios", memory=3072,
            drives=(seed,)) as vm:
        vm.wait_for(r"ATOLL-BOOT-STATUS \{.*\}\r?\n", BOOT)
        text = vm.text()
    assert "host-config refused" in text
    assert "host-config.yaml:4: users.0.ssh_authorized_keys" in text
    (event,) = markers(text, "BOOT-COMPLETE")
    assert event["result"] == "good"  # booted and marked good: reachable as it was
    with mounted_root(image, tmp_path / "mnt") as root:
        record = json.loads((root / "var/lib/atoll/provision/applied.json").read_text())
        assert record["result"] == "refused"
        assert not (root / "var/lib/atoll/provision/done").exists()
        deploy = next((root / "atoll/deploy").iterdir())
        assert (deploy / "etc/hostname").read_text().strip() != "db02"
        now = dt.datetime.now(dt.UTC)
        checks = {c.name: c for c in host_checks(load_host_facts(root), now)}
    prov = checks["atoll provisioning"]
    assert prov.state == CRIT and "users.0.ssh_authorized_keys" in prov.summary
