"""Boot benchmark under QEMU TCG: atoll's image vs the same tree booted plainly.

Both disks come from the same mmdebstrap tarball + the ``boot`` feature (same
kernel, initrd, packages; same GRUB core images and disk layout). atoll's:
the tree composed to the atoll layout, committed to a store and deployed
(sysroot with its repo), GRUB menu from the loader with boot counting, the
initramfs hook, boot-complete running the health checks. Plain: the tree as
an ordinary ext4 root (/etc in place, kernel in /boot), one GRUB entry, and a
unit that prints a marker once multi-user.target is reached.

Measured: power-on (QEMU start) to "marked good" (atoll: boot-complete's
marker; plain: the multi-user marker), and the image sizes.

And ``atoll update apply`` (the scenario of tests/vm/test_agent_update.py: v1
= the boot tree + the agent, v2 = v1 + a version file + 24 MiB of new data):
v2 is downloaded over TUF into a v1 sysroot on the host (a real
``update download`` from a local server), then ``atoll update apply`` (stage:
verify every object and check out; finalize: /etc merge, kernel copy, loader
swap; no reboot) is timed inside the booted guest (a oneshot unit after
boot-complete, atolld masked, wall clock of the command) and natively on the
host on a copy of the same sysroot.

    .venv/bin/python bench/bench_boot.py [--runs N] [--firmware bios|uefi]
                                         [--only boot|apply] [--json] [--profile] [--split]

The guest's spread between runs of one image is wide (11-15 s for the apply):
judge a change on ``--runs 5`` at least. ``--profile`` runs the guest's apply under
cProfile and prints its top functions (slower; for finding where the time goes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from atoll.boot.devsysroot import cached_base, cached_repo, compose_tree, make_sysroot
from atoll.boot.image import assemble_disk, build_image
from atoll.boot.qemu import VM, overlay
from atoll.cli import main as atoll
from atoll.deploy import Sysroot

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the in-guest update scenario is the VM tests' one
from tests.integration.delivery_fixtures import serve_www  # noqa: E402
from tests.vm.agent_fixtures import PAYLOAD_BYTES, make_versions, publish  # noqa: E402

CACHE = Path(os.environ.get("ATOLL_TEST_CACHE", "/var/tmp/atoll-test-cache"))
SIZE = 4 << 30

PLAIN_MARKER_UNIT = """[Unit]
Description=bench: plain boot reached multi-user
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo PLAIN-BOOT-COMPLETE > /dev/ttyS0'

[Install]
WantedBy=multi-user.target
"""


def plain_root(dest: Path, root_uuid: str) -> None:
    """The same mmdebstrap tree + boot feature, left as a plain Debian root."""
    base, _ = cached_base(CACHE)
    compose_tree(base, dest, layout=False)
    kver = sorted(p.name[len("vmlinuz-"):] for p in (dest / "boot").glob("vmlinuz-*"))[-1]
    unit = dest / "etc/systemd/system/plain-boot-complete.service"
    unit.write_text(PLAIN_MARKER_UNIT)
    wants = dest / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    os.symlink("../plain-boot-complete.service", wants / "plain-boot-complete.service")
    grub = dest / "boot/grub"
    grub.mkdir(parents=True)
    (grub / "grub.cfg").write_text(
        "serial --unit=0 --speed=115200\nterminal_input serial console\n"
        "terminal_output serial console\nset timeout_style=hidden\nset timeout=0\n"
        "menuentry 'Debian' {\n"
        f"  linux /boot/vmlinuz-{kver} root=UUID={root_uuid} rw console=ttyS0,115200n8"
        " panic=10\n"
        f"  initrd /boot/initrd.img-{kver}\n}}\n")


def boot_time(image: Path, work: Path, marker: str, firmware: str) -> float:
    disk = overlay(image, work / f"run-{uuid.uuid4().hex[:8]}.qcow2")
    with VM(disk, disk.with_suffix(".console"), firmware=firmware) as vm:
        vm.wait_for(marker, 600)
        took = vm.elapsed()
    disk.unlink()
    return took


APPLY_SCRIPT = """#!/bin/sh
# let the boot settle first (no other job queued), so that late units do not share
# the guest's two emulated CPUs with the command; at most 120 s
i=0
while [ $i -lt 120 ] && systemctl list-jobs --no-legend | grep -qv atoll-bench-apply; do
  sleep 1; i=$((i + 1))
