-- aidb extension script, part 10: the model registry.
--
-- Definitions are public (aidb.models); credentials sit in their own table
-- that row-level security limits to the model's owner (and superusers). The
-- aidb.models view only says whether credentials exist, never what they are.

CREATE TABLE aidb.model_registry (
    name        text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 63),
    provider    text NOT NULL,
    config      jsonb NOT NULL DEFAULT '{}',
    owner       regrole NOT NULL DEFAULT current_user::regrole,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE aidb.model_registry IS
    'Models known to aidb. Use aidb.create_model() / aidb.delete_model(); read aidb.models.';

CREATE TABLE aidb.model_credentials (
    model       text PRIMARY KEY REFERENCES aidb.model_registry (name) ON DELETE CASCADE,
    credentials jsonb NOT NULL
);
COMMENT ON TABLE aidb.model_credentials IS
    'API keys of models; each row is visible only to the model''s owner.';

ALTER TABLE aidb.model_registry ENABLE ROW LEVEL SECURITY;
CREATE POLICY anyone_reads ON aidb.model_registry FOR SELECT USING (true);
CREATE POLICY owner_writes ON aidb.model_registry FOR ALL
    USING (pg_catalog.pg_has_role(owner, 'MEMBER'))
    WITH CHECK (pg_catalog.pg_has_role(owner, 'MEMBER'));

ALTER TABLE aidb.model_credentials ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON aidb.model_credentials FOR ALL
    USING (EXISTS (SELECT FROM aidb.model_registry m
                   WHERE m.name = model AND pg_catalog.pg_has_role(m.owner, 'MEMBER')))
    WITH CHECK (EXISTS (SELECT FROM aidb.model_registry m
                        WHERE m.name = model AND pg_catalog.pg_has_role(m.owner, 'MEMBER')));

-- CREATE EXTENSION made the schema, owned by a superuser: without USAGE no
-- other role could reach any aidb object (CREATE stays with the owner).
GRANT USAGE ON SCHEMA aidb TO PUBLIC;
GRANT SELECT, INSERT, DELETE ON aidb.model_registry TO PUBLIC;
GRANT SELECT, INSERT, DELETE ON aidb.model_credentials TO PUBLIC;

-- User-created models are part of a dump; the pre-registered ones come back
-- with CREATE EXTENSION.
SELECT pg_catalog.pg_extension_config_dump('aidb.model_registry', 'WHERE name <> ''minilm''');
SELECT pg_catalog.pg_extension_config_dump('aidb.model_credentials', '');

-- The embedded default: all-MiniLM-L6-v2, in-process, offline, no key.
INSERT INTO aidb.model_registry (name, provider, config)
VALUES ('minilm', 'local_embeddings', '{"model": "all-MiniLM-L6-v2", "max_batch_size": 64}');

CREATE VIEW aidb.models AS
SELECT m.name,
       m.provider,
       m.config,
       m.owner,
       EXISTS (SELECT FROM aidb.model_credentials c WHERE c.model = m.name) AS has_credentials,
       m.created_at
FROM aidb.model_registry m;
COMMENT ON VIEW aidb.models IS
    'Registered models: name, provider, config, owner, whether credentials are set.';
GRANT SELECT ON aidb.models TO PUBLIC;

CREATE FUNCTION aidb.create_model(
    name text,
    provider text,
    config jsonb DEFAULT '{}',
    credentials jsonb DEFAULT '{}',
    replace_credentials boolean DEFAULT false
) RETURNS void
    LANGUAGE plpython3u
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
GD["aidb"].create_model(name, provider, config, credentials, replace_credentials)
$$;
COMMENT ON FUNCTION aidb.create_model(text, text, jsonb, jsonb, boolean) IS
    'Registers a model (providers: openai_embeddings, ollama_embeddings, local_embeddings); '
    'with replace_credentials => true, replaces the credentials of an existing one.';

CREATE FUNCTION aidb.delete_model(name text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    model_owner regrole;
BEGIN
    SELECT m.owner INTO model_owner FROM aidb.model_registry m WHERE m.name = delete_model.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model "%" does not exist', delete_model.name
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT name FROM aidb.models.';
    END IF;
    IF NOT pg_has_role(model_owner, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to delete model "%"', delete_model.name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('The model belongs to role %s.', model_owner);
    END IF;
    -- A pipeline's KnowledgeBase step names its model: deleting it would
    -- break the pipeline at its next batch.
    IF EXISTS (SELECT FROM aidb.pipeline_registry p, jsonb_array_elements(p.steps) s
               WHERE s->'options'->>'model' = delete_model.name) THEN
        RAISE EXCEPTION 'model "%" is used by pipeline "%"', delete_model.name,
            (SELECT p.name FROM aidb.pipeline_registry p, jsonb_array_elements(p.steps) s
             WHERE s->'options'->>'model' = delete_model.name ORDER BY p.name LIMIT 1)
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Delete the pipelines that use it first (SELECT name, steps FROM aidb.pipelines).';
    END IF;
    DELETE FROM aidb.model_registry m WHERE m.name = delete_model.name;
END
$$;
COMMENT ON FUNCTION aidb.delete_model(text) IS 'Deletes a model and its credentials.';

CREATE FUNCTION aidb.encode_text(model text, input text) RETURNS vector
    LANGUAGE plpython3u
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
return GD["aidb"].encode_text(model, input)
$$;
COMMENT ON FUNCTION aidb.encode_text(text, text) IS
    'Embeds one text with the named model.';

CREATE FUNCTION aidb.encode_text_batch(model text, inputs text[]) RETURNS vector[]
    LANGUAGE plpython3u
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
return GD["aidb"].encode_text_batch(model, inputs)
$$;
COMMENT ON FUNCTION aidb.encode_text_batch(text, text[]) IS
    'Embeds many texts with the named model, in batches sent concurrently; NULLs stay NULL.';
