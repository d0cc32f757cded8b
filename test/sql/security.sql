-- Security: two aidb users, regress_alice and regress_bob, share a database
-- with regress_carol, who is not one. Each switch of role is a SET SESSION
-- AUTHORIZATION, so that session_user is the role too, as for a real login.
CREATE EXTENSION aidb;
SET client_min_messages = warning;
\set SHOW_CONTEXT never
SELECT current_database() AS db \gset

-- The extension created the role aidb_users: it cannot log in and has no
-- special rights. Roles belong to the cluster, so creating the extension
-- again (as in another database) finds it and goes on.
SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb
FROM pg_roles WHERE rolname = 'aidb_users';
DROP EXTENSION aidb;
CREATE EXTENSION aidb;
SELECT count(*) AS aidb_users_roles FROM pg_roles WHERE rolname = 'aidb_users';
-- Pipelines here embed with hash_embeddings: deterministic and instant (the
-- local model's first load would cost 30 s and prove nothing about security).
SELECT aidb.create_model('hashed', 'hash_embeddings');

CREATE ROLE regress_alice;
CREATE ROLE regress_bob;
CREATE ROLE regress_carol;
GRANT aidb_users TO regress_alice, regress_bob;
CREATE SCHEMA regress_alice AUTHORIZATION regress_alice;
CREATE SCHEMA regress_bob AUTHORIZATION regress_bob;
-- A table of the database owner's that alice may read and follow.
CREATE TABLE feed (id int PRIMARY KEY, body text);
INSERT INTO feed VALUES (1, 'first news item'), (2, 'second news item');
GRANT SELECT, TRIGGER ON feed TO regress_alice;

-------------------------------------------------------------------------------
-- A role outside aidb_users reads the views and retrieves, and changes nothing.
SET SESSION AUTHORIZATION regress_carol;
SELECT name, owner FROM aidb.models;
SELECT count(*) AS pipelines FROM aidb.pipelines;
SELECT aidb.create_model('carols', 'local_embeddings');
SELECT aidb.delete_model('minilm');
SELECT aidb.create_pipeline('carols', 'feed', source_data_column => 'body');
SELECT aidb.run_pipeline('carols');
SELECT aidb.retry_pipeline_errors('carols');
-- Going around the functions does not work either.
INSERT INTO aidb.model_registry (name, provider) VALUES ('carols', 'local_embeddings');
INSERT INTO aidb.pipeline_registry (name, source, source_type, source_key_column, source_data_column,
                                    destination, steps)
VALUES ('carols', 'feed', 'table', 'id', 'body', 'feed', '[]');
SELECT aidb._install_pipeline_objects(1, fresh => true);
RESET SESSION AUTHORIZATION;

-------------------------------------------------------------------------------
-- Models: each user's credentials are theirs alone.
SET SESSION AUTHORIZATION regress_alice;
SELECT aidb.create_model('alice_remote', 'openai_embeddings',
       '{"model": "m", "url": "http://127.0.0.1:9/v1", "dimensions": 8, "max_retries": 0, "timeout": 2}',
       '{"api_key": "sk-alice-secret-0001"}');
SET SESSION AUTHORIZATION regress_bob;
SELECT aidb.create_model('bob_remote', 'openai_embeddings',
       '{"model": "m", "url": "http://127.0.0.1:9/v1", "dimensions": 8, "max_retries": 0, "timeout": 2}',
       '{"api_key": "sk-bob-secret-0002"}');
-- Everyone sees that the models exist and who owns them, never a key.
SELECT name, owner, has_credentials FROM aidb.models ORDER BY name;
SELECT count(*) AS views_showing_a_key FROM aidb.models WHERE models::text LIKE '%secret%';
-- Bob reads his own credentials only.
SELECT model, credentials FROM aidb.model_credentials;
-- Alice's model: bob can neither use, replace, nor delete it.
SELECT aidb.encode_text('alice_remote', 'hello');
SELECT aidb.create_model('alice_remote', 'openai_embeddings',
       '{"model": "m", "url": "http://127.0.0.1:9/v1", "dimensions": 8, "max_retries": 0, "timeout": 2}',
       '{"api_key": "sk-bob-takes-over-0003"}', replace_credentials => true);
SELECT aidb.delete_model('alice_remote');
-- Nor through the tables: row-level security hides and protects her rows.
WITH gone AS (DELETE FROM aidb.model_credentials WHERE model = 'alice_remote' RETURNING 1)
SELECT count(*) AS credentials_deleted FROM gone;
WITH gone AS (DELETE FROM aidb.model_registry WHERE name = 'alice_remote' RETURNING 1)
SELECT count(*) AS models_deleted FROM gone;
INSERT INTO aidb.model_credentials VALUES ('alice_remote', '{"api_key": "sk-bob-takes-over-0003"}');
UPDATE aidb.model_credentials SET credentials = '{}';
INSERT INTO aidb.model_registry (name, provider, owner) VALUES ('fake_alice', 'local_embeddings', 'regress_alice');
SET SESSION AUTHORIZATION regress_alice;
SELECT model, credentials FROM aidb.model_credentials;
-- An error of her own model shows no key.
SELECT aidb.encode_text('alice_remote', 'hello');
RESET SESSION AUTHORIZATION;

-------------------------------------------------------------------------------
-- Pipelines and retrieval. Alice's notes are chunked (note 1 into two
-- parts), embedded (hash_embeddings: shared words) and compared by cosine distance.
SET SESSION AUTHORIZATION regress_alice;
CREATE TABLE regress_alice.notes (id int PRIMARY KEY, body text);
INSERT INTO regress_alice.notes VALUES
    (1, 'Cats sleep all day. A kitten naps in the sun.'),
    (2, 'The stock market fell sharply today.'),
    (3, 'Dogs fetch balls in the park.'),
    (4, 'How to bake sourdough bread at home.');
