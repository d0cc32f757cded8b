# aidb's external worker (`aidb worker`): the pipeline engine outside
# PostgreSQL, over psycopg. Build from the repository's root:
#
#   docker build -f docker/worker.Dockerfile -t aidb-worker .
#   docker run -e AIDB_WORKER_DB_URL=postgresql://user:pw@host/db aidb-worker
#
# Every option can be given as an argument or an AIDB_WORKER_* variable.
FROM python:3.11-slim

COPY python /usr/src/aidb/python
RUN pip install --no-cache-dir /usr/src/aidb/python \
    && rm -rf /usr/src/aidb \
    && useradd --system --create-home aidb

USER aidb
WORKDIR /home/aidb
ENTRYPOINT ["aidb", "worker"]
