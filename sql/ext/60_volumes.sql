-- aidb extension script, part 60: volumes — files in a local directory
-- (file:///dir) or objects in an S3 bucket (s3://bucket/prefix) that
-- pipelines read (python/aidb/volumes/).
--
-- Like models: definitions are public (aidb.volumes); credentials sit in
-- their own table that row-level security limits to the volume's owner (and
-- superusers). Local directories must lie inside aidb.allowed_local_paths,
-- which only superusers set; checked at creation and at every use.

-- upgrade: skip begin
CREATE TABLE aidb.volume_registry (
    name        text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 63),
    uri         text NOT NULL,
    options     jsonb NOT NULL DEFAULT '{}',
    owner       regrole NOT NULL DEFAULT pg_catalog.quote_ident(current_user)::regrole,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE aidb.volume_registry IS
    'Volumes known to aidb. Use aidb.create_volume() / aidb.delete_volume(); read aidb.volumes.';

CREATE TABLE aidb.volume_credentials (
    volume      text PRIMARY KEY REFERENCES aidb.volume_registry (name) ON DELETE CASCADE,
    credentials jsonb NOT NULL
);
COMMENT ON TABLE aidb.volume_credentials IS
    'S3 credentials of volumes; each row is visible only to the volume''s owner.';

SELECT aidb._protect_registry('aidb.volume_registry', 'aidb.volume_credentials', 'volume');

SELECT pg_catalog.pg_extension_config_dump('aidb.volume_registry', '');
SELECT pg_catalog.pg_extension_config_dump('aidb.volume_credentials', '');
-- upgrade: skip end

CREATE VIEW aidb.volumes AS
SELECT v.name,
       v.uri,
       v.options,
       v.owner,
       EXISTS (SELECT FROM aidb.volume_credentials c WHERE c.volume = v.name) AS has_credentials,
       v.created_at
FROM aidb.volume_registry v;
COMMENT ON VIEW aidb.volumes IS
    'Registered volumes: name, uri, options (without secrets), owner, whether credentials are set.';
GRANT SELECT ON aidb.volumes TO PUBLIC;

CREATE FUNCTION aidb.create_volume(
    name text,
    uri text,
    options jsonb DEFAULT '{}'
) RETURNS void
    LANGUAGE plpython3u
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
GD["aidb"].create_volume(name, uri, options)
$$;
COMMENT ON FUNCTION aidb.create_volume(text, text, jsonb) IS
    'Registers a volume: file:///dir (inside aidb.allowed_local_paths) or s3://bucket/prefix '
    '(options: endpoint_url, region, force_path_style, max_object_size, and the credentials '
    'access_key_id, secret_access_key, session_token, which are stored apart).';

CREATE FUNCTION aidb.delete_volume(name text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM aidb._check_may_delete('volume', 'aidb.volume_registry', delete_volume.name);
    -- A pipeline reading the volume would fail at its next scan.
    IF EXISTS (SELECT FROM aidb.pipeline_registry p WHERE p.source_volume = delete_volume.name) THEN
        RAISE EXCEPTION 'volume "%" is used by pipeline "%"', delete_volume.name,
            (SELECT p.name FROM aidb.pipeline_registry p
             WHERE p.source_volume = delete_volume.name ORDER BY p.name LIMIT 1)
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Delete the pipelines that read it first (aidb.delete_pipeline()).';
    END IF;
    DELETE FROM aidb.volume_registry v WHERE v.name = delete_volume.name;
END
$$;
COMMENT ON FUNCTION aidb.delete_volume(text) IS 'Deletes a volume and its credentials.';

CREATE FUNCTION aidb.list_volume(name text)
    RETURNS TABLE (key text, size bigint, last_modified timestamptz, etag text)
    LANGUAGE plpython3u
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
return GD["aidb"].list_volume(name)
$$;
COMMENT ON FUNCTION aidb.list_volume(text) IS
    'Every object of a volume, in key order: key (relative to the directory or prefix), '
    'size in bytes, last_modified, etag.';
