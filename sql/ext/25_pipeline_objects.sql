-- aidb extension script, part 25: the objects each pipeline has besides its
-- registry row (docs/architecture.md, "Data" and "Security model").
--
--   aidb._backlog_<id>   keys waiting to be processed, one per row (key) or,
--                        from a large INSERT, many in an array (keys); no
--                        unique key and no index: capture only appends,
--                        batches claim rows by ctid. Belongs to aidb; the
--                        pipeline owner may add and remove rows, never
--                        change the table.
--   aidb._state_<id>     one row per key: the hash of the content the
--                        destination was built from (NULL while a batch
--                        holds a new key). Its row lock is the key's lock;
--                        `lease` keeps it for a worker's batch between its
--                        claim and its write transactions.
--   aidb._source_<id>(keys), _drift_<id>(), _count_<id>(), _all_keys_<id>(),
--   aidb._destination_<id>(...), and for tables aidb._capture_<id>():
--                        every statement that touches what the pipeline's
--                        owner controls (the source, its source_filter, the
--                        destination and their triggers, views, functions),
--                        as SECURITY DEFINER functions OWNED BY THE PIPELINE
--                        OWNER with search_path = pg_catalog, pg_temp. Whoever
--                        runs a batch (a superuser's run_pipeline, a monitor
--                        reading aidb.pipem), the owner's SQL runs with the
--                        owner's rights only.
--
-- Everything here is built from the catalogs, with format()'s %I and %L:
-- callers pass a pipeline id, never SQL text.

-- Batches hand vectors to the destination as little-endian float4 bytes
-- (src/vectors.c): formatting and parsing them as text cost a third of a batch.
CREATE FUNCTION aidb._float4_vector(bytes bytea) RETURNS vector
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'aidb_float4_vector';
COMMENT ON FUNCTION aidb._float4_vector(bytea) IS
    'aidb internal: a vector from little-endian float4 bytes';

-- The fast path of table capture (src/capture.c): a statement-level AFTER
-- INSERT / UPDATE trigger that appends keys straight to the pipeline's
-- backlog, and hands key changes to aidb._capture_<id>(). Its arguments are
-- the pipeline id and columns, so only the installer below attaches it.
CREATE FUNCTION aidb._capture_keys() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'aidb_capture_keys';
COMMENT ON FUNCTION aidb._capture_keys() IS
    'aidb internal: the capture trigger of non-Live table pipelines (INSERT, UPDATE)';

CREATE FUNCTION aidb._key_type_facts(key_type regtype, OUT base_type regtype,
                                     OUT equality regoperator, OUT trusted boolean)
    LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'aidb_key_type_facts';
COMMENT ON FUNCTION aidb._key_type_facts(regtype) IS
    'aidb internal: base type, equality operator and trust of a key type (src/keys.c)';

