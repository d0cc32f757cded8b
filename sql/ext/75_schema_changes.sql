-- aidb extension script, part 75: event triggers that keep pipelines in step
-- with schema changes of their sources and destinations (docs/architecture.md,
-- "Schema changes").
--
--   renamed key or data column, table or schema   followed: the registry and
--                                                 every per-pipeline object
--                                                 are rebuilt with the new names
--   key column's type changed                     refused, naming the pipeline
--   key or data column dropped                    refused, naming the pipeline
--   a column the source_filter reads renamed,     refused, naming the pipeline
--   dropped or changed so the filter no longer    and its filter
--   parses
--   column pipeline of a shared destination       refused, naming the pipelines
--   dropped or retyped
--   new partition of a partitioned source         gets the capture triggers
--   source or destination dropped                 the pipeline is Disabled and
--                                                 blocked with an error that
--                                                 says what happened
--
-- A rename loses the old name before ddl_command_end can see it, so
-- ddl_command_start notes the attribute numbers of every pipeline's key and
-- data columns (in a transaction-local setting) and ddl_command_end finds
-- the new names by number. The functions are SECURITY DEFINER: the role
-- that renames a column may not own the pipelines that read it.

-- ddl_command_start: where each pipeline's columns are, by number.
CREATE FUNCTION aidb._note_source_columns() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF to_regclass('aidb.pipeline_registry') IS NULL THEN
        RETURN;                 -- the extension is being dropped
    END IF;
    PERFORM set_config('aidb_ddl.source_columns', coalesce((
        SELECT jsonb_object_agg(p.id, jsonb_build_array(k.attnum, d.attnum))::text
        FROM aidb.pipeline_registry p
        JOIN pg_attribute k ON k.attrelid = p.source AND k.attname = p.source_key_column
        JOIN pg_attribute d ON d.attrelid = p.source AND d.attname = p.source_data_column
        WHERE p.source_type <> 'volume'), '{}'), true);
END
$$;

-- ddl_command_end: follow renames, refuse what would break a pipeline,
-- capture new partitions.
CREATE FUNCTION aidb._follow_source_changes() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    noted jsonb := coalesce(nullif(current_setting('aidb_ddl.source_columns', true), ''), '{}');
    touched oid[];
    p aidb.pipeline_registry;
    renamed aidb.pipeline_registry;
BEGIN
    IF to_regclass('aidb.pipeline_registry') IS NULL THEN
        RETURN;
    END IF;
    touched := ARRAY(SELECT c.objid FROM pg_event_trigger_ddl_commands() c);
    FOR p IN
        SELECT r.* FROM aidb.pipeline_registry r
        JOIN pg_class s ON s.oid = r.source
        LEFT JOIN pg_class d ON d.oid = r.destination
        WHERE r.source = ANY (touched) OR r.destination = ANY (touched)
           OR s.relnamespace = ANY (touched) OR d.relnamespace = ANY (touched)
           OR EXISTS (SELECT FROM unnest(touched) t
                      JOIN pg_partition_ancestors(t) a ON a.relid = r.source AND t <> r.source)
        ORDER BY r.id
    LOOP
        renamed := aidb._follow_renamed_columns(p, noted -> p.id::text);
        PERFORM aidb._check_key_type_unchanged(renamed);
        PERFORM aidb._check_filter_still_parses(renamed);
        PERFORM aidb._check_shared_destination_kept(renamed);
        -- Only what a change calls for: rebuilding on every ALTER TABLE would
        -- re-enable capture triggers a table owner disabled, and would race
        -- pg_restore, which creates the same triggers itself a moment later.
        IF renamed IS DISTINCT FROM p OR aidb._built_names_changed(p) THEN
            PERFORM aidb._build_pipeline_objects(renamed);
        ELSIF aidb._partition_lacks_capture(p) THEN
            PERFORM aidb._create_capture_triggers(p);
        END IF;
    END LOOP;
END
$$;

