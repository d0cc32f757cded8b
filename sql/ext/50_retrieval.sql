-- aidb extension script, part 50: retrieval — nearest neighbours of a query
-- text in a pipeline's destination, embedded with the pipeline's own model
-- and compared with the pipeline's own distance operator.
--
-- Both functions run with the caller's rights: they read the destination
-- table, so the caller needs SELECT on it. To filter on source columns, ask
-- for more results and join them with the source on the key, e.g.
--     SELECT r.*, d.title FROM aidb.retrieve_key('docs', 'query', 50) r
--     JOIN docs d ON d.id::text = r.key WHERE d.published ORDER BY r.distance LIMIT 5;

CREATE FUNCTION aidb._retrieve(pipeline_name text, query text, topk integer, deduplicate boolean)
    RETURNS TABLE (key text, part_id integer, value text, distance double precision)
    LANGUAGE plpgsql STABLE
    SET search_path FROM CURRENT     -- the schemas of aidb and vector, fixed at CREATE EXTENSION
    AS $$
DECLARE
    p        aidb.pipeline_registry;
    kb       jsonb;
    operator text;
BEGIN
    SELECT * INTO p FROM aidb.pipeline_registry r WHERE r.name = pipeline_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pipeline "%" does not exist', pipeline_name
            USING ERRCODE = 'undefined_object', HINT = 'See SELECT name FROM aidb.pipelines.';
    END IF;
    IF topk IS NULL OR topk < 1 THEN
        RAISE EXCEPTION 'topk must be at least 1, not %', coalesce(topk::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Checked before the query is embedded, and named plainly.
    IF NOT (has_schema_privilege((SELECT c.relnamespace FROM pg_catalog.pg_class c
                                  WHERE c.oid = p.destination), 'USAGE')
            AND has_table_privilege(p.destination, 'SELECT')) THEN
        RAISE EXCEPTION 'permission denied for the destination % of pipeline "%"',
            p.destination, pipeline_name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Its owner can GRANT SELECT on it (and USAGE on its schema).';
    END IF;
    kb := p.steps -> -1;
    IF kb ->> 'operation' <> 'KnowledgeBase' THEN
        RAISE EXCEPTION 'pipeline "%" stores no embeddings (its last step is %)',
            pipeline_name, kb ->> 'operation' USING ERRCODE = 'feature_not_supported';
    END IF;
    operator := CASE kb -> 'options' ->> 'distance_operator'
                    WHEN 'Cosine' THEN '<=>' WHEN 'InnerProduct' THEN '<#>' ELSE '<->' END;
    -- The inner ORDER BY ... LIMIT is what a vector index answers. With
    -- deduplicate, each key keeps its best part, from 20 candidates per
    -- wanted key (approximate when one key has more than 20 better parts).
    RETURN QUERY EXECUTE format($q$
        SELECT c.k, c.part_id, c.value, c.distance
        FROM (SELECT candidates.*, row_number() OVER (PARTITION BY candidates.k
                                                     ORDER BY candidates.distance) AS rank
              FROM (SELECT d.source_key::text AS k, d.part_id, d.value,
                           (d.embedding %1$s $1)::float8 AS distance
                    FROM %2$s d ORDER BY d.embedding %1$s $1 LIMIT $2) candidates) c
        WHERE c.rank = 1 OR NOT $4
        ORDER BY c.distance, c.k, c.part_id LIMIT $3 $q$, operator, p.destination)
    USING aidb.encode_text(kb -> 'options' ->> 'model', query),
          CASE WHEN deduplicate THEN topk * 20 ELSE topk END, topk, deduplicate;
END
$$;

CREATE FUNCTION aidb.retrieve_key(pipeline text, query text, topk integer DEFAULT 1,
                                  deduplicate boolean DEFAULT true)
    RETURNS TABLE (key text, part_id integer, distance double precision)
    LANGUAGE sql STABLE
    AS $$ SELECT r.key, r.part_id, r.distance FROM aidb._retrieve(pipeline, query, topk, deduplicate) r $$;
COMMENT ON FUNCTION aidb.retrieve_key(text, text, integer, boolean) IS
    'The topk source keys nearest to a query text (one row per key unless deduplicate => false).';

CREATE FUNCTION aidb.retrieve_text(pipeline text, query text, topk integer DEFAULT 1,
                                   deduplicate boolean DEFAULT true)
    RETURNS TABLE (key text, part_id integer, value text, distance double precision)
    LANGUAGE sql STABLE
    AS $$ SELECT * FROM aidb._retrieve(pipeline, query, topk, deduplicate) $$;
COMMENT ON FUNCTION aidb.retrieve_text(text, text, integer, boolean) IS
    'Like retrieve_key, with the stored value (the embedded chunk) of each result.';
