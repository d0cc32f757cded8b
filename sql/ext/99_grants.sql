-- aidb extension script, part 99 (last): who may EXECUTE aidb's functions.
--
-- PostgreSQL grants EXECUTE on every new function to PUBLIC. Internal
-- functions (name starting with _) are not an API: some signal workers,
-- write bookkeeping or take data as given. So everything is revoked here,
-- and each grant below says why that role needs the function.
--
-- Grants go by name (every overload), and a name the script does not define
-- is skipped rather than failing CREATE EXTENSION: tests/test_grants.py is
-- the strict side. It lists every function with its grantees and fails on
-- one that nobody decided, or on a decision naming a function that is gone.
-- A new function needs a row here (or none, if only superusers and aidb's
-- own SECURITY DEFINER functions call it) and one in that test.

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA aidb FROM PUBLIC;

DO $grants$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT p.oid::pg_catalog.regprocedure AS function, d.grantee
        FROM (VALUES
            -- The user-facing API: anyone may call it; each function checks the
            -- caller's rights itself (aidb_users membership, ownership of the
            -- pipeline or model, privileges on the destination) and says what
            -- is missing.
            ('create_model', 'PUBLIC'), ('delete_model', 'PUBLIC'),
            ('encode_text', 'PUBLIC'), ('encode_text_batch', 'PUBLIC'),
            ('create_volume', 'PUBLIC'), ('delete_volume', 'PUBLIC'), ('list_volume', 'PUBLIC'),
            ('create_pipeline', 'PUBLIC'), ('update_pipeline', 'PUBLIC'),
            ('delete_pipeline', 'PUBLIC'), ('run_pipeline', 'PUBLIC'),
            ('reconcile_pipeline', 'PUBLIC'), ('retry_pipeline_errors', 'PUBLIC'),
            ('clear_pipeline_errors', 'PUBLIC'), ('retrieve_text', 'PUBLIC'),
            ('retrieve_key', 'PUBLIC'), ('chunk_text_config', 'PUBLIC'),
            ('knowledge_base_config', 'PUBLIC'), ('summarize_text_config', 'PUBLIC'),
            ('html_parse_config', 'PUBLIC'), ('pdf_parse_config', 'PUBLIC'),
            ('ocr_config', 'PUBLIC'),
            -- Every PL/Python entry point loads the engine first, as its caller.
            ('_engine_dir', 'PUBLIC'), ('_preloaded', 'PUBLIC'), ('_engine_init', 'PUBLIC'),
            -- API functions call it, as their caller, to refuse non-members clearly.
            ('_require_aidb_user', 'PUBLIC'),
            -- delete_model/delete_volume (run as their caller) check with it.
            ('_check_may_delete', 'PUBLIC'),
            -- The engine reads the superuser-set bounds as its caller (read-only).
            ('_allowed_model_hosts', 'PUBLIC'), ('_allowed_local_paths', 'PUBLIC'),
            ('_allowed_credentials_env', 'PUBLIC'),
            -- Row-level security policies and the views evaluate it as the reader.
            ('_owns_pipeline', 'PUBLIC'),
            -- The monitoring views (pipes, pipem, workers) call them as the
            -- reader; they read shared memory and aidb's own tables.
            ('_worker_entry', 'PUBLIC'), ('_worker_state', 'PUBLIC'),
            ('_external_worker_alive', 'PUBLIC'), ('_pipeline_counts', 'PUBLIC'),
            ('_pipeline_status', 'PUBLIC'),
            -- retry_/clear_pipeline_errors call it as their caller; it checks ownership.
            ('_pipeline_for_change', 'PUBLIC'),
            -- The engine reads a pipeline's key type as whoever runs or
            -- retrieves (catalog facts only).
            ('_pipeline_key', 'PUBLIC'), ('_key_type_facts', 'PUBLIC'),
            -- Owners' destination functions and the engine turn float4 bytes
            -- into a vector (a pure conversion).
            ('_float4_vector', 'PUBLIC'),
            -- A batch records content hashes with the rights of whoever runs
            -- it; the state table's own privileges decide.
            ('_add_state_rows', 'PUBLIC'),
            -- The engine and aidb.pipem check a pipeline's owner functions
            -- before use, as whoever runs or monitors it (catalog facts only).
            ('_owner_function_problem', 'PUBLIC'),
            -- Retrieval, aidb.pipem's count, the vector index and
            -- delete_pipeline scope a shared destination to a pipeline's rows
            -- as whoever calls them (catalog facts only).
            ('_destination_is_shared', 'PUBLIC'), ('_destination_scope', 'PUBLIC'),
            -- Retrieval by readers of a destination: SECURITY DEFINER, checks
            -- the caller's SELECT on the destination (50_retrieval.sql).
            ('_embed_query', 'PUBLIC'), ('_check_retrieval_destination', 'PUBLIC'),
            -- Retrieval names its distance operator (a fixed mapping).
            ('_distance_operator', 'PUBLIC'),

            -- The SECURITY DEFINER installers that create_/update_/
            -- delete_pipeline call as the aidb user; they check membership in
            -- the pipeline's owner role.
            ('_install_pipeline_objects', 'aidb_users'), ('_drop_pipeline_objects', 'aidb_users'),
            -- create_pipeline checks a source_filter as the aidb user creating it.
            ('_check_source_filter', 'aidb_users'),
            -- Capture functions run as the pipeline's owner (an aidb user):
            -- they wake the worker, and a Live pipeline's process the keys in
            -- the writing transaction. The errors-cleared trigger wakes it as
            -- the owner too.
            ('_wake_pipeline', 'aidb_users'), ('_process_live', 'aidb_users'),
            ('_process_live_keys', 'aidb_users'),
            -- A background worker logs in as the pipeline's owner.
            ('_run_batch', 'aidb_users'), ('_record_worker_error', 'aidb_users'),
            -- External workers report their heartbeat as the aidb user running them.
            ('_worker_heartbeat', 'aidb_users')
        ) AS d(name, grantee)
        JOIN pg_catalog.pg_proc p
          ON p.proname OPERATOR(pg_catalog.=) d.name
         AND p.pronamespace OPERATOR(pg_catalog.=) 'aidb'::pg_catalog.regnamespace
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s', g.function, g.grantee);
    END LOOP;
