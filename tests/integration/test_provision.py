"""Host config applied to a real Debian deployment; a seed image read back with mtools."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from atoll.agent.state import AgentFiles
from atoll.core.errors import SpecError
from atoll.deploy.sysroot import Sysroot
from atoll.provision.apply import apply_config
from atoll.provision.config import load_host_config
from atoll.provision.firstboot import first_boot
from atoll.provision.seed import build_seed
from tests.compose_fixtures import EXAMPLES, composed
from tests.trees import snapshot


@pytest.fixture
def host(artifact_cache: Path, tmp_path: Path) -> tuple[Sysroot, Path]:
    trees = composed(artifact_cache)
    sr = Sysroot(tmp_path / "host")
    sr.init()
    dep = sr.deploy(trees.v1, repo=trees.repo)
    return sr, sr.deployment_path(dep)


def site(tmp_path: Path) -> Path:
    d = tmp_path / "cfg"
    shutil.copytree(EXAMPLES / "site", d / "site")
    shutil.copy(EXAMPLES / "site.yaml", d / "site.yaml")
    return d / "site.yaml"


def test_apply_then_again_changes_nothing(host: tuple[Sysroot, Path], tmp_path: Path) -> None:
    sr, root = host
    cfg_path = site(tmp_path)
    cfg = load_host_config(cfg_path)
    rec = apply_config(cfg, cfg_path, root, sr.root, phases=("system",))
    assert "hostname set to db01" in rec["changes"]
    assert (root / "etc/hostname").read_text() == "db01\n"
    assert "127.0.1.1\tdb01" in (root / "etc/hosts").read_text()
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/Europe/Berlin"
    passwd = {ln.split(":")[0]: ln.split(":") for ln in (root / "etc/passwd").read_text()
              .splitlines()}
    assert "ops" in passwd
    shadow = {ln.split(":")[0]: ln.split(":") for ln in (root / "etc/shadow").read_text()
              .splitlines()}
    assert shadow["ops"][1] in ("!", "*", "!*")  # no password: SSH keys only
    keys = root / passwd["ops"][5].lstrip("/") / ".ssh/authorized_keys"
    assert keys.read_text().startswith("ssh-ed25519 ")
    st = os.stat(keys)
    assert (st.st_mode & 0o777, st.st_uid) == (0o600, int(passwd["ops"][2]))
    assert "adm" in [g.split(":")[0] for g in (root / "etc/group").read_text().splitlines()
                     if "ops" in g.split(":")[3].split(",")]
    assert (root / "etc/sysctl.d/90-atoll.conf").read_text() == \
        "fs.aio-max-nr = 1048576\nvm.swappiness = 1\n"
    assert "mysql\t-\tnofile\t65535" in (root / "etc/security/limits.d/90-atoll.conf").read_text()
    assert (root / "etc/systemd/network/50-atoll-0.network").read_text().count("DHCP=yes") == 1
    assert (root / "etc/atoll/checkmk-agent.env").read_text() == \
        "ATOLL_CHECKMK_ONLY_FROM=10.0.0.5,127.0.0.1\n"
    pol = AgentFiles(sr.root).policy()
    assert (pol.mode, pol.group, pol.windows) == (
        "prepare", "db", ("Sat 02:00-04:00 Europe/Berlin",))
    before = snapshot(root)
    rec2 = apply_config(cfg, cfg_path, root, sr.root, phases=("system",))
    assert rec2["changes"] == []
    after = snapshot(root)
    after.pop("var/lib/atoll/provision/applied.json")
    before.pop("var/lib/atoll/provision/applied.json")
    assert after == before


def test_invalid_config_is_refused_and_nothing_changes(host: tuple[Sysroot, Path],
                                                       tmp_path: Path) -> None:
    sr, root = host
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "host-config.yaml").write_text("hostname: db01\nusers:\n  - name: ops\n"
                                          "    ssh_authorized_keys: [not-a-key]\n")
    before = snapshot(root)
    with pytest.raises(SpecError) as exc:
        first_boot(root, sr.root, seed_dir=seed)
    assert exc.value.problems[0].endswith(
        "host-config.yaml:4: users.0.ssh_authorized_keys: each key is an OpenSSH "
        "public key line: 'TYPE BASE64 [comment]'")
    after = snapshot(root)
    record = after.pop("var/lib/atoll/provision/applied.json")
    assert b'"result":"refused"' in record[4]  # type: ignore[operator]
    assert {k: v for k, v in after.items() if not k.startswith("var/lib")} == before


def test_first_boot_applies_once(host: tuple[Sysroot, Path], tmp_path: Path) -> None:
    sr, root = host
    cfg = site(tmp_path)
    # the apps need Docker: a seed without apps for this directory-level test
    text = cfg.read_text().split("apps:")[0] + "updates:" + cfg.read_text().split("updates:")[1]
    seed = tmp_path / "seedcopy"
    shutil.copytree(cfg.parent, seed)
    (seed / "host-config.yaml").write_text(text)
    first = first_boot(root, sr.root, seed_dir=seed)
    assert first["result"] == "applied" and first["changes"]
    assert first_boot(root, sr.root, seed_dir=seed)["result"] == "already-applied"


def test_seed_image_carries_the_config(tmp_path: Path) -> None:
    cfg = site(tmp_path)
    out = tmp_path / "seed.img"
    files = build_seed(cfg, out)
    assert set(files) == {"meta-data", "user-data", "atoll/host-config.yaml",
                          "atoll/site/db-root-password"}
    label = subprocess.run(["mlabel", "-i", str(out), "-s", "::"], capture_output=True,
                           text=True).stdout
    assert "CIDATA" in label
    got = subprocess.run(["mtype", "-i", str(out), "::atoll/host-config.yaml"],
                         capture_output=True).stdout
    assert got == cfg.read_bytes()
    meta = subprocess.run(["mtype", "-i", str(out), "::meta-data"], capture_output=True,
                          text=True).stdout
    assert "local-hostname: db01" in meta


def test_bake_writes_the_config_and_its_files_0600(host: tuple[Sysroot, Path],
                                                  tmp_path: Path) -> None:
    from atoll.provision.bake import bake_config

    _, root = host
    cfg = site(tmp_path)
    written = bake_config(cfg, root)
    assert written == ["etc/atoll/host-config.yaml", "etc/atoll/site/db-root-password"]
    assert (root / "etc/atoll/host-config.yaml").read_bytes() == cfg.read_bytes()
    for rel in written:
        st = os.stat(root / rel)
        assert (st.st_mode & 0o777, st.st_uid) == (0o600, 0)
    assert os.stat(root / "etc/atoll/site").st_mode & 0o777 == 0o700
    # the baked config is what first boot finds, and it is valid where it landed
    assert load_host_config(root / "etc/atoll/host-config.yaml").hostname == "db01"


def test_bake_refuses_a_bad_config_and_writes_nothing(host: tuple[Sysroot, Path],
                                                     tmp_path: Path) -> None:
    from atoll.provision.bake import bake_config

    _, root = host
    bad = tmp_path / "bad.yaml"
    bad.write_text("hostname: DB_01\n")
    before = snapshot(root)
    with pytest.raises(SpecError) as exc:
        bake_config(bad, root)
    assert exc.value.problems[0].startswith(f"{bad}:1: hostname: ")
    assert snapshot(root) == before
