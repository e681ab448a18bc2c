#!/bin/bash
# Run every test tier (unit, integration, vm). Installs what it needs first.
# Services the tests need (dockerd, etcd, HTTP servers, QEMU) are started by
# the tests' own fixtures and stopped when they end.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
# A whole run writes about 20 GiB at its peak (VM disks, stores, the test cache under
# /var/tmp); a machine shared with other work runs out in the VM tier otherwise.
for dir in /tmp /var/tmp; do
    free_gib=$(df -P -BG "$dir" | awk 'NR == 2 {print int($4)}')
    if [ "${free_gib:-0}" -lt 30 ]; then
        echo "test.sh: warning: ${free_gib} GiB free under $dir; a whole run needs about" \
             "20 GiB at its peak (old runs' /tmp/pytest-of-*/ and /var/tmp/atoll-* can go)" >&2
    fi
done
exec .venv/bin/python -m pytest "$@"
