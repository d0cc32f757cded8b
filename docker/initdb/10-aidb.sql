-- Run by the postgres image's entrypoint on first start, in $POSTGRES_DB.
-- CASCADE installs what aidb requires: plpython3u and vector.
CREATE EXTENSION IF NOT EXISTS aidb CASCADE;