SELECT aidb.create_pipeline('alice_notes', 'regress_alice.notes', source_data_column => 'body',
       step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(25),
       step_2 => 'KnowledgeBase',
       step_2_options => aidb.knowledge_base_config('hashed', distance_operator => 'Cosine'));
SELECT aidb.run_pipeline('alice_notes');
SELECT source_key, part_id, value FROM regress_alice.alice_notes_embeddings ORDER BY 1, 2;
-- Nearest first; one row per key, unless deduplicate => false.
SELECT key, part_id, round(distance::numeric, 3) AS distance
FROM aidb.retrieve_key('alice_notes', 'a sleepy kitten');
SELECT key, part_id, round(distance::numeric, 3) AS distance
FROM aidb.retrieve_key('alice_notes', 'a sleepy kitten', 3);
SELECT key, part_id, value, round(distance::numeric, 3) AS distance
FROM aidb.retrieve_text('alice_notes', 'a sleepy kitten', 3, deduplicate => false);
SELECT key, round(distance::numeric, 3) AS distance
FROM aidb.retrieve_key('alice_notes', 'stock prices', 4);
SELECT * FROM aidb.retrieve_key('alice_notes', 'anything', 0);
-- A pipeline on her keyed remote model, not run yet (see the settings below).
SELECT aidb.create_pipeline('alice_remote_notes', 'regress_alice.notes', source_data_column => 'body',
       step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('alice_remote'));
-- Bob's own pipeline on his own table.
SET SESSION AUTHORIZATION regress_bob;
CREATE TABLE regress_bob.docs (id int PRIMARY KEY, body text);
INSERT INTO regress_bob.docs VALUES (1, 'bob writes about trains');
SELECT aidb.create_pipeline('bob_docs', 'regress_bob.docs', source_data_column => 'body',
       step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('hashed'));
