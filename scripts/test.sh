#!/usr/bin/env bash
# The whole test suite: starts the services tests need (PostgreSQL; chains are started by the
# tests themselves from node_modules), runs pytest, stops them again.
set -euo pipefail
cd "$(dirname "$0")/.."
# the checkout page's browser test drives Debian's chromium (installed only when absent)
if [ ! -x /usr/bin/chromium ]; then
  echo "test.sh: installing Debian's chromium for the checkout browser test"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
CREDITBRIDGE_TEST_PG_URL=$(bash scripts/pg.sh start)
export CREDITBRIDGE_TEST_PG_URL
trap 'bash scripts/pg.sh stop' EXIT
# two pytest-xdist workers by default (CI has 2 cores). tests/conftest.py groups what must share
# a worker and gives each worker its own database; groups go out in collection order, so the
# end-to-end group, the longest, starts first. CREDITBRIDGE_TEST_WORKERS=1 runs one process.
WORKERS=${CREDITBRIDGE_TEST_WORKERS:-2}
if [ "$WORKERS" -gt 1 ]; then
  set -- -n "$WORKERS" --no-loadscope-reorder "$@"
fi
.venv/bin/python -m pytest -q -ra -p no:cacheprovider "$@"
