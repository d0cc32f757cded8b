-- Change capture in detail: the C fast path aidb._capture_keys() (INSERT and
-- UPDATE of non-Live pipelines) and the statements it hands to the general
-- capture function aidb._capture_<id>(). Pipelines stay Disabled, so each
-- backlog shows exactly what a statement enqueued. Their one step is
-- ChunkText: capture is the same whatever the steps, and no model loads.
CREATE EXTENSION aidb;
SET client_min_messages = warning;
\set SHOW_CONTEXT never

-- The keys waiting in a pipeline's backlog, one row per key queued (a row of
-- the backlog holds one key, or a set of them from an INSERT of 1,000 rows
-- or more).
CREATE FUNCTION queued(pipeline text) RETURNS TABLE (key text)
    LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE format('SELECT k::text FROM (SELECT key FROM aidb.%1$I WHERE key IS NOT NULL '
                                'UNION ALL SELECT unnest(keys) FROM aidb.%1$I) AS b(k) ORDER BY 1',
                                '_backlog_' || (SELECT id FROM aidb.pipeline_registry WHERE name = pipeline));
END $$;
-- Backlog rows of one key, and rows holding a set.
CREATE FUNCTION backlog_rows(pipeline text, OUT single bigint, OUT sets bigint)
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SELECT count(key), count(keys) FROM aidb.%I',
                   '_backlog_' || (SELECT id FROM aidb.pipeline_registry WHERE name = pipeline))
        INTO single, sets;
END $$;
CREATE FUNCTION clear_backlog(pipeline text) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DELETE FROM aidb.%I',
                   '_backlog_' || (SELECT id FROM aidb.pipeline_registry WHERE name = pipeline));
END $$;
-- Which function each capture trigger of a table calls.
CREATE FUNCTION capture_triggers(source regclass) RETURNS TABLE (event text, calls text)
    LANGUAGE sql AS $$
    SELECT regexp_replace(t.tgname, '^aidb_\d+_', ''),
           regexp_replace(t.tgfoid::regproc::text, '\d+', 'N')
    FROM pg_trigger t WHERE t.tgrelid = source AND t.tgname ~ '^aidb_' ORDER BY t.tgname
$$;

CREATE TABLE notes (id integer PRIMARY KEY, body text, stars integer NOT NULL DEFAULT 0);
INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 5) g;
SELECT aidb.create_pipeline('notes_kb', 'notes', source_data_column => 'body',
       step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(100),
       auto_processing => 'Disabled');
SELECT * FROM capture_triggers('notes');
SELECT clear_backlog('notes_kb');

-------------------------------------------------------------------------------
-- INSERT: every key, once per row written.
INSERT INTO notes VALUES (6, 'six'), (7, 'seven');
INSERT INTO notes VALUES (8, NULL);
SELECT * FROM queued('notes_kb');
SELECT clear_backlog('notes_kb');

-- UPDATE: only rows whose data changed.
UPDATE notes SET stars = stars + 1;
UPDATE notes SET body = body;
UPDATE notes SET body = 'SIX' WHERE id = 6;
UPDATE notes SET body = 'still null' WHERE id = 8;
UPDATE notes SET body = upper(body) WHERE id IN (1, 2, 3);
SELECT * FROM queued('notes_kb');
SELECT clear_backlog('notes_kb');

-- A document large enough to live in TOAST: updating another column carries
-- its TOAST pointer over, and is recognised as no change without reading it.
INSERT INTO notes SELECT 14, string_agg(md5(g::text), ' ') FROM generate_series(1, 400) g;
SELECT clear_backlog('notes_kb');
UPDATE notes SET stars = stars + 1 WHERE id = 14;
SELECT count(*) AS queued FROM queued('notes_kb');
UPDATE notes SET body = body || '!' WHERE id = 14;
SELECT * FROM queued('notes_kb');
SELECT clear_backlog('notes_kb');

-- A statement that changes one key among rows that keep theirs goes to the
-- general function: the changed rows and both keys of the moved row are
-- enqueued, and the old key's destination rows would go at once.
UPDATE notes SET id = CASE id WHEN 4 THEN 40 ELSE id END, body = body || '!' WHERE id IN (3, 4, 5);
SELECT * FROM queued('notes_kb');
SELECT clear_backlog('notes_kb');

-- INSERT ... ON CONFLICT DO UPDATE: the update part is captured as an UPDATE.
INSERT INTO notes VALUES (6, 'six again'), (9, 'nine')
    ON CONFLICT (id) DO UPDATE SET body = excluded.body;
SELECT * FROM queued('notes_kb');
SELECT clear_backlog('notes_kb');

-- A statement of many rows (past the bulk-insert threshold: one backlog row
-- holds the set of its keys), and one that is rolled back: the backlog
-- follows the transaction.
INSERT INTO notes SELECT g, 'bulk ' || g FROM generate_series(1000, 3499) g;
SELECT count(*) AS queued, count(DISTINCT key) AS keys FROM queued('notes_kb');
SELECT * FROM backlog_rows('notes_kb');
BEGIN;
INSERT INTO notes VALUES (10, 'rolled back');
ROLLBACK;
SELECT count(*) AS queued FROM queued('notes_kb');
SELECT clear_backlog('notes_kb');

-------------------------------------------------------------------------------
-- Two pipelines on one table read the same transition tables: each gets
-- every key.
SELECT aidb.create_pipeline('notes_stars', 'notes', source_data_column => 'body',
       source_filter => 'stars > 0',
       step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(100),
       auto_processing => 'Disabled');
