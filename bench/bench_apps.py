"""Benchmark atoll's app path against plain ``docker run`` on the same MariaDB image.

    .venv/bin/python bench/bench_apps.py [--runs 5]

Needs a running dockerd and atoll's image ``atoll/mariadb:bookworm`` (built and
loaded here when missing: ``atoll app image build mariadb``, cached in
$ATOLL_TEST_CACHE like the tests do).

Prints, median (and max) of ``--runs``:

- ``start -> first query, fresh volume``: ``atoll app start`` on an installed,
  never-started app (empty data volume: datadir initialised) until the first
  successful ``SELECT 1`` as the monitoring user (target <= 3 s);
- ``start -> first query, existing volume``: the same after a clean stop
  (target <= 1 s);
- both also through the ``atoll`` command (a fresh Python process each time);
- ``install+start -> first query``: atoll's whole path (checks, volumes,
  secrets, network, confined container, monitoring user, health check drop-in)
  against the anchor: ``docker run`` through docker-py with the same image,
  confinement flags, mounts and secret files, polled the same way;
  overhead ratio (target <= 10 %).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

from atoll import apps
from atoll.apps.image import build_image, default_tag, image_inputs
from atoll.apps.runtime import get_runtime
from atoll.core import canonjson

SPEC = Path(apps.__file__).parent / "specs" / "mariadb.yaml"
CNF = "--defaults-extra-file=/run/secrets/mysql-client.cnf"


def ensure_image(client: docker.DockerClient) -> str:
    tag = default_tag("mariadb", "bookworm")
    want = canonjson.sha256_of(image_inputs("mariadb", "bookworm"))
    try:
        if client.images.get(tag).labels.get("io.atoll.inputs-sha256") == want:
            return tag
    except docker.errors.ImageNotFound:
        pass
    cache = Path(os.environ.get("ATOLL_TEST_CACHE", "/var/tmp/atoll-test-cache"))
    cache.mkdir(parents=True, exist_ok=True)
    tar = cache / f"apps-mariadb-bookworm-{want[:16]}.tar"
    if not tar.exists():
        build_image("mariadb", suite="bookworm", out=tar)
    get_runtime("docker").load_image(tar)
    return tag


def poll(name: str, timeout: float = 60) -> None:
    """Poll exactly as atoll does (one exec of ``mysql ... SELECT 1`` every 0.1 s)."""
    rt = get_runtime("docker")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = rt.exec(name, ["mysql", CNF, "-sN", "-e", "SELECT 1"], timeout=30)
        if res.exit_code == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name}: no answer in {timeout}s")


def plain_docker_run(client: docker.DockerClient, tag: str, work: Path, secrets: Path) -> float:
    """The anchor: the same confined container by hand, then poll until it answers."""
    name = f"bench-plain-{os.getpid()}"
    data = work / "plain-data"
    data.mkdir()
    os.chown(data, 999, 999)
    t0 = time.perf_counter()
    net = client.networks.create(name, driver="bridge", internal=True)
    client.containers.run(
        tag, name=name, detach=True, user="999:999", network=name, read_only=True,
        tmpfs={"/run": "rw,nosuid,nodev,size=64m,mode=0755,uid=999,gid=999",
               "/tmp": "rw,nosuid,nodev,size=256m,mode=1777"},
        cap_drop=["ALL"], security_opt=["no-new-privileges:true"], mem_limit="1g",
        nano_cpus=10**9, pids_limit=512, labels={"io.atoll.app": "bench"},
        volumes={str(data): {"bind": "/var/lib/mysql", "mode": "rw"},
                 str(secrets): {"bind": "/run/secrets", "mode": "ro"}},
    )
    poll(name)
    took = time.perf_counter() - t0
    client.containers.get(name).remove(force=True)
    net.remove()
    return took


def atoll_cli(sysroot: Path, *argv: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "atoll.cli", "--sysroot", str(sysroot), "app", *argv],
                   check=True, capture_output=True)
    return time.perf_counter() - t0


def fmt(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.3f} s, max {max(xs):.3f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST",
                                                         "unix:///var/run/docker.sock"))
    tag = ensure_image(client)
    rt = get_runtime("docker")
    fresh, existing, fresh_cli, existing_cli, install_path, plain = [], [], [], [], [], []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="atoll-bench-apps-") as tmp:
            sysroot = Path(tmp) / "sysroot"
            name = f"bench-{os.getpid()}-{i}"
            # start -> first query (library), fresh then existing volume
            apps.install(sysroot, name, spec_file=SPEC, runtime=rt, start_app=False)
            fresh.append(apps.start(sysroot, name, runtime=rt))
            apps.stop(sysroot, name, runtime=rt)
            existing.append(apps.start(sysroot, name, runtime=rt))
            secrets = Path(tmp) / "secrets"
            shutil.copytree(sysroot / f"var/lib/atoll/apps/{name}/secrets", secrets)
            for f in secrets.iterdir():
                os.chown(f, 999, 999)
            os.chown(secrets, 999, 999)
            apps.remove(sysroot, name, runtime=rt)
            # the same through the command (a new Python process each time)
            atoll_cli(sysroot, "install", name, "--spec", str(SPEC), "--no-start")
            fresh_cli.append(atoll_cli(sysroot, "start", name))
            atoll_cli(sysroot, "stop", name)
            existing_cli.append(atoll_cli(sysroot, "start", name))
            atoll_cli(sysroot, "remove", name)
            # install+start -> first query vs the plain docker run anchor; who goes
            # first alternates, so that neither always follows the other's teardown.
            if i % 2:
                plain.append(plain_docker_run(client, tag, Path(tmp), secrets))
            t0 = time.perf_counter()
            apps.install(sysroot, name, spec_file=SPEC, runtime=rt)
            install_path.append(time.perf_counter() - t0)
            apps.remove(sysroot, name, runtime=rt)
            if not i % 2:
                plain.append(plain_docker_run(client, tag, Path(tmp), secrets))
    ratio = statistics.median(install_path) / statistics.median(plain)
    print(f"runs: {args.runs}, image {tag}")
    print(f"start -> first query, fresh volume (library):     {fmt(fresh)}   target <= 3 s")
    print(f"start -> first query, existing volume (library):  {fmt(existing)}   target <= 1 s")
    print(f"`atoll app start`, fresh volume (new process):    {fmt(fresh_cli)}")
    print(f"`atoll app start`, existing volume (new process): {fmt(existing_cli)}")
    print(f"atoll install+start -> first query:               {fmt(install_path)}")
    print(f"plain docker run -> first query (anchor):         {fmt(plain)}")
    print(f"overhead ratio atoll/plain: {ratio:.3f} ({(ratio - 1) * 100:+.1f} %)   target <= +10 %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
