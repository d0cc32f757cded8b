-- Pipelines over a table and a view: creation, the three modes, change
-- capture, the views, errors, reconcile and delete. Bad input: pipeline_errors.sql.
CREATE EXTENSION aidb;
-- run_pipeline's NOTICEs carry timings; the few NOTICEs worth showing are
-- shown with client_min_messages = notice around one statement.
SET client_min_messages = warning;
\set SHOW_CONTEXT never
-- Embeddings by hash_embeddings: deterministic and instant (models.sql tests
-- the local model itself).
SELECT aidb.create_model('hashed', 'hash_embeddings');

-- The stable columns of aidb.pipem (no timestamps, rates or worker pids).
CREATE VIEW metrics AS
SELECT pipeline, "auto processing", "table: unprocessed rows", "count(source records)",
       "count(destination records)", "Status", "count(record errors)", "count(blocking errors)"
FROM aidb.pipem;
-- Destination rows per source key, for a compact view of what a pipeline holds.
CREATE FUNCTION parts(destination regclass) RETURNS TABLE (source_key text, parts bigint)
    LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE format('SELECT source_key::text, count(*) FROM %s GROUP BY 1 ORDER BY 1',
                                destination);
END $$;
-- Polls until a condition holds or a deadline passes: in Background mode a
-- background worker may be the one that drains a backlog.
CREATE FUNCTION wait_until(condition text, timeout interval DEFAULT '60 seconds') RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + timeout;
    ok boolean;
BEGIN
    LOOP
        EXECUTE 'SELECT ' || condition INTO ok;
        IF ok OR clock_timestamp() > deadline THEN
            RETURN coalesce(ok, false);
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;

-------------------------------------------------------------------------------
-- A table source, Disabled mode: ChunkText, then KnowledgeBase.
CREATE TABLE docs (id integer PRIMARY KEY, title text, body text, views integer NOT NULL DEFAULT 0);
INSERT INTO docs (id, title, body) VALUES
    (1, 'Cats', 'The cat sat on the mat. It purred all afternoon in the sun.'),
    (2, 'Taxes', 'Quarterly tax filing deadlines are approaching for small firms.'),
    (3, 'Draft', NULL);
SET client_min_messages = notice;
SELECT aidb.create_pipeline('docs_kb', 'docs', source_data_column => 'body',
       step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(30, 40, 5, strategy => 'chars'),
       step_2 => 'KnowledgeBase',
       step_2_options => aidb.knowledge_base_config('hashed', data_format => 'Text',
                                                    distance_operator => 'Cosine',
                                                    vector_index => '{"type": "hnsw"}'));
SET client_min_messages = warning;
-- The key defaults to the primary key; the destination to <name>_embeddings
-- in the source's schema; the steps are stored with their defaults filled in.
\x on
SELECT name, source, source_type, source_key_column, source_data_column, source_filter,
       destination, steps, auto_processing, batch_size, background_sync_interval,
       owner_role = current_user::regrole AS owned_by_creator
FROM aidb.pipelines;
\x off
SELECT count(*) AS same_in_pipes FROM aidb.pipes JOIN aidb.pipelines USING (name);
SELECT attname, format_type(atttypid, atttypmod), attnotnull
FROM pg_attribute WHERE attrelid = 'docs_kb_embeddings'::regclass AND attnum > 0 ORDER BY attnum;
-- Statement-level capture triggers with transition tables; the source
-- table is never altered otherwise.
SELECT regexp_replace(pg_get_triggerdef(oid), '_\d+', '_N', 'g') AS trigger
FROM pg_trigger WHERE tgrelid = 'docs'::regclass ORDER BY tgname;
SELECT to_regclass(format('aidb._backlog_%s', id)) IS NOT NULL AS has_backlog,
       to_regclass(format('aidb._state_%s', id)) IS NOT NULL AS has_state
FROM aidb.pipeline_registry WHERE name = 'docs_kb';
-- Disabled: the existing rows wait in the backlog until run_pipeline.
SELECT * FROM metrics;
SELECT * FROM parts('docs_kb_embeddings');
SELECT aidb.run_pipeline('docs_kb');
SELECT source_key, part_id, value, vector_dims(embedding) AS dims
FROM docs_kb_embeddings ORDER BY source_key, part_id;
-- Each embedding is the model's embedding of the stored value.
SELECT bool_and(embedding <=> aidb.encode_text('hashed', value) < 1e-4) AS embeddings_match
FROM docs_kb_embeddings;
SELECT * FROM metrics;
SELECT pipeline, source_key, step, category, message FROM aidb.pipeline_errors;