SELECT clear_backlog('notes_stars');
INSERT INTO notes VALUES (11, 'eleven'), (12, 'twelve');
SELECT (SELECT array_agg(key) FROM queued('notes_kb')) AS notes_kb,
       (SELECT array_agg(key) FROM queued('notes_stars')) AS notes_stars;
SELECT clear_backlog('notes_kb'), clear_backlog('notes_stars');
-- With a source_filter (which may read any column), any change of a row
-- enqueues its key; an UPDATE that changes nothing still enqueues nothing.
UPDATE notes SET stars = 5 WHERE id = 11;
UPDATE notes SET stars = 5 WHERE id = 11;
SELECT (SELECT array_agg(key) FROM queued('notes_kb')) AS notes_kb,
       (SELECT array_agg(key) FROM queued('notes_stars')) AS notes_stars;
SELECT aidb.delete_pipeline('notes_stars', drop_destination => true);

-------------------------------------------------------------------------------
-- A partitioned source: the triggers sit on the parent and on every
-- partition (PostgreSQL fires statement triggers only for the table a
-- statement names), so rows written through the parent, rows moving between
-- partitions and rows written straight into a partition (2 below) are all
-- captured; reconcile_pipeline then finds nothing left. A row an UPDATE
-- moves to another partition is inserted there, which queues its key once
-- more (120 twice below: the second is a no-op for the worker).
CREATE TABLE events (id integer PRIMARY KEY, body text) PARTITION BY RANGE (id);
CREATE TABLE events_low PARTITION OF events FOR VALUES FROM (0) TO (100);
CREATE TABLE events_high PARTITION OF events FOR VALUES FROM (100) TO (1000);
SELECT aidb.create_pipeline('events_kb', 'events', source_data_column => 'body',
       step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(100),
       auto_processing => 'Disabled');
INSERT INTO events VALUES (1, 'low'), (150, 'high');
INSERT INTO events_low VALUES (2, 'straight into a partition');
UPDATE events SET body = 'changed' WHERE id = 150;
SELECT * FROM queued('events_kb');
SELECT aidb.run_pipeline('events_kb');
SELECT aidb.reconcile_pipeline('events_kb');
SELECT * FROM queued('events_kb');
SELECT aidb.run_pipeline('events_kb');
UPDATE events SET id = 120 WHERE id = 2;
SELECT * FROM queued('events_kb');

-------------------------------------------------------------------------------
-- Live pipelines run the engine in the trigger: every trigger calls the
-- general function; switching back restores the fast path.
SELECT aidb.update_pipeline('events_kb', auto_processing => 'Live');
SELECT * FROM capture_triggers('events');
SELECT aidb.update_pipeline('events_kb', auto_processing => 'Disabled');
SELECT * FROM capture_triggers('events');
SELECT aidb.delete_pipeline('events_kb', drop_destination => true);
SELECT * FROM capture_triggers('events');

-------------------------------------------------------------------------------
-- The fast path is a trigger and nothing else; ordinary roles cannot attach it.
SELECT aidb._capture_keys();
CREATE TABLE other (id integer PRIMARY KEY, body text);
CREATE TRIGGER t AFTER INSERT ON other REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION aidb._capture_keys('999', 'id', 'body');
INSERT INTO other VALUES (1, 'a pipeline that does not exist');
DROP TRIGGER t ON other;
INSERT INTO other VALUES (2, 'a row to update');
CREATE TRIGGER t AFTER UPDATE ON other FOR EACH ROW EXECUTE FUNCTION aidb._capture_keys('1', 'id', 'body');
UPDATE other SET body = 'an UPDATE row trigger is refused';
DROP TABLE other;
CREATE ROLE regress_capture_mallory;
GRANT CREATE ON SCHEMA public TO regress_capture_mallory;
SET ROLE regress_capture_mallory;
CREATE TABLE mallory (id integer, body text);
CREATE TRIGGER t AFTER INSERT ON mallory REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION aidb._capture_keys('1', 'id', 'body');
DROP TABLE mallory;
RESET ROLE;
REVOKE CREATE ON SCHEMA public FROM regress_capture_mallory;
DROP ROLE regress_capture_mallory;

-- Renaming the key or data column is followed (sql/ext/75_schema_changes.sql):
-- capture goes on under the new name, and back.
ALTER TABLE notes RENAME COLUMN body TO text_body;
INSERT INTO notes VALUES (113, 'one hundred thirteen');
SELECT source_data_column FROM aidb.pipelines WHERE name = 'notes_kb';
ALTER TABLE notes RENAME COLUMN text_body TO body;
INSERT INTO notes VALUES (114, 'one hundred fourteen');
SELECT * FROM queued('notes_kb');
-- A disabled capture trigger stays disabled through an unrelated ALTER TABLE.
ALTER TABLE notes DISABLE TRIGGER USER;
ALTER TABLE notes ADD COLUMN extra integer;
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'notes'::regclass ORDER BY tgname;
ALTER TABLE notes ENABLE TRIGGER USER;
SELECT aidb.delete_pipeline('notes_kb', drop_destination => true);
SELECT * FROM capture_triggers('notes');

-- Leave the database as the next test file expects it: without aidb.
DROP TABLE notes, events;
DROP FUNCTION queued, backlog_rows, clear_backlog, capture_triggers;
DROP EXTENSION aidb;
