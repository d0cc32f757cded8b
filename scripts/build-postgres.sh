#!/usr/bin/env bash
# Builds a PostgreSQL major that Debian bookworm does not package (17, 18)
# from Debian's own source package, with PL/Python for /usr/bin/python3 and
# the pgvector release that major needs, into a self-contained prefix:
#
#   scripts/build-postgres.sh 17        # -> /opt/aidb-pg/17/bin/pg_config
#
# Every source is pinned to a version and the sha256 of its .dsc, and every
# file the .dsc lists is checked against the .dsc's own sha256 before it is
# unpacked. The result is cached: a stamp in the prefix records what was
# built, and a second run with the same pins returns at once.
#
# Environment: AIDB_PG_ROOT (default /opt/aidb-pg; the prefix is $AIDB_PG_ROOT/MAJOR),
# AIDB_PG_CACHE (downloads, default /var/cache/aidb-pg), DEBIAN_MIRROR.
set -euo pipefail
cd "$(dirname "$0")/.."

MAJOR=${1:?usage: scripts/build-postgres.sh MAJOR (17 or 18)}
ROOT=${AIDB_PG_ROOT:-/opt/aidb-pg}
CACHE=${AIDB_PG_CACHE:-/var/cache/aidb-pg}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PREFIX="$ROOT/$MAJOR"
JOBS=${AIDB_BUILD_JOBS:-2}

# Pins: source package, version, sha256 of its .dsc. Debian's index and pool
# can disagree (the index may name a version the pool no longer holds), so
# these are versions the pool was seen to hold, not whatever the index says.
#   17: trixie's postgresql-17 and pgvector 0.8.0
#   18: sid's postgresql-18 and pgvector 0.8.6 (0.8.0 does not build on 18)
# 16 is not pinned: no Debian suite that deb.debian.org serves carries a
# postgresql-16 source package any more (bookworm has 15, trixie 17).
case "$MAJOR" in
17) PG_SRC=(postgresql-17 17.11-0+deb13u1 bf148ae423a982707c3f60672c3a072ef62b701bd9f5df847d9f4b8c9b3e3b18)
    VECTOR_SRC=(pgvector 0.8.0-1 a71780bf7ab9901094a3d9869c489b6e2bcb858a8c14a5fa52d159933e016308) ;;
18) PG_SRC=(postgresql-18 18.6-3 a4254c4548ebeea683832de193460ee8a9f1271418e884803b44ded1aead1776)
    VECTOR_SRC=(pgvector 0.8.6-1 d08de2aa48b7cb70319cc896aa3d95514690d1009f96579dbe6b23c59634f4e6) ;;
*)  echo "build-postgres.sh: no pinned Debian source for PostgreSQL $MAJOR (pinned: 17, 18;" \
         "15 comes from bookworm's packages, see scripts/setup.sh)" >&2
    exit 2 ;;
esac

# Debian's patches that move files into its multi-version layout
# (/usr/lib/postgresql/MAJOR/lib, ...) are left out: the prefix is self-contained.
SKIP_PATCHES=" 50-per-version-dirs.patch libpgport-pkglibdir "
CONFIGURE_FLAGS=(--with-python --with-openssl --with-icu --with-libxml
                 --with-system-tzdata=/usr/share/zoneinfo --without-llvm)
STAMP_TEXT="${PG_SRC[*]} ${VECTOR_SRC[*]} without-patches:$(echo $SKIP_PATCHES | tr ' ' ,) ${CONFIGURE_FLAGS[*]} PYTHON=/usr/bin/python3"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "build-postgres.sh: $*" >&2; exit 1; }

# One build of a major at a time (a second waits, then finds it built).
mkdir -p "$ROOT"
exec 9>"$ROOT/.build-$MAJOR.lock"
flock 9
if [ -f "$PREFIX/.aidb-build" ] && [ "$(cat "$PREFIX/.aidb-build")" = "$STAMP_TEXT" ] \
        && [ -x "$PREFIX/bin/pg_config" ]; then
    echo "PostgreSQL $MAJOR is up to date in $PREFIX (${PG_SRC[1]}, pgvector ${VECTOR_SRC[1]})"
    exit 0
fi

# Build dependencies (the parts of Debian's Build-Depends this configuration uses).
deps=(build-essential dpkg-dev curl ca-certificates bzip2 xz-utils bison flex pkg-config
      libreadline-dev zlib1g-dev libssl-dev libicu-dev libxml2-dev python3-dev)
missing=()
for pkg in "${deps[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# fetch URL FILE: into $CACHE (kept: a rebuild does not download again).
fetch() {
    local url=$1 file=$2
    [ -s "$CACHE/$file" ] && return 0
    if ! curl -fsSL --retry 3 -o "$CACHE/$file.part" "$url"; then
        rm -f "$CACHE/$file.part"
        return 1
    fi
    mv "$CACHE/$file.part" "$CACHE/$file"
}