SELECT aidb.run_pipeline('bob_docs');
-- Bob cannot read alice's destination, so retrieval from her pipeline fails.
SELECT * FROM aidb.retrieve_key('alice_notes', 'a sleepy kitten');
-- He sees her pipeline, but cannot change, run, retry or delete it.
SELECT name, owner_role, destination FROM aidb.pipelines ORDER BY name;
SELECT aidb.update_pipeline('alice_notes', batch_size => 5);
SELECT aidb.run_pipeline('alice_notes');
SELECT aidb.reconcile_pipeline('alice_notes');
SELECT aidb.retry_pipeline_errors('alice_notes');
SELECT aidb.clear_pipeline_errors('alice_notes');
SELECT aidb.delete_pipeline('alice_notes');
-- Nor around the functions: the registry, her pipeline's objects, her
-- batches, and a Live run in his name.
WITH changed AS (UPDATE aidb.pipeline_registry SET batch_size = 5 WHERE name = 'alice_notes' RETURNING 1)
SELECT count(*) AS pipelines_changed FROM changed;
WITH gone AS (DELETE FROM aidb.pipeline_registry WHERE name = 'alice_notes' RETURNING 1)
SELECT count(*) AS pipelines_deleted FROM gone;
SELECT id AS alice_notes_id FROM aidb.pipeline_registry WHERE name = 'alice_notes' \gset
SELECT aidb._install_pipeline_objects(:alice_notes_id, fresh => true);
SELECT aidb._drop_pipeline_objects(:alice_notes_id);
SELECT aidb._run_batch(:alice_notes_id);
SELECT aidb._process_live(:alice_notes_id, ARRAY['1']);
SELECT aidb._record_worker_error(:alice_notes_id, 'forged');
-- He cannot create a pipeline owned by her, or one using her keyed model.
SELECT aidb.create_pipeline('bob_as_alice', 'regress_bob.docs', source_data_column => 'body',
       step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(10),
       owner_role => 'regress_alice');
SELECT aidb.create_pipeline('bob_keyed', 'regress_bob.docs', source_data_column => 'body',
       step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('alice_remote'));
-- A pipeline on her table needs SELECT on it, and TRIGGER to follow its changes.
SELECT aidb.create_pipeline('bob_on_notes', 'regress_alice.notes', source_data_column => 'body',
       step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('hashed'),
       destination => 'regress_bob.on_notes');
SET SESSION AUTHORIZATION regress_alice;
GRANT USAGE ON SCHEMA regress_alice TO regress_bob;
GRANT SELECT ON regress_alice.notes TO regress_bob;
SET SESSION AUTHORIZATION regress_bob;
SELECT aidb.create_pipeline('bob_on_notes', 'regress_alice.notes', source_data_column => 'body',
       step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('hashed'),
       destination => 'regress_bob.on_notes');
SET SESSION AUTHORIZATION regress_alice;
GRANT TRIGGER ON regress_alice.notes TO regress_bob;
SET SESSION AUTHORIZATION regress_bob;
SELECT aidb.create_pipeline('bob_on_notes', 'regress_alice.notes', source_data_column => 'body',
       step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('hashed'),
       destination => 'regress_bob.on_notes');
SELECT aidb.run_pipeline('bob_on_notes');
SELECT count(*) AS bob_embedded_notes FROM regress_bob.on_notes;
SELECT aidb.delete_pipeline('bob_on_notes', drop_destination => true);
-- Once alice lets him read her destination, bob retrieves from it.
SET SESSION AUTHORIZATION regress_alice;
GRANT SELECT ON regress_alice.alice_notes_embeddings TO regress_bob;
SET SESSION AUTHORIZATION regress_bob;
SELECT key FROM aidb.retrieve_key('alice_notes', 'a sleepy kitten');
-- Alice, for her part, cannot touch bob's pipeline.
SET SESSION AUTHORIZATION regress_alice;
SELECT aidb.delete_pipeline('bob_docs');
SELECT aidb.update_pipeline('bob_docs', auto_processing => 'Live');
RESET SESSION AUTHORIZATION;

-------------------------------------------------------------------------------
-- Pipelines run as their owner: when alice loses SELECT on the source, her
-- pipeline blocks with a clear error and reads nothing, whoever runs it;
-- given SELECT back and retried, it catches up. (tests/test_security.py
-- does the same with a background worker logged in as an aidb user.)
SET SESSION AUTHORIZATION regress_alice;
SELECT aidb.create_pipeline('alice_feed', 'feed', source_data_column => 'body',
       step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('hashed'),
       destination => 'regress_alice.feed_embeddings');