done
sleep 3
p0=0 p1=0
if [ -e /etc/atoll-bench/split ]; then  # --split: prepare first, then time the apply alone
  p0=$(date +%s.%N)
  atoll -q update prepare > /dev/null 2> /run/bench-prepare.err
  p1=$(date +%s.%N)
fi
start=$(date +%s.%N)
if [ -e /etc/atoll-bench/profile.py ]; then
  python3 -I /etc/atoll-bench/profile.py > /run/bench-apply.json 2> /run/bench-apply.err
else
  atoll --json update apply > /run/bench-apply.json 2> /run/bench-apply.err
fi
rc=$?
end=$(date +%s.%N)
{
  tail -n 20 /run/bench-apply.err
  [ -e /run/bench-profile.txt ] && sed 's/^/BENCH-PROF /' /run/bench-profile.txt
  grep -h '"event":"\\(prepare\\|deploy\\)"' /atoll/state/events.jsonl | sed 's/^/BENCH-EVENT /'
  echo "BENCH-APPLY {\\"rc\\": $rc, \\"start\\": $start, \\"end\\": $end, \\
\\"p0\\": $p0, \\"p1\\": $p1}"
} > /dev/ttyS0
"""

# --profile: the same command under cProfile (imports included), its top functions
# printed to the console
PROFILE_SCRIPT = """import cProfile, io, pstats, sys
sys.path.insert(0, "/usr/lib/atoll/python")
sys.argv = ["atoll", "--json", "update", "apply"]
prof = cProfile.Profile()
prof.enable()
try:
    from atoll.cli import main
    rc = main()
except SystemExit as exc:
    rc = exc.code
prof.disable()
out = io.StringIO()
stats = pstats.Stats(prof, stream=out)
stats.sort_stats("tottime").print_stats(35)
stats.sort_stats("cumulative").print_stats(45)
with open("/run/bench-profile.txt", "w") as fh:
    fh.write(out.getvalue())
sys.exit(rc)
"""

APPLY_UNIT = """[Unit]
Description=bench: time atoll update apply
After=multi-user.target atoll-boot-complete.service

[Service]
Type=oneshot
ExecStart=/etc/atoll-bench/apply.sh