-- How a pipeline's keys are stored and compared: the schema-qualified base
-- type, the source column's collation, and the equality operator with its
-- schema. Refuses key types aidb cannot compare safely (strict => false:
-- NULLs when the key column is gone).
CREATE FUNCTION aidb._pipeline_key(p aidb.pipeline_registry, strict boolean DEFAULT true,
    OUT key_type text, OUT key_collation text, OUT equals text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    column_type oid;
    column_collation oid;
    facts record;
    base pg_type;
BEGIN
    IF p.source_type = 'volume' THEN
        key_type := 'pg_catalog.text';
        key_collation := '';
        equals := 'OPERATOR(pg_catalog.=)';
        RETURN;
    END IF;
    SELECT a.atttypid, a.attcollation INTO column_type, column_collation
    FROM pg_attribute a
    WHERE a.attrelid = p.source AND a.attname = p.source_key_column AND a.attnum > 0
      AND NOT a.attisdropped;
    IF NOT FOUND AND NOT strict THEN
        RETURN;             -- NULLs: the loader of a broken pipeline (delete_pipeline must work)
    ELSIF NOT FOUND THEN
        RAISE EXCEPTION 'key column "%" of pipeline "%" is missing from its source %',
            p.source_key_column, p.name, p.source
            USING ERRCODE = 'undefined_column',
                  HINT = 'Rename the column back, or delete the pipeline and create it again.';
    END IF;
    facts := aidb._key_type_facts(column_type);
    SELECT * INTO base FROM pg_type t WHERE t.oid = facts.base_type;
    IF facts.equality IS NULL OR base.typcategory = 'A' OR base.typtype = 'c' THEN
        RAISE EXCEPTION 'key column "%" of source % has type %, which aidb cannot use as a key',
            p.source_key_column, p.source, format_type(column_type, NULL)
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'A key must be a scalar type that can be sorted, such as integer, '
                         'bigint, numeric, text, varchar or uuid (or a domain over one).';
    END IF;
    IF NOT facts.trusted THEN
        RAISE EXCEPTION 'key column "%" of source % has type %, whose comparison operators '
                        'do not belong to a superuser', p.source_key_column, p.source,
                        format_type(column_type, NULL)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'aidb compares keys with the rights of whoever runs a batch, so a key '
                         'must be of a built-in type or one installed by a superuser.';
    END IF;
    SELECT format('%I.%I', n.nspname, base.typname) INTO key_type
    FROM pg_namespace n WHERE n.oid = base.typnamespace;
    key_collation := coalesce((SELECT format(' COLLATE %I.%I', n.nspname, c.collname)
                               FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace
                               WHERE c.oid = column_collation AND c.oid <> base.typcollation), '');
    SELECT format('OPERATOR(%I.%s)', n.nspname, o.oprname) INTO equals
    FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
    WHERE o.oid = facts.equality;
END
$$;

-- Installs (or, after a mode change or a rename, re-installs) a pipeline's
-- objects, for a login role that may act as the pipeline's owner. SECURITY
-- DEFINER because ordinary roles cannot create anything in schema aidb;
-- `fresh` (create_pipeline) first drops objects a dropped extension or a
-- restore may have left under the same id.
CREATE FUNCTION aidb._install_pipeline_objects(pipeline_id integer, fresh boolean DEFAULT false)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET client_min_messages = warning      -- no "already exists, skipping" on updates
    AS $$
DECLARE
    p aidb.pipeline_registry;
BEGIN
    SELECT * INTO STRICT p FROM aidb.pipeline_registry r WHERE r.id = pipeline_id;
    -- Inside SECURITY DEFINER current_user is the extension owner; the login
    -- role is the one whose rights count (it could SET ROLE to the owner).
    IF NOT pg_has_role(session_user, p.owner_role, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied for pipeline "%"', p.name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF fresh THEN
        PERFORM aidb._drop_pipeline_objects_unchecked(p.id);
    END IF;
    PERFORM aidb._build_pipeline_objects(p);
END
$$;

-- The work of the installer, for callers that checked the right already
-- (the installer, and the event trigger that follows a renamed source).
CREATE FUNCTION aidb._build_pipeline_objects(p aidb.pipeline_registry) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET client_min_messages = warning
    AS $$
DECLARE
    k record := aidb._pipeline_key(p);
BEGIN
    IF p.source_type = 'table' THEN
        IF NOT has_table_privilege(p.owner_role, p.source, 'TRIGGER') THEN
            RAISE EXCEPTION 'permission denied: role % lacks TRIGGER on source %',
                pg_get_userbyid(p.owner_role), p.source
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    PERFORM aidb._create_bookkeeping(p, k.key_type, k.key_collation);
    IF p.source_type <> 'volume' THEN
        PERFORM aidb._create_source_functions(p, k.key_type, k.equals);
    END IF;
    PERFORM aidb._create_destination_function(p, k.key_type, k.equals);
    IF p.source_type = 'table' THEN
        PERFORM aidb._define_owner_function(p, 'capture', '', 'trigger', 'plpgsql',
                                            aidb._capture_body(p, k.key_type, k.equals));
        PERFORM aidb._create_capture_triggers(p);
    END IF;
END
$$;

-- Backlog and state: aidb's tables. The owner may append keys (its capture
-- function does) and clear them (TRUNCATE), but not alter the tables, whose
-- shape the C capture trigger relies on.
CREATE FUNCTION aidb._create_bookkeeping(p aidb.pipeline_registry, key_type text,
                                         key_collation text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    backlog text := format('aidb.%I', '_backlog_' || p.id);
    state   text := format('aidb.%I', '_state_' || p.id);
    owner   text := quote_ident(pg_get_userbyid(p.owner_role));
BEGIN
    -- A row holds one key, or (key NULL) the array `keys` of a statement's
    -- capture of many (src/capture.c), which a claim splits into rows of one.
    EXECUTE format('CREATE TABLE IF NOT EXISTS %s (key %s%s, '
                   'queued_at timestamptz NOT NULL DEFAULT now(), keys %s[]%s)',
                   backlog, key_type, key_collation, key_type, key_collation);
    -- lease: the token of the worker connection whose batch holds the key
    -- between its claim and its write (python/aidb/pipeline/leases.py).
    EXECUTE format('CREATE TABLE IF NOT EXISTS %s (key %s%s PRIMARY KEY, hash uuid, '
                   'updated_at timestamptz NOT NULL DEFAULT now(), lease int8)',
                   state, key_type, key_collation);
    -- Tables of aidb 0.1.0 belonged to the pipeline owner, had a key index on
    -- the backlog, no NULL hashes and no leases.
    EXECUTE format('ALTER TABLE %s OWNER TO %I', backlog, current_user);
    EXECUTE format('ALTER TABLE %s OWNER TO %I', state, current_user);
    EXECUTE format('DROP INDEX IF EXISTS aidb.%I', '_backlog_' || p.id || '_key');
    EXECUTE format('ALTER TABLE %s ALTER COLUMN key DROP NOT NULL', backlog);
    EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS keys %s[]%s',
                   backlog, key_type, key_collation);
    -- Out of line, uncompressed: pglz took 15 % of a bulk INSERT's time on
    -- the sets of keys its capture writes, to save little (keys compress
    -- poorly), and a worker reads each set once.
    EXECUTE format('ALTER TABLE %s ALTER COLUMN keys SET STORAGE EXTERNAL', backlog);
    EXECUTE format('ALTER TABLE %s ALTER COLUMN hash DROP NOT NULL', state);
    EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS lease int8', state);
    EXECUTE format('REVOKE ALL ON %s, %s FROM PUBLIC', backlog, state);
    -- UPDATE: what SELECT ... FOR UPDATE (a claim) requires.
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON %s TO %s', backlog, owner);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON %s TO %s', state, owner);
    -- What the owner's capture functions and background worker call as the
    -- owner: aidb_users have it (sql/ext/99_grants.sql); an owner outside
    -- that role gets it here.
    IF NOT pg_has_role(p.owner_role, 'aidb_users', 'USAGE') THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION aidb._wake_pipeline, aidb._process_live, '
                       'aidb._process_live_keys, aidb._run_batch, aidb._record_worker_error '
                       'TO %s', owner);
    END IF;
    PERFORM aidb._depend_on_extension('pg_class'::regclass, to_regclass(backlog));
    PERFORM aidb._depend_on_extension('pg_class'::regclass, to_regclass(state));
