-- Pipelines: every bad input is a clear error that names the object, and
-- changes nothing (the catalogs are compared before and after).
CREATE EXTENSION aidb;
SET client_min_messages = warning;
\set SHOW_CONTEXT never
-- Valid steps, to vary one thing at a time: embed with the local model.
\set kb 'step_1 => ''KnowledgeBase'', step_1_options => aidb.knowledge_base_config(''minilm'')'

CREATE TABLE docs (id integer PRIMARY KEY, title text NOT NULL, body text, views integer, raw bytea);
INSERT INTO docs VALUES (1, 'Cats', 'The cat sat.', 1, '\x00'), (2, 'Cats', 'Dogs bark.', 2, '\x01');
CREATE TABLE no_pk (id integer, body text);
CREATE TABLE not_unique (id integer, body text);
CREATE INDEX not_unique_id ON not_unique (id);
CREATE VIEW one_key AS SELECT 1 AS id, body FROM docs;
CREATE TABLE wrong_shape (source_key integer, body text);
-- regress_aidb_user creates pipelines below; regress_aidb_other owns one.
CREATE ROLE regress_aidb_user;
CREATE ROLE regress_aidb_other;
GRANT aidb_users TO regress_aidb_user;
CREATE SCHEMA regress_dest;
GRANT USAGE ON SCHEMA regress_dest TO regress_aidb_user;
GRANT SELECT, TRIGGER ON docs TO regress_aidb_other;
-- A pipeline to collide with, owned by another role (its steps need no model).
SELECT aidb.create_pipeline('taken', 'docs', source_data_column => 'body',
       step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(100),
       owner_role => 'regress_aidb_other', source_filter => 'views > 1');

-- What must not change: relations, triggers and functions of the schemas
-- involved, the registry, the source's rows, the existing pipeline's backlog.
CREATE TEMP VIEW catalog_state AS
SELECT 'relation' AS kind, c.oid::regclass::text AS object, c.oid, c.relkind::text AS detail
FROM pg_class c WHERE c.relnamespace IN ('aidb'::regnamespace, 'public'::regnamespace)
UNION ALL
SELECT 'trigger', t.tgrelid::regclass || '.' || t.tgname, t.oid, t.tgenabled::text
FROM pg_trigger t WHERE NOT t.tgisinternal
UNION ALL
SELECT 'function', p.oid::regprocedure::text, p.oid, md5(p.prosrc)
FROM pg_proc p WHERE p.pronamespace IN ('aidb'::regnamespace, 'public'::regnamespace)
UNION ALL
SELECT 'schema', n.nspname, n.oid, '' FROM pg_namespace n
UNION ALL
SELECT 'pipeline', r.name, r.id, md5(row(r.*)::text) FROM aidb.pipeline_registry r
UNION ALL
SELECT 'docs row', d.id::text, NULL, md5(d::text) FROM docs d
UNION ALL
SELECT 'backlog of taken', NULL, NULL, "table: unprocessed rows"::text
FROM aidb.pipem WHERE pipeline = 'taken';
CREATE TEMP TABLE before AS SELECT * FROM catalog_state;

-- The source.
SELECT aidb.create_pipeline('p', 'no_such_table', source_data_column => 'body', :kb);
SELECT aidb.create_pipeline('p', 'docs_pkey', source_data_column => 'body', :kb);
SELECT aidb.create_pipeline('p', NULL, source_data_column => 'body', :kb);
-- The key: none to default to, a column that does not exist, one that is not unique.
SELECT aidb.create_pipeline('p', 'no_pk', source_data_column => 'body', :kb);
SELECT aidb.create_pipeline('p', 'docs', source_key_column => 'nope', source_data_column => 'body', :kb);
SELECT aidb.create_pipeline('p', 'not_unique', source_key_column => 'id', source_data_column => 'body', :kb);
SELECT aidb.create_pipeline('p', 'docs', source_key_column => 'title', source_data_column => 'body', :kb);
SELECT aidb.create_pipeline('p', 'one_key', source_key_column => 'id', source_data_column => 'body', :kb);
-- The data column: missing, not existing, not text.
SELECT aidb.create_pipeline('p', 'docs', :kb);
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'nope', :kb);
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'views', :kb);
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'raw', :kb);

-- The steps.
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', step_1_options => '{}');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', step_1 => 'Frobnicate');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', step_1 => 'ParsePdf');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body',
       step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('no_such_model'));
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body',
       step_1 => 'KnowledgeBase', step_1_options => '{"data_format": "Text"}');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body',
       step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('minilm', distance_operator => 'Manhattan'));
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body',
       step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('minilm', data_format => 'Image'));
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body',
       step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('minilm', vector_index => '{"type": "btree"}'));
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body',
       step_1 => 'KnowledgeBase', step_1_options => '{"model": "minilm", "colour": "red"}');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body',
       step_1 => 'ChunkText', step_1_options => '{"desired_length": 100, "bogus": 1}');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body',
       step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(100, strategy => 'lines'));
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body',
       step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(100, overlap_length => 100));
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body',
       step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(100, max_length => 50));
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body',
       step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('minilm'),
       step_2 => 'ChunkText', step_2_options => aidb.chunk_text_config(100));

