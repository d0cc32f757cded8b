-- aidb extension script, part 10: who may use aidb, and the model registry.
--
-- Members of the role aidb_users (and superusers) create and manage models
-- and pipelines; each manages only its own. Everyone may read the views and
-- retrieve from destinations they can read.
--
-- Definitions are public (aidb.models); credentials sit in their own table
-- that row-level security limits to the model's owner (and superusers). The
-- aidb.models view only says whether credentials exist, never what they are.

-- Roles belong to the cluster, not to a database: the extension in a second
-- database (or again after DROP EXTENSION) finds the role already there.
-- upgrade: skip begin
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'aidb_users') THEN
        CREATE ROLE aidb_users NOLOGIN;
        COMMENT ON ROLE aidb_users IS
            'Members may create aidb models and pipelines (GRANT aidb_users TO some_role).';
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;   -- created meanwhile by CREATE EXTENSION in another database
END
$$;
-- upgrade: skip end

-- The check behind every function that changes aidb objects, for a clear
-- error; the table privileges granted below enforce the same rule.
CREATE FUNCTION aidb._require_aidb_user(action text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NOT pg_has_role(current_user, 'aidb_users', 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to %: role % is not a member of aidb_users',
            action, quote_ident(current_user)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('Ask an administrator for membership: GRANT aidb_users TO %I;',
                                current_user);
    END IF;
END
$$;

-- The security of a registry and its credentials table, models' and
-- volumes' alike (one definition, so that a fix reaches both): everyone
-- reads the registry, members of a row's owner role write it; a
-- credentials row (keyed by `key_column`, the registry's name) is visible
-- and writable only to members of its registry row's owner role.
-- Superusers bypass row-level security; the engine reads credentials for a
-- pipeline through SECURITY DEFINER functions. Run by the install script's
-- table sections only (an upgrade keeps the policies it finds).
CREATE FUNCTION aidb._protect_registry(registry regclass, credentials regclass, key_column name)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    -- 0.1.0 wrote these policies by hand with the alias m (models) or v
    -- (volumes); the same alias keeps their text identical after an upgrade.
    alias name := left(key_column, 1);
    owns_row text := format('EXISTS (SELECT FROM %s %I WHERE %I.name = %I '
                            'AND pg_catalog.pg_has_role(%I.owner, ''MEMBER''))',
                            registry, alias, alias, key_column, alias);
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', registry);
    EXECUTE format('CREATE POLICY anyone_reads ON %s FOR SELECT USING (true)', registry);
    EXECUTE format('CREATE POLICY owner_writes ON %s FOR ALL '
                   'USING (pg_catalog.pg_has_role(owner, ''MEMBER'')) '
                   'WITH CHECK (pg_catalog.pg_has_role(owner, ''MEMBER''))', registry);
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', credentials);
    EXECUTE format('CREATE POLICY owner_only ON %s FOR ALL USING (%s) WITH CHECK (%s)',
                   credentials, owns_row, owns_row);
    EXECUTE format('GRANT SELECT ON %s, %s TO PUBLIC', registry, credentials);
    EXECUTE format('GRANT INSERT, DELETE ON %s, %s TO aidb_users', registry, credentials);
END
$$;
COMMENT ON FUNCTION aidb._protect_registry(regclass, regclass, name) IS
    'aidb internal, install only: row-level security and grants of a registry and its credentials table.';

-- upgrade: skip begin
CREATE TABLE aidb.model_registry (
    name        text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 63),
    provider    text NOT NULL,
    config      jsonb NOT NULL DEFAULT '{}',
    owner       regrole NOT NULL DEFAULT pg_catalog.quote_ident(current_user)::regrole,
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

-- CREATE EXTENSION made the schema, owned by a superuser: without USAGE no
-- other role could reach any aidb object (CREATE stays with the owner).
GRANT USAGE ON SCHEMA aidb TO PUBLIC;
SELECT aidb._protect_registry('aidb.model_registry', 'aidb.model_credentials', 'model');

-- User-created models are part of a dump; the pre-registered ones come back
-- with CREATE EXTENSION.
SELECT pg_catalog.pg_extension_config_dump('aidb.model_registry', 'WHERE name <> ''minilm''');
SELECT pg_catalog.pg_extension_config_dump('aidb.model_credentials', '');

-- The embedded default: all-MiniLM-L6-v2, in-process, offline, no key, on
-- OpenVINO (python/aidb/models/local_embeddings.py says why).
INSERT INTO aidb.model_registry (name, provider, config)
VALUES ('minilm', 'local_embeddings',
        '{"model": "all-MiniLM-L6-v2", "max_batch_size": 16, "backend": "openvino", "device": "auto"}');
-- upgrade: skip end

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
    'Registers a model (providers: openai_embeddings, ollama_embeddings, openai_completions, '
    'local_embeddings, hash_embeddings); '
    'with replace_credentials => true, replaces the credentials of an existing one.';

-- What delete_model and delete_volume check first, in one place: the
-- caller is an aidb user, the name is given, the object exists, and the
-- caller is a member of its owner role. `kind` is 'model' or 'volume'.
CREATE FUNCTION aidb._check_may_delete(kind text, registry regclass, object_name text)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    object_owner regrole;
BEGIN
    PERFORM aidb._require_aidb_user(format('delete %ss', kind));
    IF object_name IS NULL THEN
        RAISE EXCEPTION 'the % name must not be NULL', kind
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = format('Pass the name of a %s (SELECT name FROM aidb.%ss).', kind, kind);
    END IF;
    EXECUTE format('SELECT r.owner FROM %s r WHERE r.name = $1', registry)
        INTO object_owner USING object_name;
    IF object_owner IS NULL THEN        -- owner is NOT NULL: no such row
        RAISE EXCEPTION '% "%" does not exist', kind, object_name
            USING ERRCODE = 'undefined_object',
                  HINT = format('See SELECT name FROM aidb.%ss.', kind);
    END IF;
    IF NOT pg_has_role(object_owner, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to delete % "%"', kind, object_name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('The %s belongs to role %s.', kind, object_owner);
    END IF;
END
$$;
COMMENT ON FUNCTION aidb._check_may_delete(text, regclass, text) IS
    'aidb internal: may the caller delete this model or volume (aidb user, exists, owner role)?';

CREATE FUNCTION aidb.delete_model(name text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM aidb._check_may_delete('model', 'aidb.model_registry', delete_model.name);
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

-- The security bounds (superuser-only settings), as the C module holds them:
-- calling into it loads it first, so a value is never a placeholder that a
-- non-superuser SET before the module was loaded (python/aidb/egress.py).
CREATE FUNCTION aidb._allowed_model_hosts() RETURNS text
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'aidb_allowed_model_hosts_value';
COMMENT ON FUNCTION aidb._allowed_model_hosts() IS
    'The value of aidb.allowed_model_hosts: the hosts model URLs may reach.';
CREATE FUNCTION aidb._allowed_local_paths() RETURNS text
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'aidb_allowed_local_paths_value';
COMMENT ON FUNCTION aidb._allowed_local_paths() IS
    'The value of aidb.allowed_local_paths: the directories file volumes may read.';
CREATE FUNCTION aidb._allowed_credentials_env() RETURNS text
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'aidb_allowed_credentials_env_value';
COMMENT ON FUNCTION aidb._allowed_credentials_env() IS
    'The value of aidb.allowed_credentials_env: the variables credentials_env may name.';

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
