#!/bin/bash
# Regenerate the console's screenshots in docs/img/ (docs/console.md): the console's
# real-browser tests (Debian's chromium, headless, 1280x1024) save a screenshot of
# each main page when ATOLL_CONSOLE_SCREENSHOTS names a directory. Run as root on
# Debian 12; installs what it needs first, as the test command does.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
mkdir -p docs/img
ATOLL_CONSOLE_SCREENSHOTS="$PWD/docs/img" exec .venv/bin/python -m pytest -q -p no:cacheprovider \
    tests/integration/test_console.py::test_a_viewer_logs_in_filters_the_fleet_and_opens_a_host \
    tests/integration/test_console_rollouts.py::test_create_watch_halt_and_resume_a_rollout \
    tests/integration/test_console_rollouts.py::test_releases_list_signed_versions_with_package_changes \
    tests/integration/test_console_audit.py::test_a_viewer_reads_filters_and_exports_its_customers_audit_log
