"""A small QEMU harness: boot a disk image under TCG, watch the serial console.

The serial console goes to a file; :meth:`VM.wait_for` scans it for a regex
from a given offset, bounded in time, failing early if QEMU exits. Guests
print marker lines (``ATOLL-...``) to the console from the initramfs and
boot-complete.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

from atoll.core.errors import HostStateError, InputError, ToolError
from atoll.core.run import require_tool, run, spawn

__all__ = ["OVMF_CODE", "OVMF_VARS", "VM", "overlay"]

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def overlay(base: Path, path: Path) -> Path:
    """Create a qcow2 overlay of ``base`` (so a test never writes the shared image)."""
    fmt = "qcow2" if base.read_bytes()[:4] == b"QFI\xfb" else "raw"
    run([require_tool("qemu-img", package="qemu-utils"), "create", "-q", "-f", "qcow2",
         "-b", base.resolve(), "-F", fmt, path], what="create an overlay image")
    return path


class VM:
    """One QEMU guest booted from ``image`` with its serial console in ``console``."""

    def __init__(self, image: Path, console: Path, firmware: str = "bios",
                 memory: int = 1024, cpus: int = 2, *, net: bool = False,
                 forwards: dict[int, int] | None = None, drives: tuple[Path, ...] = ()
                 ) -> None:
        """``net``: QEMU user networking (the host's 127.0.0.1 is 10.0.2.2 in the
        guest); ``forwards``: {host port on 127.0.0.1: guest port} (implies net);
        ``drives``: extra raw disks (e.g. a CIDATA seed), read-only."""
        if firmware not in ("bios", "uefi"):
            raise InputError(f"unknown firmware {firmware!r}", resolution="bios or uefi")
        self.image, self.console, self.firmware = image, console, firmware
        self.memory, self.cpus = memory, cpus
        self.forwards = dict(forwards or {})
        self.net = net or bool(self.forwards)
        self.drives = drives
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def argv(self) -> list[str]:
        qemu = require_tool("qemu-system-x86_64", package="qemu-system-x86")
        fmt = "qcow2" if self.image.read_bytes()[:4] == b"QFI\xfb" else "raw"
        # Entropy from the start, as on real servers (RDRAND) and cloud VMs
        # (virtio-rng): without it a 6.1 guest under TCG gathers timer jitter
        # at boot and can spin for many minutes in systemd-random-seed's
        # getrandom() (seen in CI, 2026-11-30).
        argv = [qemu, "-accel", "tcg,thread=multi", "-cpu", "qemu64,+rdrand",
                "-smp", str(self.cpus),
                "-m", str(self.memory), "-display", "none", "-monitor", "none",
                "-serial", f"file:{self.console}", "-nic", self._nic(),
                "-device", "virtio-rng-pci",
                "-drive", f"file={self.image},if=virtio,format={fmt},cache=unsafe"]
        for extra in self.drives:
            argv += ["-drive", f"file={extra},if=virtio,format=raw,readonly=on"]
        if self.firmware == "uefi":
            vars_copy = self.console.with_suffix(".vars.fd")
            if not vars_copy.exists():
                shutil.copyfile(OVMF_VARS, vars_copy)
            argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                     "-drive", f"if=pflash,format=raw,file={vars_copy}"]
        return argv

    def _nic(self) -> str:
        if not self.net:
            return "none"
        fwd = "".join(f",hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in self.forwards.items())
        return "user,model=virtio-net-pci" + fwd

    def start(self) -> VM:
        """Power on (the console file is truncated)."""
        self.console.write_bytes(b"")
        self.started = time.monotonic()
        self.proc = spawn(self.argv(), die_with_parent=True)
        return self

    def text(self) -> str:
        """Everything the guest printed so far."""
        try:
            return self.console.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> re.Match[str]:
        """Wait until ``pattern`` appears in the console after offset ``start``.

        Raises:
            HostStateError: timeout, or QEMU exited first (the console tail is attached).
        """
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            m = rx.search(text, start)
            if m:
                return m
            if self.proc is not None and self.proc.poll() is not None:
                why = f"QEMU exited ({self.proc.returncode})"
                break
            if time.monotonic() > deadline:
                why = f"timed out after {timeout:.0f}s"
                break
            time.sleep(0.5)
        tail = "\n".join(text.splitlines()[-40:])
        raise HostStateError(f"waiting for {pattern!r}: {why}", details=tail)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def kill(self) -> None:
        """Pull the plug."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def wait_exit(self, timeout: float) -> int:
        """Wait for QEMU to exit (guest powered off).

        Raises:
            ToolError: it did not exit in time (it is killed).
        """
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise ToolError("QEMU did not exit", argv=self.argv(), returncode=-1) from exc

    def __enter__(self) -> VM:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill()