# get_source PACKAGE VERSION DSC_SHA256 DIR: downloads the pinned .dsc and
# the files it lists, verifies them, unpacks the original source into DIR
# and applies Debian's patches (except SKIP_PATCHES).
get_source() {
    local package=$1 version=$2 sha=$3 dir=$4
    local pool="$MIRROR/pool/main/${package:0:1}/$package"
    local dsc="${package}_${version}.dsc"
    mkdir -p "$CACHE"
    if ! fetch "$pool/$dsc" "$dsc"; then
        die "$pool/$dsc cannot be downloaded: Debian's pool no longer holds $package $version.
    Pick a version the pool holds (e.g. apt-cache showsrc $package with a deb-src line for
    the suite; check that the pool has its .dsc), then update the pin and its sha256 in $0."
    fi
    echo "$sha  $CACHE/$dsc" | sha256sum --check --quiet --strict \
        || { rm -f "$CACHE/$dsc"; die "$dsc does not match its pinned sha256 $sha"; }
    # The .dsc lists every file of the source package with its sha256.
    local files
    files=$(awk '/^Checksums-Sha256:/ {on=1; next} /^[^ ]/ {on=0} on && NF == 3 {print $1, $3}' "$CACHE/$dsc")
    [ -n "$files" ] || die "$dsc lists no files"
    while read -r file_sha file; do
        fetch "$pool/$file" "$file" || die "$pool/$file (listed by $dsc) cannot be downloaded"
        echo "$file_sha  $CACHE/$file" | sha256sum --check --quiet --strict \
            || { rm -f "$CACHE/$file"; die "$file does not match the sha256 in $dsc"; }
    done <<< "$files"
    # Checksums are verified above; dpkg-source checks them again (and says
    # that it cannot check the .dsc's signature without debian-keyring: the
    # pinned sha256 stands in for it).
    dpkg-source --skip-patches -x "$CACHE/$dsc" "$dir" >"$dir.log" 2>&1 \
        || { cat "$dir.log" >&2; die "dpkg-source cannot unpack $dsc"; }
    if [ -f "$dir/debian/patches/series" ]; then
        local patch
        while read -r patch _; do
            case "$patch" in ''|'#'*) continue ;; esac
            [[ "$SKIP_PATCHES" == *" $patch "* ]] && continue
            patch -s -p1 -d "$dir" < "$dir/debian/patches/$patch" \
                || die "Debian patch $patch does not apply to $package $version"
        done < "$dir/debian/patches/series"
    fi
}

build=$(mktemp -d /tmp/aidb-pg-build.XXXXXX)
trap 'rm -rf "$build"' EXIT
start=$SECONDS

say "PostgreSQL $MAJOR: Debian source ${PG_SRC[0]} ${PG_SRC[1]}"
get_source "${PG_SRC[@]}" "$build/postgresql"
# Installed into a staging directory, then moved: a failed build never leaves
# a half-installed prefix behind a valid-looking pg_config.
(cd "$build/postgresql" \
    && ./configure -q --prefix="$PREFIX" "${CONFIGURE_FLAGS[@]}" PYTHON=/usr/bin/python3 >/dev/null \
    && make -s -j"$JOBS" >/dev/null \
    && make -s install DESTDIR="$build/stage" >/dev/null) \
    || die "building PostgreSQL $MAJOR failed (source in $build/postgresql)"
rm -rf "$PREFIX.new"
mv "$build/stage$PREFIX" "$PREFIX.new"

# pg_config answers relative to where it is, so the staged server builds
# pgvector into itself.
say "pgvector: Debian source ${VECTOR_SRC[0]} ${VECTOR_SRC[1]}"
get_source "${VECTOR_SRC[@]}" "$build/pgvector"
(cd "$build/pgvector" \
    && make -s OPTFLAGS="" PG_CONFIG="$PREFIX.new/bin/pg_config" with_llvm=no >/dev/null \
    && make -s OPTFLAGS="" PG_CONFIG="$PREFIX.new/bin/pg_config" with_llvm=no install >/dev/null) \
    || die "building pgvector ${VECTOR_SRC[1]} for PostgreSQL $MAJOR failed"
[ -f "$("$PREFIX.new/bin/pg_config" --sharedir)/extension/plpython3u.control" ] \
    || die "PL/Python was not built"

echo "$STAMP_TEXT" > "$PREFIX.new/.aidb-build"
rm -rf "$PREFIX"
mv "$PREFIX.new" "$PREFIX"
say "PostgreSQL $MAJOR built into $PREFIX in $((SECONDS - start)) s"