SELECT aidb.run_pipeline('alice_feed');
RESET SESSION AUTHORIZATION;
REVOKE SELECT ON feed FROM regress_alice;
INSERT INTO feed VALUES (3, 'third news item');
SET SESSION AUTHORIZATION regress_alice;
SELECT aidb.run_pipeline('alice_feed');
SELECT pipeline, step, category, message FROM aidb.pipeline_errors WHERE pipeline = 'alice_feed';
SELECT "Status", "last error" FROM aidb.pipem WHERE pipeline = 'alice_feed';
SELECT source_key FROM regress_alice.feed_embeddings ORDER BY 1;
-- Bob sees that it is blocked, never why (her errors are hers).
SET SESSION AUTHORIZATION regress_bob;
SELECT pipeline, "Status", "last error" FROM aidb.pipem WHERE pipeline = 'alice_feed';
SELECT count(*) AS errors_bob_sees FROM aidb.pipeline_errors;
SELECT count(*) AS her_run_stats_bob_sees FROM aidb.pipeline_run_stats s
JOIN aidb.pipeline_registry p ON p.id = s.pipeline_id WHERE p.name = 'alice_feed';
RESET SESSION AUTHORIZATION;
-- A superuser's run_pipeline runs as the owner too, and reads nothing either.
SELECT aidb.run_pipeline('alice_feed');
SELECT source_key FROM regress_alice.feed_embeddings ORDER BY 1;
GRANT SELECT ON feed TO regress_alice;
SET SESSION AUTHORIZATION regress_alice;
SELECT aidb.retry_pipeline_errors('alice_feed');
SELECT aidb.run_pipeline('alice_feed');
SELECT "Status" FROM aidb.pipem WHERE pipeline = 'alice_feed';
SELECT source_key FROM regress_alice.feed_embeddings ORDER BY 1;
RESET SESSION AUTHORIZATION;
-- Live: a change by another role is embedded at once, as alice; carol
-- writes to the feed but cannot read what alice's pipeline made of it.
SET SESSION AUTHORIZATION regress_alice;
SELECT aidb.update_pipeline('alice_feed', auto_processing => 'Live');
RESET SESSION AUTHORIZATION;
GRANT INSERT ON feed TO regress_carol;
SET SESSION AUTHORIZATION regress_carol;
INSERT INTO feed VALUES (4, 'fourth news item');
SELECT count(*) FROM regress_alice.feed_embeddings;
RESET SESSION AUTHORIZATION;
SELECT source_key FROM regress_alice.feed_embeddings ORDER BY 1;
-- Without SELECT, a Live pipeline refuses the change: nothing is written.
REVOKE SELECT ON feed FROM regress_alice;
INSERT INTO feed VALUES (5, 'fifth news item');
GRANT SELECT ON feed TO regress_alice;
SELECT id FROM feed ORDER BY 1;

-------------------------------------------------------------------------------
-- Names: quotes, spaces, mixed case, unicode and injection attempts, in
-- every name argument, work or fail cleanly. A pipeline name is an
-- identifier; tables, columns, schemas, models and roles may be anything.
CREATE ROLE "regress_odd ""role"" ü";
GRANT aidb_users TO "regress_odd ""role"" ü";
CREATE SCHEMA "Odd Schema" AUTHORIZATION "regress_odd ""role"" ü";
SET SESSION AUTHORIZATION "regress_odd ""role"" ü";
CREATE TABLE "Odd Schema"."Odd ""Table"" ü" ("Key Col" int PRIMARY KEY, "Body ""Text""; --" text);
INSERT INTO "Odd Schema"."Odd ""Table"" ü" VALUES (1, 'The cat naps'), (2, 'Stocks fell');
SELECT aidb.create_model('Mödel "q"; DROP TABLE feed; --', 'hash_embeddings');
SELECT aidb.create_pipeline('Ünïcode_Pipe', '"Odd Schema"."Odd ""Table"" ü"',
       source_key_column => 'Key Col', source_data_column => 'Body "Text"; --',
       destination => '"Odd Schema"."Dest""; DROP TABLE feed; --"',
       step_1 => 'KnowledgeBase',
       step_1_options => aidb.knowledge_base_config('Mödel "q"; DROP TABLE feed; --', distance_operator => 'Cosine'),
       auto_processing => 'Live');