-------------------------------------------------------------------------------
-- Change capture (still Disabled, so the backlog is visible).
-- An UPDATE of an unrelated column, or one that rewrites the same data,
-- enqueues nothing.
UPDATE docs SET views = views + 1;
UPDATE docs SET body = body WHERE id = 1;
SELECT "table: unprocessed rows" FROM metrics;
-- An UPDATE of the data enqueues the key; its rows change at the next run.
UPDATE docs SET body = 'Dogs bark at the mailman every morning.' WHERE id = 2;
SELECT "table: unprocessed rows" FROM metrics;
SELECT value FROM docs_kb_embeddings WHERE source_key = 2 ORDER BY part_id;
SELECT aidb.run_pipeline('docs_kb');
SELECT value FROM docs_kb_embeddings WHERE source_key = 2 ORDER BY part_id;
-- A DELETE removes the destination rows at once, without a run.
DELETE FROM docs WHERE id = 1;
SELECT * FROM parts('docs_kb_embeddings');
-- A key change removes the old key's rows at once; the new key gets rows at
-- the next run.
UPDATE docs SET id = 20 WHERE id = 2;
SELECT * FROM parts('docs_kb_embeddings');
SELECT aidb.run_pipeline('docs_kb');
SELECT * FROM parts('docs_kb_embeddings');
-- INSERT ... SELECT of many rows: one statement, every key enqueued.
INSERT INTO docs (id, title, body)
SELECT g, 'Note ' || g, 'Short note number ' || g || '.' FROM generate_series(100, 139) g;
SELECT "table: unprocessed rows" FROM metrics;
SELECT aidb.run_pipeline('docs_kb');
SELECT count(DISTINCT source_key) AS keys, count(*) AS parts FROM docs_kb_embeddings;
SELECT * FROM metrics;
-- TRUNCATE empties the destination and the backlog.
INSERT INTO docs (id, body) VALUES (200, 'Queued but never processed.');
SELECT "table: unprocessed rows" FROM metrics;
TRUNCATE docs;
SELECT count(*) AS destination_rows FROM docs_kb_embeddings;
SELECT * FROM metrics;

-------------------------------------------------------------------------------
-- Live: a write is embedded inside the writing statement, without a backlog.
INSERT INTO docs (id, title, body) VALUES (1, 'Cats', 'The cat sat on the mat.');
SELECT aidb.update_pipeline('docs_kb', auto_processing => 'Live');
-- Switching to Live caught up with the backlog.
SELECT * FROM metrics;
BEGIN;
INSERT INTO docs (id, body) VALUES (2, 'Birds sing at dawn.');
SELECT source_key, part_id, value FROM docs_kb_embeddings ORDER BY 1, 2;
ROLLBACK;
-- The rolled-back write left nothing behind.
SELECT source_key, part_id, value FROM docs_kb_embeddings ORDER BY 1, 2;
UPDATE docs SET body = 'A kitten rests on a rug.' WHERE id = 1;
SELECT source_key, part_id, value FROM docs_kb_embeddings ORDER BY 1, 2;
UPDATE docs SET views = 5;
DELETE FROM docs WHERE id = 1;
SELECT * FROM metrics;

-- A pipeline created Live embeds the existing rows at once; here with a text
-- key, a varchar data column, word chunks, no KnowledgeBase (chunks only),
-- a destination in another schema, and a source_filter.
CREATE SCHEMA chunks;
CREATE TABLE notes (code text PRIMARY KEY, note varchar(200), hidden boolean NOT NULL DEFAULT false);
INSERT INTO notes VALUES ('a', 'alpha beta gamma delta', false), ('b', 'one two three', false),
                         ('h', 'not shown', true);
SELECT aidb.create_pipeline('notes_chunks', 'notes', source_data_column => 'note',
       destination => 'chunks.notes',
       step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(2, overlap_length => 1, strategy => 'words'),
       auto_processing => 'Live', source_filter => 'NOT hidden');
SELECT source_key, part_id, value FROM chunks.notes ORDER BY source_key, part_id;
INSERT INTO notes VALUES ('c', 'red green');
SELECT source_key, part_id, value FROM chunks.notes WHERE source_key = 'c';