-- Whether the source or destination is no longer called what the owner's
-- functions were built with (a renamed table or schema), or the destination
-- became shared (or stopped being: a column pipeline added or dropped, part
-- 26) since its write function was built.
CREATE FUNCTION aidb._built_names_changed(p aidb.pipeline_registry) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT NOT EXISTS (SELECT FROM pg_proc f
                       WHERE f.pronamespace = 'aidb'::regnamespace
                         AND f.proname = '_destination_' || p.id
                         AND position(p.destination::text IN f.prosrc) > 0
                         AND (position('d.pipeline OPERATOR' IN f.prosrc) > 0)
                             = aidb._destination_is_shared(p.destination))
        OR (p.source_type <> 'volume'
            AND NOT EXISTS (SELECT FROM pg_proc f
                            WHERE f.pronamespace = 'aidb'::regnamespace
                              AND f.proname = '_source_' || p.id
                              AND position((aidb._source_sql(p)).source IN f.prosrc) > 0))
$$;

-- Whether a partition of a captured table source lacks the capture triggers
-- (created or attached after the pipeline).
CREATE FUNCTION aidb._partition_lacks_capture(p aidb.pipeline_registry) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT p.source_type = 'table'
       AND EXISTS (SELECT FROM pg_trigger t
                   WHERE t.tgrelid = p.source AND t.tgname = 'aidb_' || p.id || '_insert')
       AND EXISTS (SELECT FROM pg_partition_tree(p.source) part
                   WHERE NOT EXISTS (SELECT FROM pg_trigger t
                                     WHERE t.tgrelid = part.relid
                                       AND t.tgname = 'aidb_' || p.id || '_insert'))
$$;

-- The pipeline with its key and data column names as they are now, updated
-- in the registry; refuses a change that dropped one of them.
CREATE FUNCTION aidb._follow_renamed_columns(p aidb.pipeline_registry, attnums jsonb)
    RETURNS aidb.pipeline_registry
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    key_name  name := aidb._column_now(p, p.source_key_column, (attnums ->> 0)::int2, 'key');
    data_name name := aidb._column_now(p, p.source_data_column, (attnums ->> 1)::int2, 'data');
BEGIN
    IF key_name <> p.source_key_column OR data_name <> p.source_data_column THEN
        UPDATE aidb.pipeline_registry r
        SET source_key_column = key_name, source_data_column = data_name
        WHERE r.id = p.id
        RETURNING * INTO p;
    END IF;
    RETURN p;
END
$$;

-- The current name of a pipeline's column (noted by number before the command).
CREATE FUNCTION aidb._column_now(p aidb.pipeline_registry, column_name text, attnum int2,
                                 role text) RETURNS name
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    found name;
BEGIN
    SELECT a.attname INTO found FROM pg_attribute a
    WHERE a.attrelid = p.source AND a.attname = column_name AND NOT a.attisdropped;
    IF found IS NULL THEN
        SELECT a.attname INTO found FROM pg_attribute a
        WHERE a.attrelid = p.source AND a.attnum = _column_now.attnum AND NOT a.attisdropped;
    END IF;
    IF found IS NULL THEN
        RAISE EXCEPTION 'column "%" of % is the % column of pipeline "%"', column_name, p.source,
            role, p.name
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = format('Delete the pipeline first: SELECT aidb.delete_pipeline(%L);', p.name);
    END IF;
    RETURN found;
END
$$;

-- A key's type fixes the backlog's, the state's and the destination's: a
-- change is refused rather than guessed at (the old keys could not be mapped
-- to the new ones).
CREATE FUNCTION aidb._check_key_type_unchanged(p aidb.pipeline_registry) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    stored text := (SELECT format('%I.%I', n.nspname, t.typname)
                    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                    JOIN pg_namespace n ON n.oid = t.typnamespace
                    WHERE a.attrelid = to_regclass(format('aidb.%I', '_state_' || p.id))
                      AND a.attname = 'key');
    now_type text := (aidb._pipeline_key(p, strict => false)).key_type;
