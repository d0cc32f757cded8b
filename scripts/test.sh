#!/usr/bin/env bash
# Every test: installs what is missing (scripts/setup.sh), then runs
# pg_regress (SQL surface) and pytest (real clusters, real HTTP servers).
# Extra arguments go to pytest, e.g. scripts/test.sh -k models
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "==> pg_regress"
scripts/regress.sh
echo "==> pytest"
/opt/aidb-dev-venv/bin/python -m pytest tests "$@"
