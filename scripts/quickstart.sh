#!/bin/bash
# atoll quickstart: compose v1, deploy it into a scratch sysroot, compose v2 with a
# changed package set, deploy it, show status and the package diff, roll back.
# Installs what it needs first (apt packages, a venv). Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
WORK=${ATOLL_QUICKSTART_DIR:-/var/tmp/atoll-quickstart}
rm -rf "$WORK"
mkdir -p "$WORK"
REPO=$WORK/repo HOST=$WORK/host
T0=$(date +%s.%N)

step() {
    printf '\n\033[1m==> %s\033[0m\n' "$*"
    STEP_T=$(date +%s.%N)
}
took() { printf '    (%.1f s)\n' "$(echo "$(date +%s.%N) - $STEP_T" | bc)"; }

step "compose v1 from examples/base.yaml (Debian bookworm minbase + security updates)"
atoll compose examples/base.yaml --repo "$REPO"; took
V1=$(atoll store refs --repo "$REPO" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["quickstart/base"])')

step "create an empty sysroot and deploy v1 into it"
atoll --sysroot "$HOST" init
atoll --sysroot "$HOST" deploy quickstart/base --repo "$REPO"; took
# A real host records what it booted from the kernel command line; simulate the boot here.
mkdir -p "$HOST/run/atoll"
atoll --sysroot "$HOST" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pending"]["id"])' > "$HOST/run/atoll/booted"
echo "    (simulated boot of v1)"

step "make a local change in the host's /etc (it must survive the update)"
DEP=$(cat "$HOST/run/atoll/booted")
echo "db01" > "$HOST/atoll/deploy/$DEP/etc/hostname"
echo "    /etc/hostname := db01"

step "compose v2 from examples/base-v2.yaml (adds netcat-openbsd, changes /etc/motd)"
atoll compose examples/base-v2.yaml --repo "$REPO"; took

step "package diff v1 -> v2"
atoll store diff "$V1" quickstart/base --repo "$REPO"

step "deploy v2 (the next boot; v1 stays as rollback)"
atoll --sysroot "$HOST" deploy quickstart/base --repo "$REPO"; took
atoll --sysroot "$HOST" status
NEXT=$(atoll --sysroot "$HOST" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pending"]["id"])')
echo "    v2's /etc/hostname: $(cat "$HOST/atoll/deploy/$NEXT/etc/hostname") (local change kept)"
echo "    v2's /etc/motd:     $(cat "$HOST/atoll/deploy/$NEXT/etc/motd") (new image default)"

step "roll back: v1 boots next again"
atoll --sysroot "$HOST" rollback
atoll --sysroot "$HOST" status

step "verify the host's store"
atoll store fsck --repo "$HOST/atoll/repo"; took

printf '\nquickstart done in %.0f s; everything is in %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$WORK"