INSERT INTO "Odd Schema"."Odd ""Table"" ü" VALUES (3, 'A kitten');
UPDATE "Odd Schema"."Odd ""Table"" ü" SET "Body ""Text""; --" = 'Stocks rose' WHERE "Key Col" = 2;
SELECT key, round(distance::numeric, 3) AS distance FROM aidb.retrieve_key('Ünïcode_Pipe', 'cat', 3);
SELECT name, source, destination, owner_role FROM aidb.pipelines WHERE name = 'Ünïcode_Pipe';
SELECT "Status", "count(source records)", "count(destination records)" FROM aidb.pipem
WHERE pipeline = 'Ünïcode_Pipe';
SELECT aidb.run_pipeline('Ünïcode_Pipe');
-- Pipeline names are case-sensitive identifiers.
SELECT aidb.run_pipeline('ünïcode_pipe');
\set kb 'step_1 => ''KnowledgeBase'', step_1_options => aidb.knowledge_base_config(''hashed'')'
SELECT aidb.create_pipeline('My Pipeline', 'feed', source_data_column => 'body', :kb);
SELECT aidb.create_pipeline('x"; DROP TABLE feed; --', 'feed', source_data_column => 'body', :kb);
-- Injection attempts in every other name argument.
SELECT aidb.create_pipeline('p', 'feed; DROP TABLE feed', source_data_column => 'body', :kb);
SELECT aidb.create_pipeline('p', 'x"; DROP TABLE feed; --', source_data_column => 'body', :kb);
SELECT aidb.create_pipeline('p', '"Odd Schema"."Odd ""Table"" ü"', source_key_column => 'Key Col; DROP TABLE feed',
       source_data_column => 'Body "Text"; --', :kb);
SELECT aidb.create_pipeline('p', '"Odd Schema"."Odd ""Table"" ü"', source_key_column => 'Key Col',
       source_data_column => 'x"; DROP TABLE feed; --', :kb);
SELECT aidb.create_pipeline('p', '"Odd Schema"."Odd ""Table"" ü"', source_key_column => 'Key Col',
       source_data_column => 'Body "Text"; --', destination => 'x"; DROP TABLE feed; --', :kb);
SELECT aidb.create_pipeline('p', '"Odd Schema"."Odd ""Table"" ü"', source_key_column => 'Key Col',
       source_data_column => 'Body "Text"; --', owner_role => 'x"; DROP ROLE regress_bob; --', :kb);
SELECT aidb.create_pipeline('p', '"Odd Schema"."Odd ""Table"" ü"', source_key_column => 'Key Col',
       source_data_column => 'Body "Text"; --',
       step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('x"; DROP TABLE feed; --'));
SELECT aidb.update_pipeline('x"; DROP TABLE feed; --', 'Live');
SELECT aidb.delete_pipeline('x"; DROP TABLE feed; --');
SELECT aidb.retry_pipeline_errors('x"; DROP TABLE feed; --');
SELECT * FROM aidb.retrieve_key('x"; DROP TABLE feed; --', 'query');
SELECT aidb.encode_text('x"; DROP TABLE feed; --', 'query');
SELECT aidb.delete_model('x"; DROP TABLE feed; --');
SELECT aidb.delete_pipeline('Ünïcode_Pipe', drop_destination => true);
SELECT aidb.delete_model('Mödel "q"; DROP TABLE feed; --');
RESET SESSION AUTHORIZATION;
SELECT count(*) AS feed_rows FROM feed;

-------------------------------------------------------------------------------
-- The security settings: only superusers change them.
SET SESSION AUTHORIZATION regress_alice;
SHOW aidb.allowed_model_hosts;
SHOW aidb.allowed_local_paths;
SET aidb.allowed_model_hosts = '*';
RESET aidb.allowed_model_hosts;
SELECT set_config('aidb.allowed_model_hosts', '*', false);
SET aidb.allowed_local_paths = '/';
ALTER ROLE regress_alice SET aidb.allowed_model_hosts = '*';
CREATE FUNCTION regress_alice.widen() RETURNS void LANGUAGE sql
    SET aidb.allowed_model_hosts = '*' AS 'SELECT';
