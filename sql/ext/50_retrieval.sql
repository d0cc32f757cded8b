-- aidb extension script, part 50: retrieval — the nearest parts of a
-- pipeline's destination to a query text, embedded with the pipeline's own
-- model and compared with the pipeline's own distance operator.
--
-- Who may do what (docs/reference.md, "aidb.retrieve_key", says the same to users):
--   * Reading the destination happens with the caller's rights, in
--     retrieve_text (SECURITY INVOKER): the caller needs USAGE on its schema
--     and SELECT on the table, as for any SELECT.
--   * Embedding the query needs the model's credentials, which row-level
--     security shows to the model's owner alone. aidb._embed_query is the one
--     narrow exception: a SECURITY DEFINER function of the extension that
--     embeds a query with a pipeline's model for a role that may read that
--     pipeline's destination, and returns only the vector.
--   * Nothing the pipeline's owner controls runs with the reader's rights:
--     the destination must be a plain or partitioned table (on PostgreSQL 15
--     an empty table can become a view through CREATE RULE "_RETURN", whose
--     functions would run as the reader), without row-level security that
--     applies to the reader (policy expressions run as the reader), with the
--     column types aidb gave it; keys are turned into text by their type's
--     output function, never by a cast the key type's owner could define.
--   * Every function here runs with search_path = pg_catalog, pg_temp
--     (PostgreSQL never looks up functions or operators in pg_temp), and the
--     statement that reads the destination names every function and operator
--     with its schema: pgvector's operators with the schema pg_extension says
--     vector lives in, which may be one that others can create objects in.
--
-- To filter on source columns, ask for more results and join them with the
-- source on the key, e.g.
--     SELECT r.*, d.title FROM aidb.retrieve_key('docs', 'query', 50) r
--     JOIN docs d ON d.id::text = r.key WHERE d.published ORDER BY r.distance LIMIT 5;

