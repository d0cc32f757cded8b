-- Background workers: one per Background pipeline, reconciled on every change.
-- The pipelines chunk text and embed nothing: a worker that loaded the local
-- model would spend most of this file doing so (test/sql/models.sql covers it).
CREATE EXTENSION aidb;
SET client_min_messages = warning;
\set SHOW_CONTEXT never

-- Polls a boolean query until it is true (deadline: 60 s), for asynchronous workers.
CREATE FUNCTION wait_until(condition text, timeout interval DEFAULT '60 seconds') RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + timeout;
    ok boolean;
BEGIN
    LOOP
        PERFORM pg_stat_clear_snapshot();   -- pg_stat_activity is cached per transaction
        EXECUTE condition INTO ok;
        IF ok THEN RETURN true; END IF;
        IF clock_timestamp() > deadline THEN
            RAISE WARNING 'timed out waiting for: %', condition;
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;

SELECT aidb._preloaded() AS preloaded;

CREATE TABLE notes (id int PRIMARY KEY, body text);
INSERT INTO notes SELECT g, 'note number ' || g FROM generate_series(1, 5) g;

-- Creating a Background pipeline starts its worker, which drains the backlog.
SELECT aidb.create_pipeline('bg_notes', 'notes', source_data_column => 'body',
       step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(100),
       auto_processing => 'Background');
SELECT wait_until($$SELECT count(*) = 1 FROM pg_stat_activity
                    WHERE application_name = 'aidb pipeline bg_notes'$$) AS worker_running;
SELECT wait_until($$SELECT "Status" = 'UpToDate' FROM aidb.pipem WHERE pipeline = 'bg_notes'$$) AS drained;
SELECT pipeline, "auto processing", "count(destination records)", "worker state" FROM aidb.pipem;

-- A committed change is picked up without run_pipeline.
INSERT INTO notes VALUES (6, 'a note written later');
SELECT wait_until($$SELECT count(*) = 1 FROM bg_notes_embeddings WHERE source_key = 6$$) AS change_embedded;

-- Switching to Disabled stops the worker; back to Background starts one again.
SELECT aidb.update_pipeline('bg_notes', auto_processing => 'Disabled');
SELECT wait_until($$SELECT count(*) = 0 FROM pg_stat_activity
                    WHERE application_name = 'aidb pipeline bg_notes'$$) AS worker_gone;
SELECT "worker state" IS NULL AS no_worker_state FROM aidb.pipem WHERE pipeline = 'bg_notes';
SELECT aidb.update_pipeline('bg_notes', auto_processing => 'Background');
SELECT wait_until($$SELECT count(*) = 1 FROM pg_stat_activity
                    WHERE application_name = 'aidb pipeline bg_notes'$$) AS worker_back;

-- A failing batch: the same worker stays alive, backs off, and the error is recorded.
SELECT aidb.create_model('broken', 'openai_embeddings',
       '{"model": "m", "url": "http://127.0.0.1:9/v1", "dimensions": 8, "max_retries": 0, "timeout": 1}');
CREATE TABLE jobs (id int PRIMARY KEY, body text);
INSERT INTO jobs VALUES (1, 'a job');
SELECT aidb.create_pipeline('bg_broken', 'jobs', source_data_column => 'body',
       step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('broken'),
       auto_processing => 'Background');
SELECT wait_until($$SELECT count(*) > 0 FROM aidb.pipeline_errors WHERE pipeline = 'bg_broken'$$) AS error_recorded;
CREATE TEMP TABLE first_pid AS
    SELECT "worker pid" AS pid FROM aidb.pipem WHERE pipeline = 'bg_broken';
SELECT wait_until($$SELECT attempts >= 2 FROM aidb.pipeline_errors WHERE pipeline = 'bg_broken'$$) AS retried;
SELECT m."worker pid" = f.pid AS same_worker, m."Status", m."table: unprocessed rows"
FROM aidb.pipem m, first_pid f WHERE m.pipeline = 'bg_broken';
SELECT category, message LIKE '%connection failed%' AS says_why FROM aidb.pipeline_errors
WHERE pipeline = 'bg_broken';

-- Deleting the pipeline stops its worker.
SELECT aidb.delete_pipeline('bg_broken', drop_destination => true);
SELECT wait_until($$SELECT count(*) = 0 FROM pg_stat_activity
                    WHERE application_name = 'aidb pipeline bg_broken'$$) AS deleted_worker_gone;

-- More Background pipelines than aidb.max_workers allows: the extra one
-- waits (WaitingForWorker), and starts once another pipeline is deleted.
ALTER SYSTEM SET aidb.max_workers = 1;
SELECT pg_reload_conf();
CREATE TABLE more (id int PRIMARY KEY, body text);
INSERT INTO more VALUES (1, 'more text');
SELECT aidb.create_pipeline('bg_more', 'more', source_data_column => 'body',
       step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(100),
       auto_processing => 'Background');
SELECT wait_until($$SELECT "Status" = 'WaitingForWorker' FROM aidb.pipem WHERE pipeline = 'bg_more'$$) AS waiting;
SELECT aidb.delete_pipeline('bg_notes');
SELECT wait_until($$SELECT "worker state" = 'running' FROM aidb.pipem WHERE pipeline = 'bg_more'$$) AS started_after_delete;
SELECT wait_until($$SELECT "Status" = 'UpToDate' FROM aidb.pipem WHERE pipeline = 'bg_more'$$) AS more_drained;
ALTER SYSTEM RESET aidb.max_workers;
SELECT pg_reload_conf();

-- A second database with its own Background pipeline gets its own worker.
SELECT current_database() AS regress_db \gset
CREATE DATABASE regress_aidb_second;
\c regress_aidb_second
SET client_min_messages = warning;
CREATE EXTENSION aidb CASCADE;
CREATE TABLE notes (id int PRIMARY KEY, body text);
INSERT INTO notes VALUES (1, 'a note in the second database');
SELECT aidb.create_pipeline('bg_second', 'notes', source_data_column => 'body',
       step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(100),
       auto_processing => 'Background');
\c :regress_db
SET client_min_messages = warning;
SELECT wait_until($$SELECT count(*) = 2 FROM pg_stat_activity
                    WHERE application_name IN ('aidb pipeline bg_more', 'aidb pipeline bg_second')$$)
       AS workers_in_both_databases;
SELECT datname, application_name FROM pg_stat_activity
WHERE application_name LIKE 'aidb pipeline %' ORDER BY 2;

-- DROP DATABASE is not blocked by the worker connected to it.
DROP DATABASE regress_aidb_second;
SELECT wait_until($$SELECT count(*) = 0 FROM pg_stat_activity
                    WHERE application_name = 'aidb pipeline bg_second'$$) AS second_worker_gone;

-- DROP EXTENSION: the worker notices and leaves.
SELECT aidb.delete_pipeline('bg_more', drop_destination => true);