END
$$;

-- One of the owner's functions: SECURITY DEFINER, owned by the pipeline
-- owner, fixed search_path, executable by the owner (and PUBLIC when asked:
-- the count, which checks the caller's right to the source itself).
CREATE FUNCTION aidb._define_owner_function(p aidb.pipeline_registry, kind text,
    arguments text, returns text, language text, body text, public_execute boolean DEFAULT false)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    fn text := format('aidb.%I(%s)', '_' || kind || '_' || p.id, arguments);
BEGIN
    EXECUTE format('CREATE OR REPLACE FUNCTION %s RETURNS %s LANGUAGE %s SECURITY DEFINER '
                   'SET search_path = pg_catalog, pg_temp AS %L', fn, returns, language, body);
    EXECUTE format('ALTER FUNCTION %s OWNER TO %I', fn, pg_get_userbyid(p.owner_role));
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
    IF public_execute THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', fn);
    END IF;
    PERFORM aidb._depend_on_extension('pg_proc'::regclass,
        (SELECT f.oid FROM pg_proc f WHERE f.pronamespace = 'aidb'::regnamespace
                                       AND f.proname = '_' || kind || '_' || p.id));
END
$$;

-- The source's schema-qualified name, and its filter as a parenthesised
-- expression (the newline ends a trailing -- comment inside it).
CREATE FUNCTION aidb._source_sql(p aidb.pipeline_registry, OUT source text, OUT filter text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT format('%I.%I', n.nspname, c.relname),
           '(' || coalesce(p.source_filter, 'true') || E'\n)'
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = p.source
$$;

-- What batches, reconcile, monitoring and creation read from a table or view.
CREATE FUNCTION aidb._create_source_functions(p aidb.pipeline_registry, key_type text,
                                              equals text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    src record := aidb._source_sql(p);
    dest text := p.destination::text;
BEGIN
    -- The current content of some keys (a missing or filtered-out row: none).
    PERFORM aidb._define_owner_function(p, 'source', format('keys %s[]', key_type),
        format('TABLE (key %s, data pg_catalog.text)', key_type), 'sql',
        format('SELECT s.%1$I::%2$s, s.%3$I::pg_catalog.text FROM %4$s AS s '
               'WHERE s.%1$I %5$s ANY ($1) AND %6$s',
               p.source_key_column, key_type, p.source_data_column, src.source, equals, src.filter));
    -- Every key's content hash, for reconcile_pipeline and view sources.
    PERFORM aidb._define_owner_function(p, 'drift', '',
        format('TABLE (key %s, hash pg_catalog.uuid)', key_type), 'sql',
        format('SELECT s.%1$I::%2$s, pg_catalog.md5(s.%3$I::pg_catalog.text)::pg_catalog.uuid '
               'FROM %4$s AS s WHERE s.%1$I IS NOT NULL AND s.%3$I IS NOT NULL AND %5$s',
               p.source_key_column, key_type, p.source_data_column, src.source, src.filter));
    -- Counts for aidb.pipem, for callers who may read the source themselves.
    PERFORM aidb._define_owner_function(p, 'count', '',
        'TABLE (records pg_catalog.int8, null_keys pg_catalog.int8)', 'sql',
        format('SELECT pg_catalog.count(s.%1$I), pg_catalog.count(*) - pg_catalog.count(s.%1$I) '
               'FROM %2$s AS s WHERE pg_catalog.has_table_privilege(SESSION_USER, %3$s::pg_catalog.oid, '
               '''SELECT'') AND %4$s', p.source_key_column, src.source, p.source::oid, src.filter),
        public_execute => true);
    -- At creation: every key of the source and of an existing destination.
    PERFORM aidb._define_owner_function(p, 'all_keys', '', format('SETOF %s', key_type), 'sql',
        format('SELECT s.%1$I::%2$s FROM %3$s AS s WHERE s.%1$I IS NOT NULL '
               'UNION SELECT d.source_key::%2$s FROM %4$s AS d WHERE true%5$s',
               p.source_key_column, key_type, src.source, dest, aidb._destination_scope(p)));
END
$$;

-- Writes a batch's results: deletes the rows of `removed` keys, inserts the
-- new parts, and returns the keys whose rows another transaction holds
-- (say, one that deleted the source row and is still open): they are handed
-- back to the batch rather than waited for.
CREATE FUNCTION aidb._create_destination_function(p aidb.pipeline_registry, key_type text,
                                                  equals text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    dest text := p.destination::text;
    with_vectors boolean := EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = p.destination
                                    AND a.attname = 'embedding' AND NOT a.attisdropped);
    -- A shared destination (part 26): rows scoped by pipeline, keys maybe as text.
    shared boolean := aidb._destination_is_shared(p.destination);
    as_text boolean := aidb._destination_keys_as_text(p, key_type);
    dest_op text := CASE WHEN as_text THEN 'OPERATOR(pg_catalog.=)' ELSE equals END;
BEGIN
    PERFORM aidb._define_owner_function(p, 'destination',
        format('removed %1$s[], keys %1$s[], part_ids pg_catalog.int4[], vals pg_catalog.text[], '
               'vectors pg_catalog.bytea[]', key_type), format('%s[]', key_type), 'plpgsql',
        format($body$
DECLARE
    locked %6$s[];
    busy %6$s[];
BEGIN%10$s
    locked := ARRAY(SELECT d.source_key FROM %2$s AS d WHERE %7$s FOR UPDATE SKIP LOCKED);
    busy := ARRAY(SELECT DISTINCT d.source_key FROM %2$s AS d
                  WHERE %7$s AND NOT d.source_key %3$s ANY (locked));
    DELETE FROM %2$s AS d WHERE d.source_key %3$s ANY (locked)%8$s;
    INSERT INTO %2$s (%9$ssource_key, part_id, value%4$s)
    SELECT %11$su.k%12$s, u.i, u.v%5$s
    FROM ROWS FROM (pg_catalog.unnest(keys), pg_catalog.unnest(part_ids),
                    pg_catalog.unnest(vals), pg_catalog.unnest(vectors)) AS u(k, i, v, e)
    WHERE NOT u.k%12$s %3$s ANY (busy);
    RETURN busy::%1$s[];
END
$body$, key_type, dest, dest_op,
           CASE WHEN with_vectors THEN ', embedding' ELSE '' END,
           CASE WHEN with_vectors THEN ', aidb._float4_vector(u.e)' ELSE '' END,
           aidb._destination_key_type(p, key_type),
           aidb._destination_key_match(p, key_type, equals, 'removed', true),
           aidb._destination_scope(p),
           CASE WHEN shared THEN 'pipeline, ' ELSE '' END,
           -- removed NULL: delete_pipeline on a shared destination removes
           -- the pipeline's rows (only there: elsewhere it would be all rows).
           CASE WHEN shared THEN format(E'\n    IF removed IS NULL THEN\n' ||
                                        E'        DELETE FROM %s AS d WHERE true%s;\n' ||
                                        E'        RETURN \'{}\';\n    END IF;',
                                        dest, aidb._destination_scope(p))
                ELSE '' END,
           CASE WHEN shared THEN format('%L, ', p.name) ELSE '' END,
           CASE WHEN as_text THEN '::pg_catalog.text' ELSE '' END));
END
$$;

-- The body of aidb._capture_<id>(), the capture trigger function of a table
-- pipeline. INSERT and UPDATE of non-Live pipelines go through the C fast
-- path (src/capture.c), which calls this only for an UPDATE that changes a
-- key. What it does:
--   INSERT    enqueue the new keys
--   UPDATE    enqueue keys whose data changed, new keys of a key change, and
--             the old keys of a key change (after deleting their rows at once)
--   DELETE    delete the keys' destination rows at once, and enqueue them
--   TRUNCATE  empty backlog, state and destination (in that order: a batch
--             holds backlog and state before it writes the destination);
--             of one partition of the source: look at every key again
-- NULL keys are skipped (a UNIQUE column allows them; they have no
-- destination rows). With a source_filter, any change of an updated row
-- enqueues its key (the filter may read any column); a batch skips keys whose
-- content hash did not change. A Live pipeline hands the keys to the engine
-- inside the writing transaction instead.
CREATE FUNCTION aidb._capture_body(p aidb.pipeline_registry, key_type text, equals text)
    RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    key text := quote_ident(p.source_key_column);
    dest text := p.destination::text;
    backlog text := format('aidb.%I', '_backlog_' || p.id);
    state text := format('aidb.%I', '_state_' || p.id);
    changed text := CASE WHEN p.source_filter IS NULL
        THEN format('o.%1$I::pg_catalog.text IS DISTINCT FROM n.%1$I::pg_catalog.text',
                    p.source_data_column)
        ELSE 'pg_catalog.row_to_json(o.*)::pg_catalog.text IS DISTINCT FROM '
             'pg_catalog.row_to_json(n.*)::pg_catalog.text' END;
    gone text := format('(SELECT o.%1$s AS k FROM aidb_old o WHERE o.%1$s IS NOT NULL AND NOT EXISTS '
                        '(SELECT FROM aidb_new n WHERE n.%1$s %2$s o.%1$s))', key, equals);
BEGIN
    RETURN format($body$
BEGIN
    IF TG_OP = 'INSERT' THEN
        %1$s
    ELSIF TG_OP = 'UPDATE' THEN
        DELETE FROM %2$s AS d USING %3$s AS g WHERE %4$s;
        %5$s
    ELSIF TG_OP = 'DELETE' THEN
        DELETE FROM %2$s AS d USING aidb_old AS o WHERE %6$s;
        %7$s
    ELSIF TG_OP = 'TRUNCATE' AND TG_RELID <> %10$s THEN
        %11$s
    ELSIF TG_OP = 'TRUNCATE' THEN
        %12$s
    END IF;
    RETURN NULL;
END
$body$,
        aidb._capture_enqueue(p, key_type, format('SELECT n.%1$s FROM aidb_new n WHERE n.%1$s IS NOT NULL', key)),
        dest, gone, aidb._destination_key_match(p, key_type, equals, 'g.k', false),
        aidb._capture_enqueue(p, key_type, format(
            'SELECT n.%1$s FROM aidb_new n LEFT JOIN aidb_old o ON o.%1$s %2$s n.%1$s '
            'WHERE n.%1$s IS NOT NULL AND (o.%1$s IS NULL OR %3$s) UNION ALL SELECT g.k FROM %4$s AS g',
            key, equals, changed, gone)),
        aidb._destination_key_match(p, key_type, equals, 'o.' || key, false),
        aidb._capture_enqueue(p, key_type, format('SELECT o.%1$s FROM aidb_old o WHERE o.%1$s IS NOT NULL', key)),
        backlog, state, p.source::oid,
        -- TRUNCATE of one partition: every known key is looked at again
        -- (those that were in it lose their rows).
        aidb._capture_enqueue(p, key_type, format('SELECT st.key FROM %s AS st', state)),
        -- TRUNCATE of the source: a shared destination loses only the
        -- pipeline's rows (a DELETE: TRUNCATE would take the others' too).
        CASE WHEN aidb._destination_is_shared(p.destination)
             THEN format('TRUNCATE %s, %s; DELETE FROM %s AS d WHERE true%s;', backlog, state, dest,
                         aidb._destination_scope(p))
             ELSE format('TRUNCATE %s, %s, %s;', backlog, state, dest) END);
END
$$;

-- How the capture function hands keys on: to the backlog (waking the
-- pipeline's worker at commit), or, Live, to the engine right now.
CREATE FUNCTION aidb._capture_enqueue(p aidb.pipeline_registry, key_type text, keys text)
    RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN p.auto_processing = 'Live'
        THEN format('PERFORM aidb._process_live(%s, ARRAY(SELECT live.k::%s FROM (%s) AS live(k)));',
                    p.id, key_type, keys)
        ELSE format('INSERT INTO aidb.%I (key) %s; PERFORM aidb._wake_pipeline(%s);',
                    '_backlog_' || p.id, keys, p.id) END
$$;

-- The capture triggers of a table pipeline, on its source: INSERT and UPDATE
-- through the C fast path, unless the pipeline is Live (then the engine runs
-- in the trigger, through the capture function); DELETE and TRUNCATE through
-- the capture function. The fast path's INSERT is a row trigger that holds
-- each row's key and a statement trigger that writes them: no transition
-- table of whole rows (src/pending_keys.c says why). A source_filter may
-- read any column, so the fast path then compares whole rows (data column '').
-- A partitioned source gets the statement triggers on every partition too:
-- they fire only for the table a statement names, and writes may name a
-- partition; row triggers go on the leaf partitions alone (a row trigger on
-- the partitioned table would be cloned onto each). New partitions get
-- theirs from part 70's event trigger.
CREATE FUNCTION aidb._create_capture_triggers(p aidb.pipeline_registry)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    capture text := format('aidb.%I()', '_capture_' || p.id);
    fast text := format('aidb._capture_keys(%L, %L, %L)', p.id, p.source_key_column,
                        CASE WHEN p.source_filter IS NULL THEN p.source_data_column ELSE '' END);
    live boolean := p.auto_processing = 'Live';
    event record;
    target record;
    trigger_name text;
    call text;
BEGIN
    FOR target IN SELECT c.oid::regclass AS relation, c.relkind <> 'p' AS leaf
                  FROM pg_class c
                  WHERE c.oid IN (SELECT t.relid FROM pg_partition_tree(p.source) t
                                  UNION SELECT p.source)    -- (not partitioned: no tree)
    LOOP
        FOR event IN
            SELECT * FROM (VALUES
                ('insert',     'INSERT',   'STATEMENT', 'REFERENCING NEW TABLE AS aidb_new'),
                ('insert_row', 'INSERT',   'ROW',       ''),
                ('update',     'UPDATE',   'STATEMENT', 'REFERENCING OLD TABLE AS aidb_old NEW TABLE AS aidb_new'),
                ('delete',     'DELETE',   'STATEMENT', 'REFERENCING OLD TABLE AS aidb_old'),
                ('truncate',   'TRUNCATE', 'STATEMENT', '')
            ) AS e(name, verb, level, referencing)
        LOOP
            trigger_name := 'aidb_' || p.id || '_' || event.name;
            IF event.name = 'insert_row' AND (live OR NOT target.leaf) THEN
                IF EXISTS (SELECT FROM pg_trigger t
                           WHERE t.tgrelid = target.relation AND t.tgname = trigger_name) THEN
                    EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, target.relation);
                END IF;
                CONTINUE;
            END IF;
            call := CASE WHEN event.verb IN ('INSERT', 'UPDATE') AND NOT live THEN fast
                         ELSE capture END;
            IF event.name = 'insert' AND NOT live THEN
                event.referencing := '';        -- the row triggers hold the keys
            END IF;
            -- A trigger that is already right is left alone: re-creating it
            -- would re-enable one the table's owner disabled (a bulk load).
            CONTINUE WHEN EXISTS (
                SELECT FROM pg_trigger t
                WHERE t.tgrelid = target.relation AND t.tgname = trigger_name
                  AND (t.tgtype & 1 = 1) = (event.level = 'ROW')
                  AND (t.tgnewtable IS NOT NULL) = (event.referencing LIKE '%NEW TABLE%')
                  AND (t.tgoldtable IS NOT NULL) = (event.referencing LIKE '%OLD TABLE%')
                  AND pg_get_triggerdef(t.oid) LIKE '%EXECUTE FUNCTION ' || replace(call, '%', '\%'));
            EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s %s FOR EACH %s '
                           'EXECUTE FUNCTION %s', trigger_name, event.verb, target.relation,
                           event.referencing, event.level, call);
        END LOOP;
    END LOOP;
END
$$;

-- Gives new keys their state row (a NULL hash) so that a batch can lock it,
-- without waiting more than a moment for another transaction that is adding
-- the same key: two long run_pipeline transactions that each added keys the
-- other wants would otherwise deadlock. Keys it could not add are simply not
-- locked by this batch. Runs with the caller's rights.
CREATE FUNCTION aidb._add_state_rows(state regclass, keys anyarray) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET lock_timeout = '20ms'
    AS $$
BEGIN
    BEGIN
        EXECUTE format('INSERT INTO %s (key) SELECT u.k FROM unnest($1) AS u(k) ORDER BY 1 '
                       'ON CONFLICT DO NOTHING', state) USING keys;
    EXCEPTION WHEN lock_not_available THEN
        FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
            BEGIN
                EXECUTE format('INSERT INTO %s (key) VALUES ($1[%s]) ON CONFLICT DO NOTHING',
                               state, i) USING keys;
            EXCEPTION WHEN lock_not_available THEN
                NULL;       -- being added by another transaction: not ours this time
            END;
        END LOOP;
    END;
END
$$;

CREATE FUNCTION aidb._drop_pipeline_objects(pipeline_id integer) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF EXISTS (SELECT FROM aidb.pipeline_registry r
               WHERE r.id = pipeline_id AND NOT pg_has_role(session_user, r.owner_role, 'MEMBER')) THEN
        RAISE EXCEPTION 'permission denied for pipeline %', pipeline_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM aidb._drop_pipeline_objects_unchecked(pipeline_id);
END
$$;

-- Triggers, functions and tables of a pipeline id, whatever is left of them.
CREATE FUNCTION aidb._drop_pipeline_objects_unchecked(pipeline_id integer) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET client_min_messages = warning
    AS $$
DECLARE
    object text;
BEGIN
    -- The capture triggers lock the source: source before backlog, the lock
    -- order of TRUNCATE's capture. Only the table's owner may DROP TRIGGER
    -- (the pipeline's owner may follow a table it does not own), hence here.
    FOR object IN
        SELECT format('DROP TRIGGER %I ON %s', t.tgname, t.tgrelid::regclass)
        FROM pg_trigger t JOIN pg_proc f ON f.oid = t.tgfoid
        WHERE t.tgname IN (SELECT 'aidb_' || pipeline_id || '_' || e
                           FROM unnest(ARRAY['insert', 'insert_row', 'update', 'delete',
                                             'truncate']) e)
          AND f.pronamespace = 'aidb'::regnamespace
          AND f.proname IN ('_capture_keys', '_capture_' || pipeline_id)
    LOOP
        EXECUTE object;
    END LOOP;
    FOR object IN
        SELECT f.oid::regprocedure::text FROM pg_proc f
        WHERE f.pronamespace = 'aidb'::regnamespace
          AND f.proname IN (SELECT '_' || kind || '_' || pipeline_id FROM unnest(ARRAY[
              'capture', 'source', 'drift', 'count', 'all_keys', 'destination']) kind)
    LOOP
        EXECUTE format('DROP FUNCTION %s CASCADE', object);
    END LOOP;
    EXECUTE format('DROP TABLE IF EXISTS aidb.%I, aidb.%I',
                   '_backlog_' || pipeline_id, '_state_' || pipeline_id);
    -- The functions an owner outside aidb_users was granted for its last
    -- pipeline (_create_bookkeeping) go with it: no privilege outlives its
    -- reason, and the role can then be dropped.
    FOR object IN
        SELECT quote_ident(pg_get_userbyid(r.owner_role)) FROM aidb.pipeline_registry r
        WHERE r.id = pipeline_id AND NOT pg_has_role(r.owner_role, 'aidb_users', 'USAGE')
          AND NOT EXISTS (SELECT FROM aidb.pipeline_registry o
                          WHERE o.owner_role = r.owner_role AND o.id <> r.id)
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION aidb._wake_pipeline, aidb._process_live, '
                       'aidb._process_live_keys, aidb._run_batch, aidb._record_worker_error '
                       'FROM %s', object);
    END LOOP;
END
$$;
