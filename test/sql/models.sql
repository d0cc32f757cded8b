-- Models: the registry, the embedded default, and every rejected input.
CREATE EXTENSION aidb;
SET client_min_messages = warning;
\set SHOW_CONTEXT never

-- The embedded default is pre-registered.
SELECT name, provider, config, has_credentials FROM aidb.models ORDER BY name;

-- It embeds offline, 384 dimensions, and similar texts land close together.
SELECT vector_dims(aidb.encode_text('minilm', 'The cat sat on the mat.')) AS dims;
SELECT (aidb.encode_text('minilm', 'A kitten rests on a rug.') <=> aidb.encode_text('minilm', 'The cat sat on the mat.'))
     < (aidb.encode_text('minilm', 'Quarterly tax filing deadlines') <=> aidb.encode_text('minilm', 'The cat sat on the mat.'))
       AS similar_is_closer;
-- The batch form returns one vector per input, in order, and keeps NULLs.
SELECT array_length(v, 1) AS n, v[2] IS NULL AS second_is_null,
       (v[1] <=> aidb.encode_text('minilm', 'one')) < 1e-5 AS first_matches_single
FROM (SELECT aidb.encode_text_batch('minilm', ARRAY['one', NULL, 'three']) AS v) s;
SELECT aidb.encode_text('minilm', NULL) IS NULL AS null_in_null_out;

-- A remote model: config is normalised with defaults; the key is never shown.
SELECT aidb.create_model('emb', 'openai_embeddings',
       '{"model": "text-embedding-3-small", "url": "http://127.0.0.1:9/v1"}',
       '{"api_key": "sk-secret-never-shown-1234"}');
SELECT name, provider, config, has_credentials FROM aidb.models WHERE name = 'emb';
SELECT count(*) AS views_mentioning_key FROM aidb.models WHERE models::text LIKE '%secret%';
SELECT aidb.create_model('ollama', 'ollama_embeddings', '{"model": "nomic-embed-text", "dimensions": 768}');
SELECT name, config FROM aidb.models WHERE name = 'ollama';

-- Replacing credentials keeps the definition. credentials_env may name only
-- the variables a superuser allowed (none by default).
SELECT aidb.create_model('emb', 'openai_embeddings',
       '{"model": "text-embedding-3-small", "url": "http://127.0.0.1:9/v1"}',
       '{"credentials_env": "OPENAI_API_KEY"}', replace_credentials => true);
SET aidb.allowed_credentials_env = 'OTHER_KEY, OPENAI_API_KEY';
SELECT aidb.create_model('emb', 'openai_embeddings',
       '{"model": "text-embedding-3-small", "url": "http://127.0.0.1:9/v1"}',
       '{"credentials_env": "OPENAI_API_KEY"}', replace_credentials => true);
RESET aidb.allowed_credentials_env;
SELECT credentials FROM aidb.model_credentials WHERE model = 'emb';

-- Rejected input: each a clear error, nothing created.
CREATE TEMP TABLE before AS SELECT name FROM aidb.model_registry;
SELECT aidb.create_model('x', 'no_such_provider');
SELECT aidb.create_model('x', 'openai_embeddings', '{}');
SELECT aidb.create_model('x', 'openai_embeddings', '{"model": "m", "url": "ftp://example.com"}');
SELECT aidb.create_model('x', 'openai_embeddings', '{"model": "m", "url": "not a url"}');
SELECT aidb.create_model('x', 'openai_embeddings', '{"model": "m", "dimensions": 0}');
SELECT aidb.create_model('x', 'openai_embeddings', '{"model": "m", "dimensions": -5}');
SELECT aidb.create_model('x', 'openai_embeddings', '{"model": "m", "dimensions": "384"}');
SELECT aidb.create_model('x', 'openai_embeddings', '{"model": "m", "max_batch_size": 0}');
SELECT aidb.create_model('x', 'openai_embeddings', '{"model": "m", "timeout": -1}');
SELECT aidb.create_model('x', 'openai_embeddings', '{"model": "m", "colour": "red"}');
SELECT aidb.create_model('x', 'openai_embeddings', '{"model": "m"}', '{"password": "p"}');
SELECT aidb.create_model('x', 'openai_embeddings', '[1, 2]');
SELECT aidb.create_model('x', 'local_embeddings', '{"model": "no-such-local-model"}');
SELECT aidb.create_model('x', 'local_embeddings', '{}', '{"api_key": "k-123456"}');
SELECT aidb.create_model('', 'local_embeddings');
SELECT aidb.create_model(repeat('n', 64), 'local_embeddings');
SELECT aidb.create_model('emb', 'openai_embeddings', '{"model": "text-embedding-3-small"}');
SELECT aidb.create_model('emb', 'openai_embeddings', '{"model": "other"}', '{}', replace_credentials => true);
SELECT name FROM aidb.model_registry EXCEPT SELECT name FROM before;

-- Using a model that does not exist, deleting one that does not exist.
SELECT aidb.encode_text('nope', 'text');
SELECT aidb.delete_model('nope');

-- A provider that cannot be reached: a clear error naming the model, no key.
SELECT aidb.create_model('unreachable', 'openai_embeddings',
       '{"model": "m", "url": "http://127.0.0.1:9/v1", "max_retries": 0, "timeout": 2}',
       '{"api_key": "sk-do-not-print-me-5678"}');
SELECT aidb.encode_text('unreachable', 'hello');

SELECT aidb.delete_model('emb');
SELECT aidb.delete_model('ollama');
SELECT aidb.delete_model('unreachable');
SELECT name FROM aidb.models ORDER BY name;
SELECT count(*) AS orphaned_credentials FROM aidb.model_credentials;

-- Batches hand vectors over as little-endian float4 bytes (1.0, -2.0, 0.1):
-- exact, whatever the CPU; anything but whole float4s is refused.
SELECT aidb._float4_vector('\x0000803f000000c0cdcccc3d'::bytea);
SELECT aidb._float4_vector('\x0000803f00'::bytea);
SELECT aidb._float4_vector(''::bytea);

-- Leave the database as the next test file expects it: without aidb.
DROP EXTENSION aidb;
