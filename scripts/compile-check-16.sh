#!/usr/bin/env bash
# Compiles aidb against PostgreSQL 16 (-Wall -Wextra -Werror, see Makefile),
# without running it.
#
# Debian's archive carries no postgresql-16 source package (bookworm has 15,
# trixie 17, sid 18) and bookworm's apt has no 16 headers, so 16 cannot be
# built and tested like 17 and 18 (scripts/build-postgres.sh). What can be
# had is PostgreSQL 16.2's server headers and PGXS, shipped inside the PyPI
# wheel pgserver 0.1.4 (an embedded server: no PL/Python, so no tests).
# The wheel is pinned by sha256 and unpacked once into $AIDB_PG_ROOT/16-headers.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${AIDB_PG_ROOT:-/opt/aidb-pg}
HEADERS="$ROOT/16-headers"
WHEEL_PIN="pgserver==0.1.4 --hash=sha256:d595789b47624a3d963aa9aa6359da9be31beb7e61f1a45541953242068b8813"
PG_CONFIG="$HEADERS/pgserver/pginstall/bin/pg_config"

if [ "$(cat "$HEADERS/.aidb-pin" 2>/dev/null)" != "$WHEEL_PIN" ]; then
    echo "==> PostgreSQL 16 headers: $WHEEL_PIN"
    download=$(mktemp -d /tmp/aidb-pg16.XXXXXX)
    trap 'rm -rf "$download"' EXIT
    echo "$WHEEL_PIN" > "$download/requirements.txt"
    /usr/bin/python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary :all: --require-hashes -r "$download/requirements.txt" -d "$download" 2>/dev/null \
        || { echo "compile-check-16.sh: cannot download $WHEEL_PIN from PyPI" >&2; exit 1; }
    rm -rf "$HEADERS"
    mkdir -p "$HEADERS"
    (cd "$HEADERS" && /usr/bin/python3 -m zipfile -e "$download"/pgserver-*.whl . \
        && find pgserver/pginstall/bin -type f -exec chmod +x {} +)
    echo "$WHEEL_PIN" > "$HEADERS/.aidb-pin"
fi
version=$("$PG_CONFIG" --version)
case "$version" in "PostgreSQL 16."*) ;; *) echo "compile-check-16.sh: $PG_CONFIG is $version" >&2; exit 1 ;; esac

# A copy of what the build reads, so the work tree's objects (built for
# another major) are neither used nor replaced.
work=$(mktemp -d /tmp/aidb-cc16.XXXXXX)
trap 'rm -rf "$work" ${download:+"$download"}' EXIT
cp -R Makefile aidb.control sql src "$work"/
(cd "$work" && make -s clean PG_CONFIG="$PG_CONFIG" && make -s with_llvm=no PG_CONFIG="$PG_CONFIG")
[ -f "$work/aidb.so" ]
echo "aidb compiles against $version with -Wall -Wextra -Werror"