-------------------------------------------------------------------------------
-- Background: the pipeline's worker drains the backlog; run_pipeline drains
-- whatever is left (until workers exist, all of it).
SELECT aidb.update_pipeline('docs_kb', auto_processing => 'Background', batch_size => 2,
                            background_sync_interval => '1 second');
SELECT auto_processing, batch_size, background_sync_interval FROM aidb.pipelines WHERE name = 'docs_kb';
INSERT INTO docs (id, body) SELECT g, 'Background note ' || g FROM generate_series(300, 304) g;
SELECT aidb.run_pipeline('docs_kb');
SELECT wait_until($$(SELECT count(DISTINCT source_key) = 5 FROM docs_kb_embeddings)
                    AND (SELECT "table: unprocessed rows" = 0 FROM metrics WHERE pipeline = 'docs_kb')$$)
       AS background_drained;
-- update_pipeline keeps what it is not given.
SELECT aidb.update_pipeline('docs_kb', auto_processing => 'Disabled');
SELECT auto_processing, batch_size, background_sync_interval FROM aidb.pipelines WHERE name = 'docs_kb';

-------------------------------------------------------------------------------
-- A view source: no triggers; each run reconciles it by content hash.
CREATE VIEW visible_notes AS SELECT code, upper(note) AS note FROM notes WHERE NOT hidden;
SET client_min_messages = notice;
SELECT aidb.create_pipeline('visible_notes_kb', 'visible_notes', source_key_column => 'code',
       source_data_column => 'note',
       step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('hashed'));
SET client_min_messages = warning;
SELECT source_type, destination FROM aidb.pipelines WHERE name = 'visible_notes_kb';
SELECT count(*) AS view_triggers FROM pg_trigger WHERE tgrelid = 'visible_notes'::regclass;
SELECT aidb.run_pipeline('visible_notes_kb');
SELECT source_key, value, vector_dims(embedding) FROM visible_notes_kb_embeddings ORDER BY 1;
-- Changes behind a view are found by reconcile_pipeline (or the next run).
UPDATE notes SET hidden = true WHERE code = 'a';
UPDATE notes SET note = 'one two three four' WHERE code = 'b';
SELECT aidb.reconcile_pipeline('visible_notes_kb') AS drifted;
-- (The Live pipeline with source_filter NOT hidden followed at once.)
SELECT * FROM parts('chunks.notes');
SELECT "table: unprocessed rows" FROM metrics WHERE pipeline = 'visible_notes_kb';
SELECT aidb.run_pipeline('visible_notes_kb');
SELECT source_key, value FROM visible_notes_kb_embeddings ORDER BY 1;
INSERT INTO notes VALUES ('d', 'fresh note');
SELECT aidb.run_pipeline('visible_notes_kb');
SELECT source_key, value FROM visible_notes_kb_embeddings ORDER BY 1;
SELECT * FROM metrics WHERE pipeline = 'visible_notes_kb';

-- A table written with its triggers disabled drifts; reconcile_pipeline
-- finds the keys and run_pipeline repairs them.
ALTER TABLE docs DISABLE TRIGGER USER;
UPDATE docs SET body = 'Rewritten behind the pipeline''s back.' WHERE id = 300;
DELETE FROM docs WHERE id = 301;
ALTER TABLE docs ENABLE TRIGGER USER;
SELECT aidb.reconcile_pipeline('docs_kb') AS drifted;
SELECT aidb.run_pipeline('docs_kb');
SELECT source_key, value FROM docs_kb_embeddings WHERE source_key IN (300, 301) ORDER BY 1;
SELECT aidb.reconcile_pipeline('docs_kb') AS drifted_after_run;

-------------------------------------------------------------------------------
-- Errors. A model that cannot be reached stops the run with a WARNING; the
-- keys stay queued and the error is shown until retried or cleared.
SELECT aidb.create_model('unreachable', 'openai_embeddings',
       '{"model": "m", "url": "http://127.0.0.1:9/v1", "dimensions": 8, "max_retries": 0, "timeout": 2}',
       '{"api_key": "sk-regress-not-a-key"}');
SELECT aidb.create_pipeline('notes_broken', 'notes', source_data_column => 'note',
       step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('unreachable'));
