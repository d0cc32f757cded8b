#!/usr/bin/env bash
# The aidb demo, from a fresh Debian bookworm machine (as root) to semantic
# search over a table that stays in step with its embeddings:
#   1. installs everything (scripts/setup.sh) and starts the persistent demo
#      cluster (scripts/pgcluster.py start: port 5499, /var/tmp/aidb-cluster);
#   2. loads demo/corpus.csv into public.articles in database aidb_demo;
#   3. creates a pipeline with the embedded model minilm (no key, no network),
#      runs it, and shows aidb.pipem;
#   4. runs three semantic queries, changes a row, and shows the change found;
#   5. switches the pipeline to Live and shows an INSERT embedded at once.
# Re-runnable: each run drops the pipeline and the table and starts over.
set -euo pipefail
cd "$(dirname "$0")/.."

# The persistent demo cluster; override both when 5499 is taken (a directory
# keeps the port it was first initialised with).
PORT=${AIDB_DEMO_PORT:-5499}
DATADIR=${AIDB_DEMO_DIR:-/var/tmp/aidb-cluster}
DB=aidb_demo

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "installing aidb and its dependencies (quick when already done)"
scripts/setup.sh
# The server setup.sh installed aidb into (PG_MAJOR, default 15), for pgcluster.py.
PG_CONFIG=$(scripts/setup.sh --pg-config)
export PG_CONFIG

say "starting the demo cluster"
# A running cluster keeps the aidb.so it preloaded: restart it on the one
# setup.sh just installed.
scripts/pgcluster.py stop --dir "$DATADIR" >/dev/null
if ! scripts/pgcluster.py start --dir "$DATADIR" --port "$PORT"; then
    echo "could not start the demo cluster; if port $PORT is taken, run for example:" >&2
    echo "    AIDB_DEMO_PORT=5498 AIDB_DEMO_DIR=/var/tmp/aidb-demo $0" >&2
    exit 1
fi
psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres <<SQL
SELECT 'CREATE DATABASE $DB' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB') \gexec
SQL

say "loading demo/corpus.csv into public.articles, then the pipeline and the queries"
# One session for all of it: the model is loaded once per session. ECHO shows
# each statement before its result, so the output reads as a psql session.
psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d "$DB" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS aidb CASCADE;
-- The pipeline goes first: its triggers sit on the table being replaced.
SELECT aidb.delete_pipeline('articles', drop_destination => true)
FROM aidb.pipelines WHERE name = 'articles' \g /dev/null
DROP TABLE IF EXISTS public.articles;
CREATE TABLE public.articles (
    id    integer PRIMARY KEY,
    title text NOT NULL,
    body  text NOT NULL
);
\copy public.articles (id, title, body) FROM 'demo/corpus.csv' WITH (FORMAT csv, HEADER true)
RESET client_min_messages;
\set ECHO queries

SELECT count(*) AS articles FROM articles;

\echo
\echo '==> creating the pipeline (embedded model minilm: offline, no key) and running it'
SELECT aidb.create_pipeline('articles', 'articles',
    source_key_column => 'id', source_data_column => 'body',
    step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(400, 500, 50),
    step_2 => 'KnowledgeBase',
    step_2_options => aidb.knowledge_base_config('minilm', distance_operator => 'Cosine')) \g /dev/null
SELECT pipeline, "auto processing", "table: unprocessed rows", "Status" FROM aidb.pipem;
SELECT aidb.run_pipeline('articles') \g /dev/null
\x on
SELECT * FROM aidb.pipem;
\x off

\echo
\echo '==> semantic search: the three nearest articles to each question'
-- The query's vector is computed once: encode_text is VOLATILE, so inside
-- the ORDER BY it would be computed again for every row.
PREPARE search(text) AS
WITH q AS MATERIALIZED (SELECT aidb.encode_text('minilm', $1) AS v)
SELECT a.id, a.title, round((e.embedding <=> q.v)::numeric, 3) AS distance
FROM articles_embeddings e JOIN articles a ON a.id = e.source_key, q
ORDER BY distance LIMIT 3;
EXECUTE search('planets and telescopes');
EXECUTE search('how should I invest my savings for retirement?');
EXECUTE search('getting better at playing an instrument');

\echo
\echo '==> changing a row: the pipeline finds the change, the search follows it'
EXECUTE search('keeping a cat from scratching the sofa');
UPDATE articles SET title = 'Caring for a new kitten',
    body = 'A new kitten needs a scratching post from day one, or it will sharpen its claws '
           'on the sofa. Reward it with a treat every time it uses the post instead.'
WHERE id = 60;
-- An update that leaves the embedded column alone queues nothing.
UPDATE articles SET title = upper(title) WHERE id = 1;
SELECT pipeline, "table: unprocessed rows", "Status" FROM aidb.pipem;
SELECT aidb.run_pipeline('articles') \g /dev/null
SELECT pipeline, "table: unprocessed rows", "count(destination records)", "Status" FROM aidb.pipem;
EXECUTE search('keeping a cat from scratching the sofa');

\echo
\echo '==> Live mode: every change is embedded inside the transaction that makes it'
SELECT aidb.update_pipeline('articles', auto_processing => 'Live') \g /dev/null
INSERT INTO articles VALUES (61, 'Brewing pour-over coffee',
    'For pour-over coffee, grind the beans medium-fine and pour water just off the boil in '
    'slow circles. The whole brew should take about three minutes.');
EXECUTE search('making a good cup of coffee');
SELECT pipeline, "auto processing", "table: unprocessed rows", "Status" FROM aidb.pipem;
SQL

say "done. Try your own queries (the pipeline is in Live mode: edits are embedded at once):"
echo "    psql -h 127.0.0.1 -p $PORT -U postgres $DB"
