#!/usr/bin/env bash
# Every test, on every supported PostgreSQL major that can run here:
#
#   15  (bookworm's packages)            pg_regress and all of pytest
#   17, 18 (built from Debian's sources) pg_regress and pytest's smoke subset (-m smoke)
#   16  (no Debian source exists)        compiled only (scripts/compile-check-16.sh)
#
# Each major is installed first (scripts/setup.sh with PG_MAJOR; the engine's
# Python dependencies are installed once and shared by all of them), so the
# tests of one major may use another's server (tests/test_docker_files.py
# builds the Docker image's steps against 17).
#
# AIDB_TEST_MAJORS limits the run, e.g. AIDB_TEST_MAJORS=15 for a quick one.
#
# With arguments, test.sh is a developer's loop: pytest with those arguments
# on 15 alone (after its setup), without pg_regress (scripts/regress.sh) and
# the other majors unless AIDB_TEST_MAJORS names them. The fast loop skips
# the tests marked slow (the local model's torch, crashes and restarts,
# large backlogs, Docker builds): 685 tests in 2 min 40 s on two cores
# (3 min 46 s while other test runs shared them; the whole suite: 13.5 min):
#
#   scripts/test.sh -m 'not slow'
#   scripts/test.sh -m 'not slow' -k models     # and narrower still
set -euo pipefail
cd "$(dirname "$0")/.."

FULL=15                                      # the major that runs all of pytest
if [ $# -gt 0 ]; then
    MAJORS=${AIDB_TEST_MAJORS:-$FULL}
    REGRESS=${AIDB_TEST_MAJORS:+yes}
else
    MAJORS=${AIDB_TEST_MAJORS:-15 16 17 18}
    REGRESS=yes
fi
PYTHON=${AIDB_DEV_VENV:-/opt/aidb-dev-venv}/bin/python

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# pytest, failing also when it selected no test (its exit code 5).
run_pytest() {
    local status=0
    "$PYTHON" -m pytest "$@" || status=$?
    if [ $status -eq 5 ]; then
        echo "test.sh: pytest ran no test (pytest $*)" >&2
        return 1
    fi
    return $status
}

declare -A took
for major in $MAJORS; do
    started=$SECONDS
    if [ "$major" = 16 ]; then
        step "PostgreSQL 16: compile check"
        scripts/compile-check-16.sh
    else
        step "PostgreSQL $major: setup"
        PG_MAJOR=$major scripts/setup.sh
    fi
    took[$major]=$((SECONDS - started))
done

for major in $MAJORS; do
    [ "$major" = 16 ] && continue
    started=$SECONDS
    PG_CONFIG=$(PG_MAJOR=$major scripts/setup.sh --pg-config)
    export PG_CONFIG
    if [ -n "$REGRESS" ]; then
        step "PostgreSQL $major: pg_regress"
        scripts/regress.sh
    fi
    if [ "$major" = "$FULL" ]; then
        step "PostgreSQL $major: pytest"
        run_pytest tests "$@"
    else
        step "PostgreSQL $major: pytest smoke subset"
        run_pytest tests -m smoke
    fi
    took[$major]=$((${took[$major]} + SECONDS - started))
done

for major in $MAJORS; do
    echo "PostgreSQL $major: setup and tests took ${took[$major]} s"
done