RESET SESSION AUTHORIZATION;
-- Set for the database, as an administrator would (postgresql.conf works
-- the same); the value holds for new sessions, and RESET ALL keeps it.
ALTER DATABASE :"db" SET aidb.allowed_model_hosts = 'models.example.com, *.corp.example, [::1], 10.0.0.5';
ALTER DATABASE :"db" SET aidb.allowed_local_paths = '/srv/aidb';
\c
SET client_min_messages = warning;
SET SESSION AUTHORIZATION regress_alice;
RESET ALL;
SHOW aidb.allowed_model_hosts;
SHOW aidb.allowed_local_paths;
-- A model created before the setting was tightened: refused at each use,
-- before any request is sent.
SELECT aidb.encode_text('alice_remote', 'hello');
SELECT aidb.run_pipeline('alice_remote_notes');
SELECT pipeline, step, category, message FROM aidb.pipeline_errors WHERE pipeline = 'alice_remote_notes';
SELECT "Status" FROM aidb.pipem WHERE pipeline = 'alice_remote_notes';
-- A model put in the registry directly skips create_model's check, not this one.
INSERT INTO aidb.model_registry (name, provider, config)
VALUES ('alice_direct', 'openai_embeddings',
        '{"model": "m", "url": "http://evil.example/v1", "dimensions": 8, "max_retries": 0, "timeout": 2}');
SELECT aidb.encode_text('alice_direct', 'hello');
SELECT aidb.delete_model('alice_direct');
-- Hosts are compared exactly after parsing: case and a trailing dot do not
-- matter; look-alike names, user info, other IP spellings never pass.
CREATE FUNCTION pg_temp.try_url(url text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aidb.create_model('probe', 'openai_embeddings', jsonb_build_object('model', 'm', 'url', url));
    PERFORM aidb.delete_model('probe');
    RETURN 'allowed';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLERRM;
END $$;
SELECT url, pg_temp.try_url(url) AS outcome
FROM unnest(ARRAY[
    'https://models.example.com/v1',
    'https://MODELS.Example.COM./v1',
    'https://models.example.com:8443/v1',
    'https://a.b.corp.example/v1',
    'http://[::1]:8080/v1',
    'http://10.0.0.5/v1',
    'https://corp.example/v1',
    'https://evilcorp.example/v1',
    'https://models.example.com.evil.com/v1',
    'http://10.0.0.5.evil.com/v1',
    'https://models.example.com@evil.com/v1',
    'https://models.example.com%40evil.com/v1',
    'https://evil.com#@models.example.com/v1',
    'https://evil.com\@models.example.com/v1',
    'http://[::2]/v1',
    'http://[::ffff:10.0.0.5]/v1',
    'http://167772165/v1',
    'http://127.0.0.1:9/v1']) AS url;
RESET SESSION AUTHORIZATION;
-- A malformed entry refuses every remote model (a typo must not open all);
-- an empty list allows none.
SET aidb.allowed_model_hosts = 'models.example.com, bad host!';
SELECT aidb.create_model('probe', 'openai_embeddings', '{"model": "m", "url": "https://models.example.com/v1"}');
SET aidb.allowed_model_hosts = '';
SELECT aidb.create_model('probe', 'openai_embeddings', '{"model": "m", "url": "https://models.example.com/v1"}');
ALTER DATABASE :"db" RESET aidb.allowed_model_hosts;
ALTER DATABASE :"db" RESET aidb.allowed_local_paths;

-------------------------------------------------------------------------------
-- Leave nothing behind: pipelines, models, tables, schemas, roles.
SELECT aidb.delete_pipeline('alice_notes', drop_destination => true);
SELECT aidb.delete_pipeline('alice_feed', drop_destination => true);
SELECT aidb.delete_pipeline('bob_docs', drop_destination => true);
SELECT aidb.delete_pipeline('alice_remote_notes', drop_destination => true);
SELECT aidb.delete_model('alice_remote');
SELECT aidb.delete_model('bob_remote');
DROP TABLE feed;
DROP SCHEMA regress_alice, regress_bob, "Odd Schema" CASCADE;
DROP FUNCTION pg_temp.try_url(text);
DROP ROLE regress_alice, regress_bob, regress_carol, "regress_odd ""role"" ü";
DROP EXTENSION aidb;
