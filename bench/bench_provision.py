"""Provisioning benchmark under QEMU TCG: power-on to "the database accepts queries".

Both disks hold the same deployment of examples/db-host.yaml (kernel, Docker,
the MariaDB image shipped in /usr/share/atoll/app-images, atoll's agents):

* atoll: ``atoll image build --config site.yaml``; first boot applies the
  config (system phase: hostname, user and key, network, Checkmk only-from,
  policy; apps phase: load the image, install and start the app, wait until it
  answers, add its health check);
* plain: no config, atoll's first-boot units masked, and a unit doing what an
  operator's script does on plain Debian with the same image: write the
  secrets, ``docker load``, ``docker run``.

In both, one unit polls ``docker exec CONTAINER mysql -e 'SELECT 1'`` and
prints a marker on the serial console; time is taken on the host from QEMU's
start to the marker. atoll's first-boot share = (atoll - plain) / atoll.
Also timed: ``atoll image build --config`` (deploy + bake + disk).

    .venv/bin/python -m bench.bench_provision [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.vm.dbhost import Site, composed_dbhost

from atoll.boot.image import build_image_from_ref
from atoll.boot.qemu import VM, overlay
from atoll.provision.bake import bake_config

CACHE = Path(os.environ.get("ATOLL_TEST_CACHE", "/var/tmp/atoll-test-cache"))
MARKER = "BENCH-DB-READY"

POLL_SCRIPT = """#!/bin/sh
until docker exec {container} mysql --defaults-extra-file=/run/secrets/root-client.cnf \\
        -e "SELECT 1" >/dev/null 2>&1; do
    sleep 1
done
echo {marker} > /dev/ttyS0
"""

POLL_UNIT = """[Unit]
Description=bench: report when the database accepts queries
After=docker.service

[Service]
Type=oneshot
TimeoutStartSec=1800
ExecStart=/bin/sh /etc/bench-db-ready.sh

[Install]
WantedBy=multi-user.target
"""

PLAIN_SCRIPT = """#!/bin/sh
# The database the plain way: secrets, docker load, docker run (same image, same volume layout).
set -e
S=/var/lib/plain/secrets D=/var/lib/plain/data
mkdir -p $S $D
pw=$(head -c 18 /dev/urandom | base64); mon=$(head -c 18 /dev/urandom | base64)
echo "$pw" > $S/root-password; echo "$mon" > $S/monitor-password
printf '[client]\\nuser=root\\npassword=%s\\n' "$pw" > $S/root-client.cnf
printf '[client]\\nuser=atoll\\npassword=%s\\n' "$mon" > $S/mysql-client.cnf
chmod 600 $S/*; chown -R 999:999 $S $D
docker load -i /usr/share/atoll/app-images/mariadb.tar
docker run -d --name db --user 999:999 -v $D:/var/lib/mysql -v $S:/run/secrets:ro \\
    --tmpfs /run:rw,nosuid,nodev,size=64m,mode=0755,uid=999,gid=999 \\
    --tmpfs /tmp:rw,nosuid,nodev,size=256m,mode=1777 atoll/mariadb:bookworm
"""

PLAIN_UNIT = """[Unit]
Description=bench: the database started the plain way
After=docker.service
Requires=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh /etc/plain-db.sh

[Install]
WantedBy=multi-user.target
"""


def _poller(deploy: Path, container: str) -> None:
    (deploy / "etc/bench-db-ready.sh").write_text(
        POLL_SCRIPT.format(container=container, marker=MARKER))
    _unit(deploy, "bench-db-ready.service", POLL_UNIT)


def _unit(deploy: Path, name: str, text: str) -> None:
    d = deploy / "etc/systemd/system"
    (d / "multi-user.target.wants").mkdir(parents=True, exist_ok=True)
    (d / name).write_text(text)
    os.symlink(f"../{name}", d / "multi-user.target.wants" / name)


def atoll_customize(site: Site) -> Callable[[Path], None]:
    def customize(deploy: Path) -> None:
        bake_config(site.config, deploy)
        _poller(deploy, "atoll-mariadb")
    return customize


def plain_customize(deploy: Path) -> None:
    for unit in ("atoll-provision.service", "atoll-provision-apps.service"):
        os.symlink("/dev/null", deploy / "etc/systemd/system" / unit)
    (deploy / "etc/plain-db.sh").write_text(PLAIN_SCRIPT)
    _unit(deploy, "plain-db.service", PLAIN_UNIT)
    _poller(deploy, "db")


def ready_time(image: Path, work: Path, name: str) -> float:
    disk = overlay(image, work / f"{name}-run.qcow2")
    try:
        with VM(disk, work / f"{name}.log", firmware="bios", memory=3072) as vm:
            vm.wait_for(MARKER, 1800)
            return vm.elapsed()
    finally:
        disk.unlink(missing_ok=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    repo, commit = composed_dbhost(CACHE)
    results: dict[str, object] = {"commit": commit, "runs": args.runs}
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="bench-provision-") as tmp:
        work = Path(tmp)
        site = Site.write(work / "site", url="http://10.0.2.2:9/",
                          root_json=_any_root(work))
        t0 = time.monotonic()
        build_image_from_ref(commit, repo.path, work / "atoll.qcow2", "qcow2", "8G", "bios",
                             atoll_customize(site))
        results["image_build_s"] = round(time.monotonic() - t0, 1)
        results["image_bytes"] = (work / "atoll.qcow2").stat().st_size
        build_image_from_ref(commit, repo.path, work / "plain.qcow2", "qcow2", "8G", "bios",
                             plain_customize)
        times: dict[str, list[float]] = {"atoll": [], "plain": []}
        for i in range(args.runs):
            for name in ("plain", "atoll"):
                t = ready_time(work / f"{name}.qcow2", work, f"{name}-{i}")
                times[name].append(round(t, 1))
                print(f"run {i + 1}: {name:<5} power-on to DB accepting queries {t:6.1f} s",
                      file=sys.stderr, flush=True)
    a, p = statistics.median(times["atoll"]), statistics.median(times["plain"])
    results |= {"atoll_s": times["atoll"], "plain_s": times["plain"],
                "atoll_median_s": a, "plain_median_s": p,
                "atoll_share": round((a - p) / a, 3)}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"image build with config: {results['image_build_s']} s "
              f"({int(results['image_bytes']) >> 20} MiB qcow2)")  # type: ignore[call-overload]
        print(f"power-on -> DB accepts queries: atoll {a:.1f} s, plain {p:.1f} s; "
              f"atoll's first-boot share {100 * (a - p) / a:.1f}% (target <= 10%)")
    return 0


def _any_root(work: Path) -> Path:
    """A valid root.json for the config (the benchmark's host never contacts the server)."""
    from atoll.cli import main as atoll

    keys, www = work / "keys", work / "www"
    www.mkdir()
    assert atoll(["-q", "keys", "init", str(keys), "--to", str(www)]) == 0
    return www / "metadata/root.json"


if __name__ == "__main__":
    sys.exit(main())
