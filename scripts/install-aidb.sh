#!/usr/bin/env bash
# Builds and installs aidb (C library, extension script, Python engine and
# its dependencies) into the PostgreSQL of $PG_CONFIG (default: pg_config on
# PATH). The one build step of scripts/setup.sh, for every major, and of the
# Dockerfile.
#
# `make clean` first: objects built for another major must never be linked
# in (PGXS does not track the server headers an object was compiled against).
# The engine's dependencies are pip-installed for /usr/bin/python3, the
# interpreter PL/Python embeds, and shared between majors when
# ENGINE_DEPS_ROOT is set (see Makefile); then the local model is exported
# to ONNX from its bundled weights, offline (docs/architecture.md, "The
# local model").
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=${PG_CONFIG:-pg_config}
make -s clean PG_CONFIG="$PG_CONFIG"
make -s PG_CONFIG="$PG_CONFIG"
make -s install PG_CONFIG="$PG_CONFIG"