END
$grants$;

-- Pipeline owners outside aidb_users get _wake_pipeline, _process_live,
-- _process_live_keys, _run_batch and _record_worker_error from the installer
-- (aidb._create_bookkeeping), for their own capture functions and worker;
-- _wake_pipeline also checks that its caller acts for the pipeline's owner.
--
-- No grant (only superusers and aidb's own SECURITY DEFINER functions):
-- _publish_pipeline, _depend_on_extension; the trigger functions
-- _capture_keys, _registry_row_changed and _errors_cleared and the event
-- trigger functions _guard_aidb_*, _depend_restored_objects, _note_source_columns,
-- _follow_source_changes and _block_pipelines_of_dropped (a trigger needs
-- EXECUTE only to be created; the event triggers are SECURITY DEFINER); the
-- helpers of those and of the installer (_build_pipeline_objects,
-- _create_bookkeeping, _define_owner_function, _source_sql,
-- _create_source_functions, _create_destination_function, _capture_body,
-- _destination_keys_as_text, _destination_key_type, _destination_key_match,
-- _check_shared_destination_kept,
-- _capture_enqueue, _create_capture_triggers, _drop_pipeline_objects_unchecked,
-- _follow_renamed_columns, _column_now, _check_key_type_unchanged, _check_filter_still_parses,
-- _built_names_changed, _partition_lacks_capture).

-- A pipeline's registry row, once created, may change only in what
-- aidb.update_pipeline changes: its source, destination, steps, owner and
-- columns are what aidb built its objects from and checked at creation
-- (renames are followed by aidb's own event triggers, as a superuser).
-- Here, in the code part, so that upgrades apply it too.
REVOKE UPDATE ON aidb.pipeline_registry FROM aidb_users;
GRANT UPDATE (auto_processing, batch_size, background_sync_interval)
    ON aidb.pipeline_registry TO aidb_users;
