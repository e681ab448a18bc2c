"""Lifecycle logic on a fake runtime: a failed install undoes itself; state on disk."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import pytest

from atoll import apps
from atoll.apps.plan import ContainerPlan
from atoll.apps.runtime import ContainerInfo, ExecResult
from atoll.core import fsutil
from atoll.core.errors import HostStateError, InputError, RuntimeBackendError

BUILTIN = Path(apps.__file__).parent / "specs" / "mariadb.yaml"


class FakeRuntime:
    """An in-memory container engine."""

    name = "docker"

    def __init__(
        self, fail_at: str | None = None, images: tuple[str, ...] = ("atoll/mariadb:bookworm",)
    ):
        self.fail_at = fail_at
        self.images = set(images)
        self.store: dict[str, tuple[ContainerPlan, str]] = {}
        self.networks: set[str] = set()
        self.execs: list[list[str]] = []
        self.stdin: list[bytes] = []

    def _maybe_fail(self, step: str) -> None:
        if self.fail_at == step:
            raise RuntimeBackendError(f"injected failure at {step}")

    def ping(self) -> None:
        self._maybe_fail("ping")

    def image_exists(self, ref: str) -> bool:
        return ref in self.images

    def load_image(self, archive: Path) -> list[str]:
        return []

    def ensure_network(self, name: str, *, internal: bool, labels: dict[str, str]) -> None:
        self._maybe_fail("network")
        self.networks.add(name)

    def remove_network(self, name: str) -> None:
        self.networks.discard(name)

    def create(self, plan: ContainerPlan) -> str:
        self._maybe_fail("create")
        self.store[plan.name] = (plan, "created")
        return "id-" + plan.name

    def start(self, name: str) -> None:
        self._maybe_fail("start")
        self.store[name] = (self.store[name][0], "running")

    def stop(self, name: str, timeout: int) -> None:
        self.store[name] = (self.store[name][0], "exited")

    def remove(self, name: str) -> None:
        self.store.pop(name, None)

    def inspect(self, name: str) -> ContainerInfo | None:
        if name not in self.store:
            return None
        plan, status = self.store[name]
        return ContainerInfo("id-" + name, name, plan.image, status, None, None, 0, plan.labels)

    def containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        return [i for n in self.store if (i := self.inspect(n)) is not None]

    def logs(self, name: str, tail: int | None) -> bytes:
        return b"log line\n"

    def exec(
        self,
        name: str,
        argv: list[str],
        *,
        stdin: Iterable[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        user: str | None = None,
        timeout: float = 600,
    ) -> ExecResult:
        self.execs.append(argv)
        if stdin is not None:
            self.stdin.append(b"".join(stdin))
        if self.fail_at == "exec":  # the database never answers
            return ExecResult(1, b"", b"ERROR 2002: Can't connect")
        return ExecResult(0, b"1\n", b"")


def test_install_writes_state_spec_and_health_check(tmp_path: Path) -> None:
    rt = FakeRuntime()
    inst = apps.install(tmp_path, "db", spec_file=BUILTIN, runtime=rt)  # type: ignore[arg-type]
    state = fsutil.read_json(inst.paths.state)
    assert state["app"] == "db" and state["container"] == "atoll-db" and state["role"] == "database"
    assert inst.paths.spec.read_text() == BUILTIN.read_text()
    assert inst.paths.health_dropin.read_text().startswith("#!/bin/sh")
    assert rt.store["atoll-db"][1] == "running" and rt.networks == {"atoll-db"}
    # The monitoring user is set up over stdin, never argv; no secret in any argv.
    secrets = [(inst.paths.secrets / n).read_text() for n in ("root-password", "monitor-password")]
    assert any(secrets[1].encode() in s for s in rt.stdin)
    assert not any(s in " ".join(a) for a in rt.execs for s in secrets)
    with pytest.raises(HostStateError, match="already installed"):
        apps.install(tmp_path, "db", spec_file=BUILTIN, runtime=rt)  # type: ignore[arg-type]


@pytest.mark.parametrize("step", ["network", "create", "start", "exec"])
def test_failed_install_leaves_nothing(tmp_path: Path, step: str) -> None:
    rt = FakeRuntime(fail_at=step)
    with pytest.raises(RuntimeBackendError):
        apps.install(
            tmp_path,
            "db",
            spec_file=BUILTIN,
            runtime=rt,  # type: ignore[arg-type]
            ready_timeout=0.3,
        )
    assert list(tmp_path.iterdir()) == []
    assert rt.store == {} and rt.networks == set()


def test_failed_reinstall_keeps_the_kept_data(tmp_path: Path) -> None:
    rt = FakeRuntime()
    inst = apps.install(tmp_path, "db", spec_file=BUILTIN, runtime=rt)  # type: ignore[arg-type]
    (inst.paths.volume("data") / "ibdata1").write_text("precious")
    apps.remove(tmp_path, "db", keep_data=True, runtime=rt)  # type: ignore[arg-type]
    pw = (inst.paths.secrets / "root-password").read_bytes()
    with pytest.raises(RuntimeBackendError):
        apps.install(tmp_path, "db", spec_file=BUILTIN, runtime=FakeRuntime(fail_at="start"))  # type: ignore[arg-type]
    assert (inst.paths.volume("data") / "ibdata1").read_text() == "precious"
    assert (inst.paths.secrets / "root-password").read_bytes() == pw
    assert not inst.paths.state.exists() and not inst.paths.health_dropin.exists()


def test_missing_image_and_existing_container_refused_before_any_change(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not present"):
        apps.install(tmp_path, "db", spec_file=BUILTIN, runtime=FakeRuntime(images=()))  # type: ignore[arg-type]
    rt = FakeRuntime()
    rt.store["atoll-db"] = (None, "running")  # type: ignore[assignment]
    rt.inspect = lambda name: ContainerInfo("x", name, "i", "running", None, None, 0, {})  # type: ignore[method-assign]
    with pytest.raises(HostStateError, match="already exists"):
        apps.install(tmp_path, "db", spec_file=BUILTIN, runtime=rt)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_remove_without_keep_data_and_unknown_app(tmp_path: Path) -> None:
    rt = FakeRuntime()
    inst = apps.install(tmp_path, "db", spec_file=BUILTIN, runtime=rt)  # type: ignore[arg-type]
    apps.remove(tmp_path, "db", runtime=rt)  # type: ignore[arg-type]
    assert not inst.paths.root.exists() and rt.store == {}
    with pytest.raises(InputError, match="not installed"):
        apps.status(tmp_path, "db", runtime=rt)  # type: ignore[arg-type]


def test_units_install(tmp_path: Path) -> None:
    out = apps.install_units(tmp_path, atoll_bin="/opt/atoll/bin/atoll")
    text = out[0].read_text()
    assert "ExecStop=/opt/atoll/bin/atoll app stop --all" in text and "After=docker.service" in text
    link = tmp_path / "etc/systemd/system/multi-user.target.wants/atoll-apps.service"
    assert link.resolve() == out[0].resolve()


def test_docker_feature_enables_engine_and_app_units(tmp_path: Path) -> None:
    from atoll.compose import features

    feat = features.get("docker")
    assert "docker.io" in feat.packages
    (tmp_path / "lib/systemd/system").mkdir(parents=True)
    (tmp_path / "lib/systemd/system/docker.service").write_text("[Unit]\n")
    feat.install(tmp_path)
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants"
    assert os.readlink(wants / "docker.service") == "/lib/systemd/system/docker.service"
    assert (wants / "atoll-apps.service").resolve().is_file()


def test_missing_image_is_loaded_from_the_os_bundle(tmp_path: Path) -> None:
    from atoll.apps.manager import ensure_image

    bundle = tmp_path / "app-images"
    bundle.mkdir()
    (bundle / "mariadb.tar").write_bytes(b"archive")
    (bundle / "index.json").write_text('{"atoll/mariadb:bookworm": "mariadb.tar"}')
    rt = FakeRuntime(images=())
    loaded: list[Path] = []

    def load(archive: Path) -> list[str]:
        loaded.append(archive)
        rt.images.add("atoll/mariadb:bookworm")
        return ["atoll/mariadb:bookworm"]

    rt.load_image = load  # type: ignore[method-assign]
    ensure_image(rt, "atoll/mariadb:bookworm", bundle)  # type: ignore[arg-type]
    assert loaded == [bundle / "mariadb.tar"]
    ensure_image(rt, "atoll/mariadb:bookworm", bundle)  # type: ignore[arg-type]
    assert len(loaded) == 1  # present now: not loaded again
    with pytest.raises(InputError, match="is not present") as exc:
        ensure_image(FakeRuntime(images=()), "other:1", bundle)  # type: ignore[arg-type]
    assert "app_images" in (exc.value.resolution or "")
