#!/bin/bash
# Run every test tier (unit, integration, vm). Installs what it needs first.
# Services the tests need (dockerd, etcd, HTTP servers, QEMU) are started by
# the tests' own fixtures and stopped when they end.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest "$@"