[Install]
WantedBy=multi-user.target
"""


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def apply_setup(work: Path, profile: bool = False, split: bool = False) -> tuple[Path, Path]:
    """A v1 sysroot with v2 downloaded (a real TUF download) and its image (qcow2).

    The image's v1 deployment runs the timing unit and has atolld masked (so
    `update apply` acts itself instead of asking the agent). Returns (sysroot, image).
    """
    v = make_versions(CACHE, work / "versions")
    www = publish(v.pub, work / "publish")
    sysroot = work / "apply-sysroot"
    sr = Sysroot(sysroot)
    sr.init(bootloader="grub")
    v1 = sr.deploy(v.c1, repo=v.pub).id
    with serve_www(www) as server:
        for argv in (["remote", "add", "origin", server.url, "--channel", "site/base",
                      "--root", str(www / "metadata/root.json")],
                     ["update", "download"]):
            assert atoll(["-q", "--sysroot", str(sysroot), *argv]) == 0, argv
    etc = sysroot / "atoll/deploy" / v1 / "etc"
    (etc / "atoll-bench").mkdir()
    (etc / "atoll-bench/apply.sh").write_text(APPLY_SCRIPT)
    (etc / "atoll-bench/apply.sh").chmod(0o755)
    if profile:
        (etc / "atoll-bench/profile.py").write_text(PROFILE_SCRIPT)
    if split:
        (etc / "atoll-bench/split").write_text("")
    units = etc / "systemd/system"
    (units / "multi-user.target.wants").mkdir(parents=True, exist_ok=True)
    (units / "atoll-bench-apply.service").write_text(APPLY_UNIT)
    os.symlink("../atoll-bench-apply.service",
               units / "multi-user.target.wants/atoll-bench-apply.service")
    os.symlink("/dev/null", units / "atolld.service")
    image = work / "apply.qcow2"
    build_image(sysroot, image, "qcow2", SIZE, "bios")
    return sysroot, image


def apply_in_guest(image: Path, work: Path) -> dict[str, float]:
    """Boot a copy of ``image``; the unit times `atoll update apply` (wall clock)."""
    disk = overlay(image, work / f"apply-{uuid.uuid4().hex[:8]}.qcow2")
    with VM(disk, disk.with_suffix(".console")) as vm:
        m = vm.wait_for(r"BENCH-APPLY (\{.*\})\r?\n", 1200)
        text = vm.text()
    disk.unlink()
    r = json.loads(m.group(1))
    if r["rc"] != 0:
        raise SystemExit(f"update apply failed in the guest:\n{text[-3000:]}")
    prof = re.findall(r"BENCH-PROF (.*?)\r?\n", text)
    if prof:
        print("\n".join(prof), file=sys.stderr)
    events = {e["event"]: _epoch(e["time"]) for e in
              (json.loads(x) for x in re.findall(r"BENCH-EVENT (\{.*\})", text))}
    if r["p1"]:  # --split: `update prepare` ran first, untimed by the apply
        return {"total": r["end"] - r["start"], "prepare_cmd": r["p1"] - r["p0"]}
    # events.jsonl has whole seconds: the split is +-1 s
    return {"total": r["end"] - r["start"], "prepare": events["prepare"] - r["start"],
            "finalize": events["deploy"] - events["prepare"]}


def apply_on_host(sysroot: Path, work: Path) -> float:
    """`atoll update apply` natively on a copy of the prepared sysroot (wall clock)."""
    copy = work / f"apply-host-{uuid.uuid4().hex[:8]}"
    subprocess.run(["cp", "-a", sysroot, copy], check=True)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "atoll.cli", "-q", "--sysroot", str(copy),
                    "update", "apply"], check=True, stdout=subprocess.DEVNULL)
    took = time.monotonic() - start
    subprocess.run(["rm", "-rf", copy], check=True)
    return took


def bench_apply_split(work: Path, runs: int) -> dict[str, Any]:
    """`update prepare` (what atolld does in mode `prepare` once an update is downloaded),
    then `update apply` timed alone: what the customer waits for in that mode."""
    (work / "split").mkdir()
    _, image = apply_setup(work / "split", split=True)
    guest = [apply_in_guest(image, work) for _ in range(runs)]
    return {"split_prepare_guest_s": round(statistics.median(g["prepare_cmd"] for g in guest), 1),
            "split_apply_guest_s": round(statistics.median(g["total"] for g in guest), 1),
            "split_prepare_times": [round(g["prepare_cmd"], 1) for g in guest],
            "split_apply_times": [round(g["total"], 1) for g in guest]}


def bench_apply(work: Path, runs: int, profile: bool = False) -> dict[str, Any]:
    sysroot, image = apply_setup(work, profile)
    with open(image, "rb") as fh:  # into the host's page cache: every run starts alike
        while fh.read(1 << 24):
            pass
    guest = [apply_in_guest(image, work) for _ in range(runs)]
    host = [apply_on_host(sysroot, work) for _ in range(runs)]
    med = {k: statistics.median(g[k] for g in guest) for k in ("total", "prepare", "finalize")}
    return {"apply_guest_s": round(med["total"], 1), "apply_guest_prepare_s": round(med["prepare"]),
            "apply_guest_finalize_s": round(med["finalize"]),
            "apply_host_s": round(statistics.median(host), 1),
            "apply_guest_times": [round(g["total"], 1) for g in guest],
            "apply_host_times": [round(t, 1) for t in host], "payload_bytes": PAYLOAD_BYTES}


def bench_boot(work: Path, runs: int, firmware: str) -> dict[str, Any]:
    repo, _ = cached_repo(CACHE)
    sysroot = work / "sysroot"
    make_sysroot(sysroot, repo, ["test/v1"])
    atoll_img = work / "atoll.qcow2"
    build_image(sysroot, atoll_img, "qcow2", SIZE, "both")
    plain_uuid = str(uuid.uuid4())
    plain_dir = work / "plain"
    plain_root(plain_dir, plain_uuid)
    plain_img = work / "plain.qcow2"
    assemble_disk(plain_dir, plain_img, "qcow2", SIZE, "both", plain_uuid)
    a_times, p_times = [], []
    for _ in range(runs):  # interleaved so that load changes hit both
        p_times.append(boot_time(plain_img, work, r"PLAIN-BOOT-COMPLETE", firmware))
        a_times.append(boot_time(atoll_img, work, r"ATOLL-BOOT-COMPLETE \{.*\"good\"",
                                 firmware))
    a, p = statistics.median(a_times), statistics.median(p_times)
    return {
        "atoll_boot_s": round(a, 1), "plain_boot_s": round(p, 1),
        "boot_ratio": round(a / p, 3),
        "atoll_image_bytes": atoll_img.stat().st_size,
        "plain_image_bytes": plain_img.stat().st_size,
        "size_ratio": round(atoll_img.stat().st_size / plain_img.stat().st_size, 3),
        "atoll_times": [round(t, 1) for t in a_times],
        "plain_times": [round(t, 1) for t in p_times],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--firmware", choices=("bios", "uefi"), default="bios")
    ap.add_argument("--only", choices=("boot", "apply"), help="measure only this")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--split", action="store_true",
                    help="also time `update prepare` then `update apply` alone (atolld's "
                    "mode `prepare`), on an image of its own")
    ap.add_argument("--profile", action="store_true",
                    help="run the guest's `update apply` under cProfile and print its top "
                    "functions (slower: for finding where the time goes, not for figures)")
    args = ap.parse_args()
    result: dict[str, Any] = {"firmware": args.firmware, "runs": args.runs}
    with tempfile.TemporaryDirectory(prefix="atoll-bench-boot-", dir="/var/tmp") as tmp:
        if args.only in (None, "boot"):
            result |= bench_boot(Path(tmp), args.runs, args.firmware)
        if args.only in (None, "apply"):
            result |= bench_apply(Path(tmp), args.runs, args.profile)
            if args.split:
                result |= bench_apply_split(Path(tmp), args.runs)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if "boot_ratio" in result:
        r = result
        print(f"power-on to marked good ({args.firmware}, TCG, median of {args.runs}): "
              f"atoll {r['atoll_boot_s']:.1f} s, plain {r['plain_boot_s']:.1f} s, "
              f"ratio {r['boot_ratio']:.2f}x (target <= 1.2x)")
        print(f"image size (qcow2): atoll {r['atoll_image_bytes'] >> 20} MiB, plain "
              f"{r['plain_image_bytes'] >> 20} MiB, ratio {r['size_ratio']:.2f}x")
    if "apply_guest_s" in result:
        r = result
        print(f"atoll update apply (v1 -> v2, median of {args.runs}): in the guest (TCG) "
              f"{r['apply_guest_s']:.1f} s (prepare ~{r['apply_guest_prepare_s']} s, finalize "
              f"~{r['apply_guest_finalize_s']} s); on the host natively "
              f"{r['apply_host_s']:.1f} s")
    if "split_apply_guest_s" in result:
        r = result
        print(f"prepared first (mode prepare): `update prepare` "
              f"{r['split_prepare_guest_s']:.1f} s, then `update apply` "
              f"{r['split_apply_guest_s']:.1f} s (guest, median of {args.runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
