#!/usr/bin/env bash
# Installs everything aidb needs on Debian bookworm, then builds and installs
# aidb itself. Idempotent: each step checks first, so a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_MAJOR=${PG_MAJOR:-15}
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
SYS_PYTHON=/usr/bin/python3          # the interpreter PL/Python embeds
DEV_VENV=${AIDB_DEV_VENV:-/opt/aidb-dev-venv}   # pytest, bench, the aidb CLI

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
    apt_install "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" \
        "postgresql-plpython3-$PG_MAJOR" build-essential dpkg-dev python3-pip python3-venv \
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
install_pgvector
say "building and installing aidb"
make -s PG_CONFIG="$PG_CONFIG"
make -s PG_CONFIG="$PG_CONFIG" install
install_dev_venv
say "setup complete"
