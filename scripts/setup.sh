#!/usr/bin/env bash
# Installs everything aidb needs on Debian bookworm, then builds and installs
# aidb itself. Idempotent: each step checks first, so a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."

# PG_MAJOR picks the PostgreSQL major (default 15, bookworm's own). 15 comes
# from Debian's packages; the majors bookworm does not package (17, 18) are
# built from Debian's source packages into /opt/aidb-pg/MAJOR by
# scripts/build-postgres.sh. `scripts/setup.sh --pg-config` prints the
# pg_config of PG_MAJOR and installs nothing.
PG_MAJOR=${PG_MAJOR:-15}
SYS_PYTHON=/usr/bin/python3          # the interpreter PL/Python embeds
DEV_VENV=${AIDB_DEV_VENV:-/opt/aidb-dev-venv}   # pytest, bench, the aidb CLI
# The engine's dependencies (torch, ...) are installed once here and shared
# by every major's install (Makefile: ENGINE_DEPS_ROOT).
export ENGINE_DEPS_ROOT=${ENGINE_DEPS_ROOT:-/opt/aidb-engine-deps}

# Majors with a pinned Debian source in scripts/build-postgres.sh are built;
# the others come from apt.
case "$PG_MAJOR" in
17|18) PG_SOURCE=build; PG_CONFIG=${AIDB_PG_ROOT:-/opt/aidb-pg}/$PG_MAJOR/bin/pg_config ;;
*)     PG_SOURCE=apt;   PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config ;;
esac
if [ "${1:-}" = "--pg-config" ]; then echo "$PG_CONFIG"; exit 0; fi

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

apt_updated=0
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ $apt_updated -eq 0 ]; then apt-get update -qq; apt_updated=1; fi
    say "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# tesseract: step PerformOcr; DejaVu fonts: the tests render text to OCR.
install_system_packages() {
    local postgres=()
    if [ "$PG_SOURCE" = apt ]; then
        postgres=("postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" "postgresql-plpython3-$PG_MAJOR")
    fi
    apt_install "${postgres[@]}" build-essential dpkg-dev python3-pip python3-venv \
        tesseract-ocr tesseract-ocr-eng fonts-dejavu-core
}

# pgvector is not packaged for bookworm: build Debian's (trixie) source with PGXS.
install_pgvector() {
    if [ -f "$($PG_CONFIG --sharedir)/extension/vector.control" ]; then return 0; fi
    say "building pgvector from Debian's source package"
    local list=/etc/apt/sources.list.d/aidb-trixie-src.list
    if [ ! -f "$list" ]; then
        echo "deb-src http://deb.debian.org/debian trixie main" > "$list"
        apt_updated=0
    fi
    [ $apt_updated -eq 1 ] || { apt-get update -qq; apt_updated=1; }
    local build; build=$(mktemp -d)
    (cd "$build" && apt-get source -qq pgvector >/dev/null 2>&1 \
        && cd pgvector-*/ && make -s OPTFLAGS="" PG_CONFIG="$PG_CONFIG" >/dev/null \
        && make -s OPTFLAGS="" PG_CONFIG="$PG_CONFIG" install >/dev/null)
    rm -rf "$build"
}

# Test and benchmark tools live in their own venv, away from the server's Python.
install_dev_venv() {
    local stamp="$DEV_VENV/.aidb-requirements"
    if [ -f "$stamp" ] && cmp -s "$stamp" requirements-dev.txt; then return 0; fi
    say "creating the development venv $DEV_VENV"
    [ -x "$DEV_VENV/bin/python" ] || "$SYS_PYTHON" -m venv "$DEV_VENV"
    "$DEV_VENV/bin/pip" install -q -r requirements-dev.txt
    "$DEV_VENV/bin/pip" install -q -e python/
    cp requirements-dev.txt "$stamp"
}

install_system_packages
if [ "$PG_SOURCE" = build ]; then
    scripts/build-postgres.sh "$PG_MAJOR"    # the server, PL/Python and pgvector
else
    install_pgvector
fi
say "building and installing aidb for PostgreSQL $PG_MAJOR ($PG_CONFIG)"
PG_CONFIG="$PG_CONFIG" scripts/install-aidb.sh
install_dev_venv
say "setup complete"
