"""atoll's one copy in an image (``install_atoll``), the unit that runs boot-complete
from it with the standard library alone, and what compose fixes for reproducibility."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import atoll
from atoll.agent.feature import constraints
from atoll.boot import assets
from atoll.compose.build import HOSTNAME, RESOLV_CONF, normalize_rootfs
from atoll.compose.features import ATOLL_PREFIX, install_atoll


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = (p.stat().st_mode & 0o7777, p.read_bytes())
    return out


def test_install_atoll_copies_the_package_with_fixed_modes(tmp_path: Path) -> None:
    prefix = install_atoll(tmp_path)
    assert prefix == tmp_path / ATOLL_PREFIX
    copy = prefix / "atoll"
    src = Path(atoll.__file__).resolve().parent
    assert (copy / "cli/boot.py").read_bytes() == (src / "cli/boot.py").read_bytes()
    assert (copy / "py.typed").exists()
    assert not list(copy.rglob("__pycache__")) and not list(copy.rglob("*.pyc"))
    modes = {p.stat().st_mode & 0o777 for p in copy.rglob("*")}
    assert modes <= {0o644, 0o755}
    for d in (tmp_path / "usr", tmp_path / "usr/lib/atoll", copy, copy / "cli"):
        assert d.stat().st_mode & 0o777 == 0o755


def test_install_atoll_again_leaves_a_hardlinked_tree_alone(tmp_path: Path) -> None:
    first = tmp_path / "first"
    first.mkdir()
    install_atoll(first)
    before = _tree(first)
    second = tmp_path / "second"
    subprocess.run(["cp", "-al", str(first), str(second)], check=True)  # as the tests' trees
    copy = second / ATOLL_PREFIX / "atoll"
    (copy / "cli/boot.py").unlink()
    (copy / "cli/boot.py").symlink_to("/etc/passwd")
    data = (copy / "core/run.py").read_bytes()
    (copy / "core/run.py").unlink()  # its own inode, same bytes, another mode
    (copy / "core/run.py").write_bytes(data)
    os.chmod(copy / "core/run.py", 0o600)
    (copy / "stale.py").write_text("# from an older atoll\n")
    (copy / "gone").mkdir()
    (copy / "gone/old.py").write_text("")
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__/kept.cpython-311.pyc").write_bytes(b"byte code")
    inode = (copy / "cli/__init__.py").stat().st_ino
    install_atoll(second)
    assert _tree(first) == before  # nothing written through a shared inode
    assert (copy / "cli/__init__.py").stat().st_ino == inode  # same bytes: kept
    assert not (copy / "cli/boot.py").is_symlink()
    assert (copy / "core/run.py").stat().st_mode & 0o777 == 0o644
    assert not (copy / "stale.py").exists() and not (copy / "gone").exists()
    assert (copy / "__pycache__/kept.cpython-311.pyc").exists()


def test_boot_complete_unit_runs_the_copy_with_the_standard_library_alone(
        tmp_path: Path) -> None:
    """The unit's own command line, on a tree holding only atoll's copy: Debian's
    python3 with -S (no site-packages), nothing from this venv."""
    install_atoll(tmp_path)
    unit = assets.BOOT_COMPLETE_UNIT
    env_line = re.search(r"^Environment=(.*)$", unit, re.M)
    exec_line = re.search(r"^ExecStart=(.*)$", unit, re.M)
    assert env_line and exec_line
    env = dict(kv.split("=", 1) for kv in env_line.group(1).split())
    assert env["PYTHONPATH"] == f"/{ATOLL_PREFIX}"
    env["PYTHONPATH"] = str(tmp_path / ATOLL_PREFIX)
    argv = exec_line.group(1).split()
    assert argv[:3] == ["/usr/bin/python3", "-S", "-P"]
    argv = [a for a in argv if a != "--console"] + ["--help"]
    proc = subprocess.run(argv, env={"PATH": "/usr/bin:/bin", **env}, cwd="/",
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "--console" in proc.stdout
    probe = subprocess.run(["/usr/bin/python3", "-S", "-P", "-c",
                            "import atoll; print(atoll.__file__)"],
                           env={"PATH": "/usr/bin:/bin", **env}, cwd="/",
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == str(tmp_path / ATOLL_PREFIX / "atoll/__init__.py")


def test_the_image_carries_no_second_copy() -> None:
    from atoll.boot import feature

    text = Path(feature.__file__).read_text()
    assert "dist-packages" not in text.split('"""', 2)[2]  # code, not the docstring


def test_normalize_rootfs_replaces_what_the_build_machine_leaked(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "hostname").write_text("ci-runner-7\n")
    (etc / "resolv.conf").write_text("nameserver 10.255.255.53\n")
    normalize_rootfs(tmp_path)
    assert (etc / "hostname").read_text() == HOSTNAME
    assert (etc / "resolv.conf").read_text() == RESOLV_CONF
    (etc / "resolv.conf").unlink()
    (etc / "resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    normalize_rootfs(tmp_path)
    assert os.readlink(etc / "resolv.conf") == "../run/systemd/resolve/stub-resolv.conf"


def test_agent_dependencies_are_pinned_to_the_tested_versions() -> None:
    import importlib.metadata

    pins = constraints()
    assert f"pydantic=={importlib.metadata.version('pydantic')}" in pins
    assert not [p for p in pins if p.lower().startswith("atoll==")]
    assert pins == sorted(pins, key=str.lower)
    assert shutil.which("python3")


def test_install_unit_writes_a_new_file_and_enables_only_when_asked(tmp_path: Path) -> None:
    from atoll.compose.features import install_unit

    units = tmp_path / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    other = tmp_path / "elsewhere.service"
    other.write_text("old\n")
    os.link(other, units / "a.service")  # a tree of hardlinks (a test's cp -al copy)
    install_unit(tmp_path, "a.service", "[Service]\nType=oneshot\n", wanted_by=None)
    install_unit(tmp_path, "a.timer", "[Timer]\n", wanted_by="timers.target")
    assert other.read_text() == "old\n"  # the other link is untouched
    assert (units / "a.service").read_text() == "[Service]\nType=oneshot\n"
    assert (units / "a.service").stat().st_mode & 0o777 == 0o644
    assert not list(units.glob("*.wants/a.service"))
    assert os.readlink(units / "timers.target.wants/a.timer") == "../a.timer"