BEGIN
    IF stored IS NOT NULL AND now_type IS DISTINCT FROM stored THEN
        RAISE EXCEPTION 'column "%" of % is the key of pipeline "%": its type cannot change '
                        'while the pipeline exists', p.source_key_column, p.source, p.name
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = format('The pipeline keeps keys of type %s.', stored),
                  HINT = format('Delete the pipeline, change the column, and create the pipeline '
                                'again: SELECT aidb.delete_pipeline(%L);', p.name);
    END IF;
END
$$;

-- A source_filter is text: PostgreSQL records no dependency of it on the
-- columns it reads, so a rename or drop of one would leave every later
-- batch failing with "column does not exist". After the change, the filter
-- is parsed again (PREPARE: parse analysis only, never planned, so nothing
-- of the owner's runs here with the definer's rights) and the change is
-- refused if it no longer parses.
CREATE FUNCTION aidb._check_filter_still_parses(p aidb.pipeline_registry) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp    -- the path the filter runs under
    AS $$
DECLARE
    src record;
    statement text := format('aidb_filter_check_%s', p.id);
BEGIN
    IF p.source_filter IS NULL OR p.source_type = 'volume' THEN
        RETURN;
    END IF;
    src := aidb._source_sql(p);
    BEGIN
        EXECUTE format('PREPARE %I AS SELECT FROM %s AS s WHERE %s', statement, src.source,
                       src.filter);
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'this change breaks the source_filter of pipeline "%": %', p.name, SQLERRM
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = format('The filter reads: %s', p.source_filter),
                  HINT = format('Leave the columns the filter reads as they are, or delete the '
                                'pipeline first and create it again with a new filter: '
                                'SELECT aidb.delete_pipeline(%L);', p.name);
    END;
    EXECUTE format('DEALLOCATE %I', statement);
END
$$;

-- sql_drop: a dropped source or destination blocks its pipeline (Disabled,
-- with a PipelinePermanent error saying what happened) instead of leaving a
-- worker retrying forever and pipem saying UpToDate.
CREATE FUNCTION aidb._block_pipelines_of_dropped() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    gone record;
BEGIN
    IF to_regclass('aidb.pipeline_registry') IS NULL THEN
        RETURN;
    END IF;
    FOR gone IN
        SELECT r.id, r.name, o.object_identity,
               CASE WHEN o.objid = r.source THEN 'source' ELSE 'destination' END AS what
        FROM pg_event_trigger_dropped_objects() o
        JOIN aidb.pipeline_registry r ON o.objid IN (r.source, r.destination)
        WHERE o.classid = 'pg_class'::regclass AND o.objsubid = 0
    LOOP
        UPDATE aidb.pipeline_registry r SET auto_processing = 'Disabled' WHERE r.id = gone.id;
        INSERT INTO aidb.pipeline_error_log AS e (pipeline_id, source_key, step, category, message)
        VALUES (gone.id, NULL, gone.what, 'PipelinePermanent',
                format('the %s %s was dropped; delete the pipeline with aidb.delete_pipeline(%L)',
                       gone.what, gone.object_identity, gone.name))
        ON CONFLICT (pipeline_id, category) WHERE source_key IS NULL DO UPDATE
        SET step = EXCLUDED.step, message = EXCLUDED.message,
            attempts = e.attempts + 1, last_attempt = now();
    END LOOP;
END
$$;

CREATE EVENT TRIGGER aidb_note_source_columns ON ddl_command_start
    WHEN TAG IN ('ALTER TABLE', 'ALTER VIEW', 'ALTER MATERIALIZED VIEW', 'ALTER SCHEMA',
                 'ALTER FOREIGN TABLE')
    EXECUTE FUNCTION aidb._note_source_columns();
CREATE EVENT TRIGGER aidb_follow_source_changes ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER VIEW', 'ALTER MATERIALIZED VIEW', 'ALTER SCHEMA',
                 'ALTER FOREIGN TABLE', 'CREATE TABLE')
    EXECUTE FUNCTION aidb._follow_source_changes();
CREATE EVENT TRIGGER aidb_block_pipelines_of_dropped ON sql_drop
    EXECUTE FUNCTION aidb._block_pipelines_of_dropped();