SELECT aidb.run_pipeline('notes_broken');
SELECT aidb.run_pipeline('notes_broken');
SELECT pipeline, source_key, step, category, message, attempts FROM aidb.pipeline_errors;
SELECT * FROM metrics WHERE pipeline = 'notes_broken';
-- retry_pipeline_errors unblocks the pipeline and queues failed keys again.
SELECT aidb.retry_pipeline_errors('notes_broken') AS requeued;
SELECT count(*) AS errors FROM aidb.pipeline_errors;
-- A record error, as a model that rejects one value leaves it: the key has
-- no destination rows and is counted; retry_pipeline_errors queues it
-- again, and its error goes away when it is processed.
CREATE FUNCTION record_error(pipeline text, source_key text) RETURNS void LANGUAGE sql AS $$
    INSERT INTO aidb.pipeline_error_log (pipeline_id, source_key, step, category, message)
    SELECT id, source_key, 'KnowledgeBase', 'RecordPermanent', 'the model rejected the input'
    FROM aidb.pipeline_registry WHERE name = pipeline $$;
ALTER TABLE docs DISABLE TRIGGER USER;
INSERT INTO docs (id, body) VALUES (310, 'Rejected at first, accepted on retry.');
ALTER TABLE docs ENABLE TRIGGER USER;
SELECT record_error('docs_kb', '310');
SELECT pipeline, source_key, step, category, message, attempts FROM aidb.pipeline_errors;
SELECT * FROM metrics WHERE pipeline = 'docs_kb';
SELECT aidb.retry_pipeline_errors('docs_kb') AS requeued;
SELECT "table: unprocessed rows" FROM metrics WHERE pipeline = 'docs_kb';
SELECT aidb.run_pipeline('docs_kb');
SELECT count(*) AS errors FROM aidb.pipeline_errors;
SELECT source_key, value FROM docs_kb_embeddings WHERE source_key = 310;
SELECT * FROM metrics WHERE pipeline = 'docs_kb';
-- clear_pipeline_errors forgets errors without retrying.
SELECT record_error('docs_kb', '302');
SELECT aidb.clear_pipeline_errors('docs_kb') AS cleared;
SELECT * FROM metrics WHERE pipeline = 'docs_kb';

-------------------------------------------------------------------------------
-- delete_pipeline removes triggers, backlog, state and capture function,
-- and keeps the destination unless drop_destination => true.
CREATE TEMP TABLE deleted AS SELECT id, name FROM aidb.pipeline_registry;
SELECT aidb.delete_pipeline('docs_kb');
SELECT aidb.delete_pipeline('notes_broken', drop_destination => true);
SELECT count(*) AS docs_triggers FROM pg_trigger WHERE tgrelid = 'docs'::regclass;
SELECT d.name, to_regclass(format('aidb._backlog_%s', d.id)) AS backlog,
       to_regclass(format('aidb._state_%s', d.id)) AS state,
       to_regprocedure(format('aidb._capture_%s()', d.id)) AS capture
FROM deleted d WHERE name IN ('docs_kb', 'notes_broken') ORDER BY 1;
SELECT to_regclass('docs_kb_embeddings') AS kept, to_regclass('notes_broken_embeddings') AS dropped;
SELECT count(*) AS kept_rows FROM docs_kb_embeddings;
-- The source works as before and nothing follows its changes any more.
INSERT INTO docs (id, body) VALUES (400, 'After the pipeline.');
SELECT count(*) AS rows_for_400 FROM docs_kb_embeddings WHERE source_key = 400;
SELECT name FROM aidb.pipelines ORDER BY 1;
SELECT aidb.delete_pipeline('notes_chunks', drop_destination => true);
SELECT aidb.delete_pipeline('visible_notes_kb', drop_destination => true);
SELECT count(*) AS pipelines FROM aidb.pipelines;
-- Nothing of any pipeline is left in schema aidb.
SELECT relname FROM pg_class WHERE relnamespace = 'aidb'::regnamespace AND relname ~ '^_(backlog|state)_';
SELECT proname FROM pg_proc WHERE pronamespace = 'aidb'::regnamespace AND proname ~ '^_capture_\d';
SELECT count(*) AS notes_triggers FROM pg_trigger WHERE tgrelid = 'notes'::regclass;

SELECT aidb.delete_model('unreachable');
DROP VIEW visible_notes, metrics;
DROP TABLE docs, notes, docs_kb_embeddings;
DROP SCHEMA chunks;
DROP FUNCTION parts, wait_until, record_error;
DROP EXTENSION aidb;
