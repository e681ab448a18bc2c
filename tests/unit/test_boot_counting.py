"""Boot counting state machine: GRUB's step, staging, boot-complete; and the
rendered GRUB script agrees with the pure function for every grubenv state."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from atoll.boot import grubenv
from atoll.boot.counting import (
    DEFAULT_TRIES,
    MAX_TRIES,
    complete_step,
    grub_step,
    stage_env,
)
from atoll.boot.grubcfg import early_cfg, loader_cfg, static_cfg
from atoll.core.errors import InputError

IDS = ["c2.1", "c1.0"]


def deps(ids: list[str]) -> list[dict[str, str]]:
    return [{"id": i, "commit": i.split(".")[0], "version": "v"} for i in ids]


def test_new_deployment_is_put_on_trial() -> None:
    env = stage_env({}, IDS, good=["c1.0"])
    assert env == {"atoll_pending": "c2.1", "atoll_tries": "3", "atoll_max_tries": "3"}


def test_restaging_same_pending_keeps_tries_left() -> None:
    env = {"atoll_pending": "c2.1", "atoll_tries": "1", "atoll_max_tries": "3"}
    assert stage_env(env, IDS, good=["c1.0"]) == env


def test_staging_a_good_deployment_clears_trial() -> None:
    env = {"atoll_pending": "c2.1", "atoll_tries": "0", "atoll_max_tries": "3"}
    assert stage_env(env, ["c1.0", "c2.1"], good=["c1.0"]) == {
        "atoll_pending": "", "atoll_tries": ""}


def test_tries_are_clamped() -> None:
    assert stage_env({}, IDS, [], tries=50)["atoll_tries"] == str(MAX_TRIES)
    assert stage_env({}, IDS, [], tries=0)["atoll_tries"] == "1"


def test_grub_counts_down_then_falls_back() -> None:
    env = stage_env({}, IDS, good=["c1.0"])
    seen = []
    for _ in range(DEFAULT_TRIES + 2):
        choice = grub_step(env, IDS)
        seen.append((choice.entry, choice.fallback))
        env = choice.env
    assert seen == [(0, False)] * 3 + [(1, True)] * 2
    assert env["atoll_tries"] == "0"


def test_grub_boots_first_when_pending_is_stale_or_absent() -> None:
    assert grub_step({}, IDS).entry == 0
    stale = {"atoll_pending": "c9.0", "atoll_tries": "0"}
    choice = grub_step(stale, IDS)
    assert (choice.entry, choice.fallback, choice.env) == (0, False, stale)


def test_grub_without_rollback_keeps_booting_the_only_entry() -> None:
    choice = grub_step({"atoll_pending": "c1.0", "atoll_tries": "0"}, ["c1.0"])
    assert (choice.entry, choice.fallback) == (0, False)


def test_garbage_tries_count_as_none_left() -> None:
    choice = grub_step({"atoll_pending": "c2.1", "atoll_tries": "x"}, IDS)
    assert (choice.entry, choice.fallback) == (1, True)


def test_complete_marks_pending_good_and_clears_tries() -> None:
    env = {"atoll_pending": "c2.1", "atoll_tries": "2", "atoll_max_tries": "3"}
    act = complete_step(env, "c2.1", False, True)
    assert act.result == "good" and act.mark_good and not act.reboot
    assert act.env == {"atoll_pending": "", "atoll_tries": ""}


def test_complete_failed_pending_exhausts_tries_and_reboots() -> None:
    env = {"atoll_pending": "c2.1", "atoll_tries": "2", "atoll_max_tries": "3"}
    act = complete_step(env, "c2.1", False, False, "required health check 50-db failed")
    assert act.result == "failed" and act.reboot and not act.mark_good
    assert act.env["atoll_tries"] == "0"
    # ...and GRUB then boots the rollback.
    assert grub_step(act.env, IDS).entry == 1


def test_complete_on_fallback_reports_rollback_with_reason() -> None:
    env = {"atoll_pending": "c2.1", "atoll_tries": "0", "atoll_max_tries": "3"}
    act = complete_step(env, "c1.0", True, True)
    assert act.result == "rolled-back" and act.mark_good and not act.reboot
    assert "c2.1 did not reach boot-complete in 3 tries" in act.reason
    act = complete_step(env, "c1.0", True, True, pending_failure="check 50-db failed")
    assert act.reason == "deployment c2.1 failed: check 50-db failed"
    assert act.env == env  # stays rolled back until a new deploy


def test_failing_good_deployment_does_not_reboot_loop() -> None:
    act = complete_step({}, "c1.0", False, False, "x failed")
    assert act.result == "failed" and not act.reboot and act.env == {}


# --- the GRUB script, interpreted, agrees with grub_step --------------------

def run_script(script: str, env: dict[str, str]) -> tuple[int, bool, dict[str, str]]:
    """Interpret the subset of GRUB script that loader_cfg emits."""
    saved = dict(env)
    var: dict[str, str] = {}
    stack: list[tuple[bool, bool]] = []  # (active, a branch already taken)

    def active() -> bool:
        return all(a for a, _ in stack)

    def cond(line: str) -> bool:
        m = re.search(r'\[ "\$\{(\w+)\}" = "([^"]*)" \]', line)
        assert m, line
        return var.get(m.group(1), "") == m.group(2)

    for raw in script.splitlines():
        line = raw.strip()
        if line.startswith("menuentry"):
            break
        if line.startswith("if "):
            outer = active()
            c = outer and cond(line)
            stack.append((c, c))
        elif line.startswith("elif "):
            _, taken = stack.pop()
            outer = active()
            c = outer and not taken and cond(line)
            stack.append((c, taken or c))
        elif line == "else":
            _, taken = stack.pop()
            stack.append((active() and not taken, True))
        elif line == "fi":
            stack.pop()
        elif not active() or not line or line.startswith("#"):
            continue
        elif line.startswith("load_env"):
            for name in line.split()[1:]:
                if name in saved:
                    var[name] = saved[name]
        elif line.startswith("save_env"):
            for name in line.split()[1:]:
                saved[name] = var.get(name, "")
        elif line.startswith("set "):
            name, _, value = line[4:].partition("=")
            var[name] = value
        else:
            raise AssertionError(f"unexpected line {line!r}")
    return int(var["default"]), var["atoll_fallback"] == "1", saved


STATES = [{}] + [
    {"atoll_pending": p, "atoll_tries": t, "atoll_max_tries": "3"}
    for p in ("", "c2.1", "c1.0", "c9.9")
    for t in ("", "0", "1", "2", "3", "9", "x")
]


@pytest.mark.parametrize("ids", [IDS, ["c2.1"], ["c1.0", "c2.1", "c0.0"]])
@pytest.mark.parametrize("env", STATES)
def test_grub_script_matches_state_machine(env: dict[str, str], ids: list[str]) -> None:
    script = loader_cfg(deps(ids), "root=UUID=x rw")
    entry, fallback, saved = run_script(script, env)
    want = grub_step(env, ids)
    assert (entry, fallback) == (want.entry, want.fallback)
    assert {k: v for k, v in saved.items() if v or k in env} == want.env


def test_menu_entries_follow_deployments_order() -> None:
    script = loader_cfg(deps(IDS), "root=UUID=abc rw console=ttyS0,115200n8")
    entries = re.findall(r"linux /boot/atoll/(\w+)/vmlinuz .* atoll.deployment=(\S+)", script)
    assert entries == [("c2", "c2.1"), ("c1", "c1.0")]
    assert "atoll.fallback=${atoll_fallback}" in script


def test_unsafe_values_are_refused() -> None:
    with pytest.raises(InputError):
        loader_cfg(deps(["c1.0; reboot"]), "rw")
    with pytest.raises(InputError):
        loader_cfg(deps(IDS), "rw $(evil)")
    with pytest.raises(InputError):
        loader_cfg([], "rw")


@pytest.mark.parametrize("name", ["loader", "static", "early"])
def test_grub_script_check_accepts_rendered_scripts(name: str, tmp_path: Path) -> None:
    tool = shutil.which("grub-script-check")
    assert tool, "grub-script-check missing: apt-get install grub2-common"
    text = {"loader": loader_cfg(deps(IDS), "root=UUID=1-2 rw"), "static": static_cfg(),
            "early": early_cfg("0b1c2d3e-1111-2222-3333-444455556666")}[name]
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(text)
    proc = subprocess.run([tool, cfg], capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_grubenv_roundtrip_and_size() -> None:
    block = grubenv.render({"atoll_pending": "c2.1", "atoll_tries": "3"})
    assert len(block) == grubenv.ENV_SIZE
    assert grubenv.parse(block) == {"atoll_pending": "c2.1", "atoll_tries": "3"}
    with pytest.raises(InputError):
        grubenv.render({"k": "v" * 2000})


def test_grubenv_reads_what_grub_editenv_writes(tmp_path: Path) -> None:
    tool = shutil.which("grub-editenv")
    assert tool, "grub-editenv missing: apt-get install grub-common"
    path = tmp_path / "grubenv"
    subprocess.run([tool, path, "create"], check=True)
    subprocess.run([tool, path, "set", "atoll_pending=c2.1", "atoll_tries=2"], check=True)
    assert grubenv.parse(path.read_bytes()) == {"atoll_pending": "c2.1", "atoll_tries": "2"}
    path.write_bytes(grubenv.render({"atoll_tries": "1"}))
    out = subprocess.run([tool, path, "list"], check=True, capture_output=True).stdout
    assert out.decode().split() == ["atoll_tries=1"]
