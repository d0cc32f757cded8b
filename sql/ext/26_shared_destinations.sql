-- aidb extension script, part 26: destinations that several pipelines feed
-- (docs/architecture.md, "Shared destinations").
--
-- A destination with a column `pipeline text` is shared: every row names the
-- pipeline that wrote it, and everything aidb does to the table is scoped by
-- it — the owner's write function, the capture function's deletes and its
-- TRUNCATE, the keys found at creation, retrieval, pipem's count, the vector
-- index (partial, per pipeline) and delete_pipeline. Without the column a
-- destination belongs to one pipeline, as before. The discriminator holds the
-- pipeline's name: names are unique, are what users see and query by, and
-- come back with a dump (so do ids, but a pipeline deleted and created again
-- under its name would then not find its own rows).
--
-- A shared destination's source_key has the pipeline's key type, or is text:
-- then keys of a type whose text form is exact and independent of every
-- setting (integers, uuid, varchar with a deterministic collation) are
-- stored and compared as text, so pipelines with different key types can
-- share one table.

-- Whether `dest` is shared: it has a (not dropped) column named pipeline.
CREATE FUNCTION aidb._destination_is_shared(dest regclass) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                   WHERE a.attrelid = dest AND a.attname = 'pipeline' AND NOT a.attisdropped)
$$;

-- The condition that keeps a statement on destination rows (alias d) to the
-- pipeline's own: '' for a destination of its own, else
-- " AND d.pipeline = '<name>'".
CREATE FUNCTION aidb._destination_scope(p aidb.pipeline_registry) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN aidb._destination_is_shared(p.destination)
                THEN pg_catalog.format(' AND d.pipeline OPERATOR(pg_catalog.=) %L', p.name)
                ELSE '' END
$$;

-- Whether the pipeline's keys (of `key_type`) are kept as text in its
-- destination: a shared destination whose source_key is text, for keys of
-- another type.
CREATE FUNCTION aidb._destination_keys_as_text(p aidb.pipeline_registry, key_type text)
    RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT key_type <> 'pg_catalog.text' AND EXISTS (
        SELECT FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = p.destination AND a.attname = 'source_key' AND NOT a.attisdropped
          AND a.atttypid = 'pg_catalog.text'::pg_catalog.regtype
          AND aidb._destination_is_shared(p.destination))
$$;

-- The type the destination's source_key holds this pipeline's keys in.
CREATE FUNCTION aidb._destination_key_type(p aidb.pipeline_registry, key_type text) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN aidb._destination_keys_as_text(p, key_type) THEN 'pg_catalog.text'
                ELSE key_type END
$$;

-- "d.source_key = <rhs>" (or "= ANY (<rhs>)" for an array), in the type the
-- destination keeps the keys in, scoped to the pipeline's rows. `rhs` is an
-- expression of the key's type (or an array of it).
CREATE FUNCTION aidb._destination_key_match(p aidb.pipeline_registry, key_type text,
                                            equals text, rhs text, is_array boolean) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT pg_catalog.format('d.source_key %s %s', op, CASE WHEN is_array THEN
               pg_catalog.format('ANY (%s)', converted) ELSE converted END)
           || aidb._destination_scope(p)
    FROM (SELECT CASE WHEN as_text THEN 'OPERATOR(pg_catalog.=)' ELSE equals END AS op,
                 CASE WHEN NOT as_text THEN rhs
                      WHEN is_array THEN pg_catalog.format('(%s)::pg_catalog.text[]', rhs)
                      ELSE pg_catalog.format('(%s)::pg_catalog.text', rhs) END AS converted
          FROM (SELECT aidb._destination_keys_as_text(p, key_type) AS as_text) t) m
$$;

-- ddl_command_end (part 75), for a pipeline whose destination changed: a
-- destination several pipelines write to keeps its column pipeline, of type
-- text (without it their deletes by key would take each other's rows).
CREATE FUNCTION aidb._check_shared_destination_kept(p aidb.pipeline_registry) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    other text := (SELECT r.name FROM aidb.pipeline_registry r
                   WHERE r.destination = p.destination AND r.id <> p.id ORDER BY r.id LIMIT 1);
    pipeline_type regtype := (SELECT a.atttypid FROM pg_attribute a
                              WHERE a.attrelid = p.destination AND a.attname = 'pipeline'
                                AND NOT a.attisdropped);
BEGIN
    IF other IS NOT NULL AND pipeline_type IS NULL THEN
        RAISE EXCEPTION 'destination % is shared by pipelines "%" and "%": its column pipeline '
                        'cannot go', p.destination, p.name, other
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = 'Without it the pipelines'' deletes by key would take each other''s rows.',
                  HINT = 'Delete all but one of the pipelines writing to it first.';
    END IF;
    IF pipeline_type IS DISTINCT FROM 'pg_catalog.text'::regtype AND pipeline_type IS NOT NULL THEN
        RAISE EXCEPTION 'column pipeline of destination % names the pipeline of each row: it must '
                        'stay text, not %', p.destination, pipeline_type
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = format('Pipeline "%s" writes to it.', p.name);
    END IF;
END
$$;
