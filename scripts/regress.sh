#!/usr/bin/env bash
# Runs pg_regress (make installcheck) against a temporary instance that preloads
# aidb. pg_regress writes into the tree and the server refuses to run as root,
# so it runs as the postgres user in a copy of the tree.
# Arguments name test files (test/sql/NAME.sql) to run instead of all
# (scripts/regress.sh workers).
set -euo pipefail
cd "$(dirname "$0")/.."
# The PostgreSQL to test: $PG_CONFIG, else the pg_config on PATH.
PG_CONFIG=${PG_CONFIG:-$(command -v pg_config || true)}
[ -n "$PG_CONFIG" ] || { echo "regress.sh: set PG_CONFIG or put pg_config on PATH" >&2; exit 1; }
echo "pg_regress against $("$PG_CONFIG" --version) ($("$PG_CONFIG" --bindir))"

work=$(mktemp -d /tmp/aidb-regress.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -R Makefile aidb.control sql test src "$work"/
chown -R postgres: "$work" 2>/dev/null || true
if ! (cd "$work" && runuser -u postgres -- make -s PG_CONFIG="$PG_CONFIG" installcheck ${*:+REGRESS="$*"}); then
    cat "$work"/regression.diffs 2>/dev/null | head -300
    # Keep the actual output where a developer can review and accept it.
    rm -rf results && cp -R "$work"/results results 2>/dev/null || true
    echo "actual output kept in results/ (cp results/NAME.out test/expected/ to accept)"
    exit 1
fi