-- The name.
SELECT aidb.create_pipeline('taken', 'docs', source_data_column => 'body', :kb);
SELECT aidb.create_pipeline(repeat('n', 64), 'docs', source_data_column => 'body', :kb);
SELECT aidb.create_pipeline(repeat('n', 60), 'docs', source_data_column => 'body', :kb);
SELECT aidb.create_pipeline('bad name', 'docs', source_data_column => 'body', :kb);
SELECT aidb.create_pipeline('1abc', 'docs', source_data_column => 'body', :kb);
SELECT aidb.create_pipeline('a"b', 'docs', source_data_column => 'body', :kb);
SELECT aidb.create_pipeline('a''b', 'docs', source_data_column => 'body', :kb);
SELECT aidb.create_pipeline('', 'docs', source_data_column => 'body', :kb);
SELECT aidb.create_pipeline(NULL, 'docs', source_data_column => 'body', :kb);

-- The settings.
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, batch_size => 0);
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, batch_size => 10001);
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, background_sync_interval => '0.5 seconds');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, background_sync_interval => '3 days');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, auto_processing => 'Sometimes');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, owner_role => 'no_such_role');

-- The destination: an existing table of another shape (the source itself
-- included), a schema that does not exist, a name that is not one.
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, destination => 'wrong_shape');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, destination => 'docs');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, destination => 'no_such_schema.p');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, destination => 'a.b.c');

-- The source_filter: a syntax error, an unknown column, not a boolean, an
-- aggregate, and injection attempts (extra statements never run).
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, source_filter => 'views >');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, source_filter => 'nope > 1');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, source_filter => 'views');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, source_filter => 'count(*) > 0');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, source_filter => 'true; DROP TABLE docs');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb,
       source_filter => 'true); DROP TABLE docs; SELECT (true');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, source_filter => 'true) OR (true');
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, source_filter => 'true /* unclosed');

-- Privileges: the creator needs SELECT and TRIGGER on the source and CREATE
-- on the destination's schema, and may only hand the pipeline to a role it
-- is a member of. Each case grants everything but the privilege under test.
-- Without SELECT on the source.
GRANT TRIGGER ON docs TO regress_aidb_user;
GRANT CREATE ON SCHEMA regress_dest TO regress_aidb_user;
SET ROLE regress_aidb_user;
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, destination => 'regress_dest.p');
RESET ROLE;
-- Without TRIGGER on the source.
REVOKE TRIGGER ON docs FROM regress_aidb_user;
GRANT SELECT ON docs TO regress_aidb_user;
SET ROLE regress_aidb_user;
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, destination => 'regress_dest.p');
RESET ROLE;
-- Without CREATE on the destination's schema.
GRANT TRIGGER ON docs TO regress_aidb_user;
REVOKE CREATE ON SCHEMA regress_dest FROM regress_aidb_user;
SET ROLE regress_aidb_user;
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, destination => 'regress_dest.p');
-- Owned by a role it is not a member of.
SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', :kb, owner_role => 'regress_aidb_other');
-- Another role's pipeline can be seen but not changed or run.
SELECT name, owner_role FROM aidb.pipelines;
SELECT aidb.update_pipeline('taken', batch_size => 5);
SELECT aidb.delete_pipeline('taken');
SELECT aidb.run_pipeline('taken');
SELECT aidb.reconcile_pipeline('taken');
SELECT aidb.retry_pipeline_errors('taken');
SELECT aidb.clear_pipeline_errors('taken');
-- Its source_filter is its owner's SQL: every reader who may SELECT the
-- source gets the filtered count, computed by the owner's own function with
-- the owner's rights (never the reader's, a superuser's included).
SELECT pipeline, "count(source records)" FROM aidb.pipem;
RESET ROLE;
SELECT pipeline, "count(source records)" FROM aidb.pipem;
SET ROLE regress_aidb_other;
SELECT pipeline, "count(source records)" FROM aidb.pipem;
RESET ROLE;

-- The other functions: a pipeline that does not exist, settings out of range.
SELECT aidb.update_pipeline('no_such_pipeline', 'Live');
SELECT aidb.delete_pipeline('no_such_pipeline');
SELECT aidb.run_pipeline('no_such_pipeline');
SELECT aidb.reconcile_pipeline('no_such_pipeline');
SELECT aidb.retry_pipeline_errors('no_such_pipeline');
SELECT aidb.clear_pipeline_errors('no_such_pipeline');
SELECT aidb.update_pipeline('taken', 'Sometimes');
SELECT aidb.update_pipeline('taken', batch_size => 0);
SELECT aidb.update_pipeline('taken', background_sync_interval => '3 days');

-- Nothing changed.
SELECT 'added' AS change, * FROM (SELECT * FROM catalog_state EXCEPT SELECT * FROM before) a
UNION ALL
SELECT 'removed', * FROM (SELECT * FROM before EXCEPT SELECT * FROM catalog_state) r;
SELECT count(*) AS docs_rows FROM docs;

SELECT aidb.delete_pipeline('taken', drop_destination => true);
DROP VIEW catalog_state, one_key;
DROP TABLE docs, no_pk, not_unique, wrong_shape;
DROP SCHEMA regress_dest;
DROP ROLE regress_aidb_user, regress_aidb_other;
DROP EXTENSION aidb;
