"""The ``agent`` image feature: atoll itself, the ``atoll`` command and ``atolld``.

``install(rootfs)``:

* the ``atoll`` package and its Python dependencies into
  ``/usr/lib/atoll/python`` (``pip install --target`` with binary wheels for
  the image's Python, Debian's python3.11, the same ABI as the build host's venv);
* ``/usr/bin/atoll`` and ``/usr/sbin/atolld`` wrappers (``python3 -I``: the
  image's own site-packages and the environment cannot shadow atoll's);
* ``atolld.service``, enabled in ``multi-user.target``.

Decision: dependencies come from PyPI (or pip's cache) at compose time, on the
publishing side; hosts never install anything. Debian's python3-pydantic is
1.x, which atoll cannot use, so Debian packages are not an option for them.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import sys
from pathlib import Path

import atoll
from atoll.compose.features import Feature, install_unit, register
from atoll.core.run import run

__all__ = ["install"]

PACKAGES = ("python3", "tzdata", "ca-certificates")
TARGET = "usr/lib/atoll/python"

WRAPPER = """#!/usr/bin/python3 -I
import sys
sys.path.insert(0, "/usr/lib/atoll/python")
from {module} import main
sys.exit(main())
"""

UNIT = """[Unit]
Description=atoll host agent (update policy, maintenance windows, fleet reboot slots)
Documentation=https://example.invalid/atoll/docs/architecture.md
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=/usr/sbin/atolld
Restart=on-failure
RestartSec=10
# the agent changes deployments and reboots: it runs as root, with a private /tmp
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""


# Needed only where images are composed and published, not on hosts.
PUBLISHER_ONLY = ("cyclonedx-python-lib",)


def _requirements() -> list[str]:
    reqs = importlib.metadata.requires("atoll") or []
    out = [r.split(";")[0].strip() for r in reqs if "extra ==" not in r]
    return [r for r in out if not r.startswith(PUBLISHER_ONLY)]


def install(rootfs: Path) -> None:
    rootfs = Path(rootfs)
    target = rootfs / TARGET
    target.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-compile", "--only-binary=:all:", "--python-version", "3.11",
         "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
         "--platform", "manylinux_2_28_x86_64", "--implementation", "cp",
         "--target", target, *_requirements()],
        what="install atoll's Python dependencies into the image", timeout=1800)
    src = Path(atoll.__file__).resolve().parent
    shutil.copytree(src, target / "atoll", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for path, module in (("usr/bin/atoll", "atoll.cli"), ("usr/sbin/atolld", "atoll.agent.daemon")):
        p = rootfs / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(WRAPPER.format(module=module))
        os.chmod(p, 0o755)
    install_unit(rootfs, "atolld.service", UNIT)
    # pip leaves an absolute path in RECORD files: not needed at run time
    for record in target.glob("*.dist-info/RECORD"):
        record.write_text(re.sub(r"^/.*$", "", record.read_text(), flags=re.M))
    # Hash-based .pyc: checkouts do not keep mtimes and /usr is read-only at run time,
    # so timestamp-based .pyc files would be recompiled (in memory) at every start.
    run([sys.executable, "-m", "compileall", "-q", "-j0", "--invalidation-mode",
         "unchecked-hash", "-d", f"/{TARGET}", target],
        what="byte-compile atoll in the image", timeout=900)


register(Feature("agent", install, packages=PACKAGES,
                 description="atoll itself: the atoll command and the atolld host agent"))