-- The query's embedding, for a role that may read the pipeline's destination.
--
-- Whose rights are checked: inside a SECURITY DEFINER function current_user
-- is the function's owner, and PostgreSQL keeps no trace of the role that
-- called it. What a definer can still see is the role the session acts as:
-- the one chosen by SET ROLE (current_setting('role')), else the session
-- user (which SET SESSION AUTHORIZATION changes). Neither can be set to a role
-- the session may not become, and a SECURITY DEFINER function cannot change
-- them. That role must be able to read the destination; retrieve_text also
-- checks current_user, which reads it. So retrieval through a SECURITY
-- DEFINER wrapper works only for sessions that could read the destination
-- themselves: anything looser would let a role that cannot read it spend the
-- model owner's credentials.
--
-- The pipeline's owner must also be allowed to use the model's credentials
-- (create_pipeline checks that, but an owner may rewrite the steps of their
-- registry row afterwards): otherwise this function would lend another
-- user's key to the pipeline's readers.
--
-- Grants: EXECUTE to PUBLIC, deliberately. Any role a destination's owner
-- lets read it calls this through retrieve_key / retrieve_text (which run
-- with the caller's rights), and the function checks that role itself.
CREATE FUNCTION aidb._embed_query(pipeline_id integer, query text) RETURNS vector
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    reader      text := CASE current_setting('role') WHEN 'none' THEN session_user::text
                                                     ELSE current_setting('role') END;
    p           aidb.pipeline_registry;
    kb          jsonb;
    model_name  text;
    model_owner regrole;
BEGIN
    IF query IS NULL THEN
        RAISE EXCEPTION 'query must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO p FROM aidb.pipeline_registry r WHERE r.id = _embed_query.pipeline_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pipeline with id % does not exist', coalesce(pipeline_id::text, 'NULL')
            USING ERRCODE = 'undefined_object', HINT = 'See SELECT name FROM aidb.pipelines.';
    END IF;
    IF NOT (EXISTS (SELECT FROM pg_class c WHERE c.oid = p.destination
                    AND has_schema_privilege(reader, c.relnamespace, 'USAGE'))
            AND has_table_privilege(reader, p.destination, 'SELECT')) THEN
        RAISE EXCEPTION 'permission denied to embed queries for pipeline "%"', p.name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Role %I cannot read its destination %s.', reader, p.destination),
                  HINT = 'Its owner can GRANT SELECT on the destination (and USAGE on its schema).';
    END IF;
    kb := p.steps -> -1;
    IF kb ->> 'operation' IS DISTINCT FROM 'KnowledgeBase' THEN
        RAISE EXCEPTION 'pipeline "%" stores no embeddings (its last step is %)',
            p.name, coalesce(kb ->> 'operation', 'missing') USING ERRCODE = 'feature_not_supported';
    END IF;
    model_name := kb -> 'options' ->> 'model';
    SELECT m.owner INTO model_owner FROM aidb.model_registry m WHERE m.name = model_name;
    IF FOUND AND EXISTS (SELECT FROM aidb.model_credentials c WHERE c.model = model_name)
             AND NOT pg_has_role(p.owner_role, model_owner, 'MEMBER') THEN
        RAISE EXCEPTION 'pipeline "%" may not use the credentials of model "%"', p.name, model_name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('The pipeline belongs to role %s, the model to role %s.',
                                  p.owner_role, model_owner),
                  HINT = 'The pipeline''s owner must use a model of their own (or one without credentials).';
    END IF;
    -- The engine loads the credentials as this function's owner, sends them
    -- only to the model's URL (aidb.allowed_model_hosts is checked again)
    -- and redacts them from every error.
    RETURN aidb.encode_text(model_name, query);
END
$$;
REVOKE ALL ON FUNCTION aidb._embed_query(integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aidb._embed_query(integer, text) TO PUBLIC;   -- see above: it checks the caller
COMMENT ON FUNCTION aidb._embed_query(integer, text) IS
    'Internal: the embedding of a query with a pipeline''s model, for roles that may read its destination.';

-- The pgvector operator of a distance operator name: read from the engine's
-- one table of them (python/aidb/pipeline/distance.py), which also gives
-- step validation its names and the vector index its operator class.
CREATE FUNCTION aidb._distance_operator(name text) RETURNS text
    LANGUAGE plpython3u STABLE STRICT
    SET search_path = pg_catalog, pg_temp
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
return GD["aidb"].distance_operator(name)
$$;
COMMENT ON FUNCTION aidb._distance_operator(text) IS
    'The pgvector operator (<->, <=>, <#>) of a KnowledgeBase distance_operator (L2, Cosine, InnerProduct).';

-- Whether reading a pipeline's destination as the current role can run
-- anything its owner wrote: raises a clear error if it could, or if the
-- destination no longer has the shape retrieval reads. Reads the catalogs
-- only. Grants: EXECUTE to PUBLIC (retrieve_text runs as its caller).
CREATE FUNCTION aidb._check_retrieval_destination(p aidb.pipeline_registry) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    kind        "char";
    vector_type oid;
    col         record;
BEGIN
    SELECT c.relkind INTO kind FROM pg_class c WHERE c.oid = p.destination;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the destination table of pipeline "%" no longer exists', p.name
            USING ERRCODE = 'undefined_table', HINT = 'Delete the pipeline and create it again.';
    END IF;
    -- A view (or a foreign table) would run its owner's code, or fetch its
    -- rows, with the reader's rights.
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'the destination % of pipeline "%" is no longer a table but %',
            p.destination, p.name,
            CASE kind WHEN 'v' THEN 'a view' WHEN 'm' THEN 'a materialized view'
                      WHEN 'f' THEN 'a foreign table' ELSE format('a relation of relkind %s', kind) END
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'Retrieval reads only plain and partitioned tables, so that nothing '
                           'their owner defined runs with the rights of whoever searches.';
    END IF;
    IF EXISTS (SELECT FROM pg_partition_tree(p.destination) t JOIN pg_class c ON c.oid = t.relid
               WHERE c.relkind NOT IN ('r', 'p')) THEN
        RAISE EXCEPTION 'the destination % of pipeline "%" has a partition that is not a table',
            p.destination, p.name
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'Retrieval reads only plain and partitioned tables (no foreign partitions).';
    END IF;
    -- Policies are expressions of the table owner's, evaluated as the reader.
    IF row_security_active(p.destination) THEN
        RAISE EXCEPTION 'row-level security on the destination % of pipeline "%" applies to role %',
            p.destination, p.name, quote_ident(current_user)
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Its policies are its owner''s code and would run with your rights, '
                           'so retrieval does not read it.',
                  HINT = 'Its owner can disable row-level security on it, or grant BYPASSRLS.';
    END IF;
    SELECT t.oid INTO vector_type
    FROM pg_extension e JOIN pg_type t ON t.typnamespace = e.extnamespace AND t.typname = 'vector'
    WHERE e.extname = 'vector';
    -- The columns read, with the types aidb created them with: a column of
    -- another type could bring its owner's casts or operators along, and a
    -- virtual generated column's expression would be computed by the reader.
    FOR col IN
        SELECT w.name, w.type, a.atttypid, a.attgenerated
        FROM (VALUES ('source_key', NULL::oid), ('part_id', 'pg_catalog.int4'::regtype::oid),
                     ('value', 'pg_catalog.text'::regtype::oid), ('embedding', vector_type),
                     ('pipeline', 'pg_catalog.text'::regtype::oid)) w(name, type)
        LEFT JOIN pg_attribute a ON a.attrelid = p.destination AND a.attname = w.name
                                 AND a.attnum > 0 AND NOT a.attisdropped
        -- (pipeline: read by a shared destination's scope, part 26)
        WHERE w.name <> 'pipeline' OR aidb._destination_is_shared(p.destination)
    LOOP
        IF col.atttypid IS NULL THEN
            RAISE EXCEPTION 'the destination % of pipeline "%" has no column %',
                p.destination, p.name, quote_ident(col.name) USING ERRCODE = 'undefined_column';
        END IF;
        IF col.atttypid <> coalesce(col.type, col.atttypid) THEN
            RAISE EXCEPTION 'column % of the destination % of pipeline "%" is of type %, not %',
                quote_ident(col.name), p.destination, p.name,
                format_type(col.atttypid, NULL), format_type(col.type, NULL)
                USING ERRCODE = 'datatype_mismatch';
        END IF;
        IF col.attgenerated = 'v' THEN
            RAISE EXCEPTION 'column % of the destination % of pipeline "%" is a virtual generated column',
                quote_ident(col.name), p.destination, p.name
                USING ERRCODE = 'wrong_object_type',
                      DETAIL = 'Its expression would be computed with the rights of whoever searches.';
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION aidb._check_retrieval_destination(aidb.pipeline_registry) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aidb._check_retrieval_destination(aidb.pipeline_registry) TO PUBLIC;
COMMENT ON FUNCTION aidb._check_retrieval_destination(aidb.pipeline_registry) IS
    'Internal: refuses a destination that retrieval cannot read without running its owner''s code.';

-- Retrieval proper, with the caller's rights.
--
-- Returns min(topk, what the destination holds) rows whatever the index:
-- an HNSW scan stops after hnsw.ef_search rows (40 by default) and an IVFFlat
-- scan after ivfflat.probes lists, unless pgvector (0.8 and later) is told to
-- scan on. So, for this statement only:
--   * hnsw.ef_search is raised to the number of candidates wanted (pgvector's
--     limit is 1000), and hnsw/ivfflat.iterative_scan = relaxed_order when
--     they are off (their results are sorted again here);
--   * with deduplicate, candidates are fetched until topk distinct keys are
--     among them (the best part of each key among the nearest parts is its
--     best part overall);
--   * when the index still returns fewer candidates than asked for (older
--     pgvector, hnsw.max_scan_tuples reached, or simply fewer rows), the
--     answer comes from an exact scan instead, with index scans off.
-- Settings are changed with set_config(..., true) and put back before
-- returning; an error rolls them back with the (sub)transaction. Nothing
-- outlives the call.
CREATE FUNCTION aidb.retrieve_text(pipeline text, query text, topk integer DEFAULT 1,
                                   deduplicate boolean DEFAULT true)
    RETURNS TABLE (key text, part_id integer, value text, distance double precision)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    p            aidb.pipeline_registry;
    kb           jsonb;
    dest         regclass;
    dest_kind    "char";
    vector_nsp   name;
    op           text;
    source_rel   text;
    scope        text;       -- a shared destination: only this pipeline's rows (part 26)
    query_vector text;       -- the embedding, as text: plpgsql cannot name vector's schema here
    approximate  boolean;
    exact        boolean := false;
    iterative    boolean;
    wanted       bigint;     -- candidates to fetch; bigint so that topk * k cannot overflow
    max_wanted   bigint;
    fetched      bigint;
    found_rows   bigint;
    keys         text[];
    parts        integer[];
    vals         text[];
    dists        double precision[];
    saved        text[] := '{}';   -- name, value, name, value, ... of the settings changed
    setting      text;
    i            integer;
BEGIN
    -- Arguments, each named in its error.
    IF pipeline IS NULL THEN
        RAISE EXCEPTION 'pipeline must not be NULL' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass the name of a pipeline (SELECT name FROM aidb.pipelines).';
    END IF;
    IF query IS NULL THEN
        RAISE EXCEPTION 'query must not be NULL' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass the text to search for.';
    END IF;
    IF topk IS NULL OR topk < 1 THEN
        RAISE EXCEPTION 'topk must be at least 1, not %', coalesce(topk::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'topk is the number of results wanted, from 1 to 2147483647.';
    END IF;
    IF deduplicate IS NULL THEN
        RAISE EXCEPTION 'deduplicate must not be NULL' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'true: one row per key (its best part); false: every part counts.';
    END IF;

    SELECT * INTO p FROM aidb.pipeline_registry r WHERE r.name = pipeline;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pipeline "%" does not exist', pipeline
            USING ERRCODE = 'undefined_object', HINT = 'See SELECT name FROM aidb.pipelines.';
    END IF;
    kb := p.steps -> -1;
    IF kb ->> 'operation' IS DISTINCT FROM 'KnowledgeBase' THEN
        RAISE EXCEPTION 'pipeline "%" stores no embeddings (its last step is %)',
            pipeline, coalesce(kb ->> 'operation', 'missing') USING ERRCODE = 'feature_not_supported';
    END IF;
    dest := p.destination;
    IF NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = dest) THEN
        RAISE EXCEPTION 'the destination table of pipeline "%" no longer exists', pipeline
            USING ERRCODE = 'undefined_table',
                  HINT = 'Delete the pipeline and create it again.';
    END IF;
    -- Checked before the query is embedded, and named plainly.
    IF NOT (has_schema_privilege((SELECT c.relnamespace FROM pg_class c WHERE c.oid = dest), 'USAGE')
            AND has_table_privilege(dest, 'SELECT')) THEN
        RAISE EXCEPTION 'permission denied for the destination % of pipeline "%"', dest, pipeline
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Its owner can GRANT SELECT on it (and USAGE on its schema).';
    END IF;
    PERFORM aidb._check_retrieval_destination(p);

    -- The model call comes first, before any lock on the destination: a
    -- slow model must not hold up DDL on it (and the statements behind that).
    query_vector := aidb._embed_query(p.id, query)::text;

    -- From here on the destination cannot change under us (turning a table
    -- into a view needs ACCESS EXCLUSIVE), so the checks made now hold for
    -- the statement that reads it. ONLY: partitions are not locked, and need
    -- no privilege of the reader's; they cannot become views.
    EXECUTE format('LOCK TABLE ONLY %s IN ACCESS SHARE MODE', dest);
    PERFORM aidb._check_retrieval_destination(p);

    SELECT n.nspname INTO vector_nsp FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'vector';
    op := format('OPERATOR(%I.%s)', vector_nsp,
                 aidb._distance_operator(coalesce(kb -> 'options' ->> 'distance_operator', 'L2')));
    -- ONLY: inheritance children are not part of the destination (and are
    -- not checked); a partitioned table is read with its partitions.
    SELECT c.relkind INTO dest_kind FROM pg_class c WHERE c.oid = dest;
    source_rel := CASE dest_kind WHEN 'r' THEN 'ONLY ' ELSE '' END || format('%s', dest);
    scope := aidb._destination_scope(p);

    -- Is there an index that may answer approximately (HNSW, IVFFlat)? For
    -- access methods that do not say (pgvector's), the property is NULL.
    -- (pg_partition_tree lists nothing for a table that is not partitioned.)
    approximate := EXISTS (
        SELECT FROM pg_index i
        WHERE (i.indrelid = dest OR i.indrelid IN (SELECT t.relid FROM pg_partition_tree(dest) t))
          AND pg_index_column_has_property(i.indexrelid, 1, 'distance_orderable') IS NOT FALSE);
    -- pgvector before 0.8 has no iterative scans: an HNSW scan then never
    -- returns more than hnsw.ef_search rows, at most 1000.
    iterative := current_setting('hnsw.iterative_scan', true) IS NOT NULL;
    max_wanted := CASE WHEN iterative
                       THEN greatest(1000, coalesce(current_setting('hnsw.max_scan_tuples', true)::bigint, 20000))
                       ELSE 1000 END;

    -- Remember every setting this call may change, to put them back.
    FOREACH setting IN ARRAY ARRAY['row_security', 'enable_indexscan', 'jit', 'hnsw.ef_search',
                                   'hnsw.iterative_scan', 'ivfflat.iterative_scan'] LOOP
        IF current_setting(setting, true) IS NOT NULL THEN
            saved := saved || ARRAY[setting, current_setting(setting, true)];
        END IF;
    END LOOP;
    -- A policy added since the check above raises an error instead of running.
    PERFORM set_config('row_security', 'off', true);
    -- Compiling these statements costs more than it saves: the time goes
    -- into pgvector's distance functions, which JIT does not touch. (The
    -- planner's estimates for vector scans easily pass jit_above_cost.)
    PERFORM set_config('jit', 'off', true);
    IF current_setting('hnsw.iterative_scan', true) = 'off' THEN
        PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
    END IF;
    IF current_setting('ivfflat.iterative_scan', true) = 'off' THEN
        PERFORM set_config('ivfflat.iterative_scan', 'relaxed_order', true);
    END IF;

    -- Candidates: the nearest `wanted` parts, as the index finds them; each
    -- key's best part among them ranks 1. Returned as arrays, so that the
    -- decision to look further is made before anything is returned.
    wanted := CASE WHEN deduplicate THEN topk::bigint * 4 ELSE topk END;
    exact := NOT approximate OR wanted > max_wanted;
    WHILE NOT exact LOOP
        IF current_setting('hnsw.ef_search', true) IS NOT NULL THEN
            PERFORM set_config('hnsw.ef_search',
                               greatest(current_setting('hnsw.ef_search')::bigint, least(wanted, 1000))::text,
                               true);
        END IF;
        EXECUTE format($q$
            SELECT pg_catalog.count(*),
                   pg_catalog.count(*) FILTER (WHERE c.rank OPERATOR(pg_catalog.=) 1 OR NOT $4),
                   (pg_catalog.array_agg(c.k ORDER BY c.distance, c.k, c.part_id)
                        FILTER (WHERE c.rank OPERATOR(pg_catalog.=) 1 OR NOT $4))[1:$3],
                   (pg_catalog.array_agg(c.part_id ORDER BY c.distance, c.k, c.part_id)
                        FILTER (WHERE c.rank OPERATOR(pg_catalog.=) 1 OR NOT $4))[1:$3],
                   (pg_catalog.array_agg(c.value ORDER BY c.distance, c.k, c.part_id)
                        FILTER (WHERE c.rank OPERATOR(pg_catalog.=) 1 OR NOT $4))[1:$3],
                   (pg_catalog.array_agg(c.distance ORDER BY c.distance, c.k, c.part_id)
                        FILTER (WHERE c.rank OPERATOR(pg_catalog.=) 1 OR NOT $4))[1:$3]
            FROM (SELECT r.k, r.part_id, r.value, r.distance,
                         pg_catalog.row_number() OVER (PARTITION BY r.source_key
                                                       ORDER BY r.distance, r.part_id) AS rank
                  FROM (SELECT d.source_key, pg_catalog.concat(d.source_key) AS k, d.part_id, d.value,
                               d.embedding %1$s CAST($1 AS %2$I.vector) AS distance
                        FROM %3$s d
                        WHERE true%4$s
                        ORDER BY d.embedding %1$s CAST($1 AS %2$I.vector)
                        LIMIT $2) r) c $q$, op, vector_nsp, source_rel, scope)
        INTO fetched, found_rows, keys, parts, vals, dists
        USING query_vector, wanted, topk, deduplicate;
        -- DEBUG1 says how each search was answered (tests check it, and so
        -- can anyone tuning an index: SET client_min_messages = debug1).
        RAISE DEBUG 'retrieval from %: % of % candidates through the index', dest, fetched, wanted;
        EXIT WHEN found_rows >= topk;
        IF fetched < wanted THEN
            exact := true;      -- the index gave out (or the table holds no more)
        ELSE
            -- Deduplicating, and the candidates held too few keys: fetch more,
            -- in proportion to the keys found so far.
            wanted := greatest(wanted * 2, wanted * topk / greatest(found_rows, 1));
            exact := wanted > max_wanted;
        END IF;
    END LOOP;

    IF exact THEN
        -- Sequential scan and sort: exact, and complete.
        RAISE DEBUG 'retrieval from %: exact scan', dest;
        PERFORM set_config('enable_indexscan', 'off', true);
        IF deduplicate THEN
            RETURN QUERY EXECUTE format($q$
                SELECT b.k, b.part_id, b.value, b.distance
                FROM (SELECT DISTINCT ON (d.source_key)
                             pg_catalog.concat(d.source_key) AS k, d.part_id, d.value,
                             d.embedding %1$s CAST($1 AS %2$I.vector) AS distance
                      FROM %3$s d
                      WHERE true%4$s
                      ORDER BY d.source_key, distance, d.part_id) b
                ORDER BY b.distance, b.k, b.part_id
                LIMIT $2 $q$, op, vector_nsp, source_rel, scope)
            USING query_vector, topk;
        ELSE
            RETURN QUERY EXECUTE format($q$
                SELECT pg_catalog.concat(d.source_key), d.part_id, d.value,
                       d.embedding %1$s CAST($1 AS %2$I.vector) AS distance
                FROM %3$s d
                WHERE true%4$s
                ORDER BY distance, 1, d.part_id
                LIMIT $2 $q$, op, vector_nsp, source_rel, scope)
            USING query_vector, topk;
        END IF;
    ELSE
        RETURN QUERY SELECT u.k, u.part_id, u.value, u.distance
                     FROM ROWS FROM (pg_catalog.unnest(keys), pg_catalog.unnest(parts),
                                     pg_catalog.unnest(vals), pg_catalog.unnest(dists))
                          WITH ORDINALITY AS u(k, part_id, value, distance, n)
                     ORDER BY u.n;
    END IF;

    i := 1;
    WHILE i < coalesce(array_length(saved, 1), 0) LOOP
        PERFORM set_config(saved[i], saved[i + 1], true);
        i := i + 2;
    END LOOP;
END
$$;
COMMENT ON FUNCTION aidb.retrieve_text(text, text, integer, boolean) IS
    'The topk parts nearest to a query text, with the stored value (the embedded chunk); '
    'one row per key unless deduplicate => false.';

CREATE FUNCTION aidb.retrieve_key(pipeline text, query text, topk integer DEFAULT 1,
                                  deduplicate boolean DEFAULT true)
    RETURNS TABLE (key text, part_id integer, distance double precision)
    LANGUAGE sql VOLATILE
    AS $$ SELECT r.key, r.part_id, r.distance
          FROM aidb.retrieve_text(pipeline, query, topk, deduplicate) r $$;
COMMENT ON FUNCTION aidb.retrieve_key(text, text, integer, boolean) IS
    'The topk source keys nearest to a query text (one row per key unless deduplicate => false).';
