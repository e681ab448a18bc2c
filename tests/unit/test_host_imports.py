"""What runs on hosts must not need the publisher-only packages (not in the image)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from atoll.agent.feature import PUBLISHER_ONLY

HOST_MODULES = ["atoll.cli", "atoll.repo.client", "atoll.agent.daemon", "atoll.deploy.status",
                "atoll.monitor.agent", "atoll.apps.manager", "atoll.provision.firstboot",
                "atoll.security.host", "atoll.cli.cve", "atoll.deploy.hotfix", "atoll.cli.hotfix",
                "atoll.delta"]


def test_host_modules_import_without_publisher_packages() -> None:
    imports = {"cyclonedx-python-lib": "cyclonedx", "python-debian": "debian", "detools": "detools"}
    blocked = [imports[p] for p in PUBLISHER_ONLY]
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        f"    def find_spec(self, name, path, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}: raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {HOST_MODULES!r}:\n"
        "    __import__(m)\n"
        "from atoll.cli import build_parser\n"
        "build_parser()\n"
    )
    _passes_in_a_fresh_interpreter(code)


def test_the_update_path_loads_no_app_model_and_no_http(tmp_path: Path) -> None:
    # `update apply` on a host without apps and without a running atolld: every module
    # it loads costs ~20x its native import time under TCG (docs/benchmarks.md, "apply")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import atoll.cli, atoll.cli.agent, atoll.agent.host, atoll.deploy.sysroot\n"
        "import atoll.store.checkout, atoll.agent.api\n"
        "from atoll.agent.host import _default_backups\n"
        f"assert _default_backups(Path({str(tmp_path)!r})) == []\n"
        f"assert not atoll.agent.api.running(Path({str(tmp_path)!r}))\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'yaml', 'http', 'email', 'sqlalchemy', 'zstandard') "
        "or m.startswith(('atoll.apps.manager', 'atoll.apps.spec', 'atoll.compose.')))\n"
        "assert not heavy, heavy\n"
    )
    _passes_in_a_fresh_interpreter(code)


def test_the_apps_package_exports_its_api_lazily_and_stably() -> None:
    # each name is what it was when the package imported everything eagerly, whatever
    # submodule was imported before or after it is first used
    code = (
        "import importlib, pkgutil, types\n"
        "import atoll.apps as apps\n"
        "from atoll.apps import backups, manager\n"
        "assert apps.backup is backups.backup and apps.backup is apps.backup\n"
        "subs = {m.name for m in pkgutil.iter_modules(apps.__path__)}\n"
        "for m in sorted(subs):\n"
        "    importlib.import_module('atoll.apps.' + m)\n"
        "assert not set(apps.__all__) & subs, set(apps.__all__) & subs\n"
        "for name in apps.__all__:\n"
        "    value = getattr(apps, name)\n"
        "    assert not isinstance(value, types.ModuleType), name\n"
        "    assert value is getattr(apps, name)\n"
        "assert set(apps.__all__) <= set(dir(apps))\n"
        "assert apps.installed_apps is manager.installed_apps\n"
    )
    _passes_in_a_fresh_interpreter(code)


def _passes_in_a_fresh_interpreter(code: str) -> None:
    """Run ``code`` in a new Python (its imports start from nothing); it must exit 0."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
