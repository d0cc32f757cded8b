-- aidb extension script, part 99 (last): who may EXECUTE aidb's functions.
--
-- PostgreSQL grants EXECUTE on every new function to PUBLIC. Internal
-- functions (name starting with _) are not an API: some signal workers,
-- write bookkeeping or take data as given. So everything is revoked here,
-- and each grant below says why that role needs the function.
-- tests/test_grants.py lists every function with its grantees and fails on
-- one that nobody decided: a new function needs a line here (or none, if
-- only the extension's own SECURITY DEFINER functions call it).
--
-- Names without an argument list: a changed signature keeps its decision;
-- a removed or renamed function fails CREATE EXTENSION loudly.

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA aidb FROM PUBLIC;

-- The user-facing API: anyone may call it; each function checks the
-- caller's rights itself (aidb_users membership, ownership of the pipeline
-- or model, privileges on the destination) and says what is missing.
GRANT EXECUTE ON FUNCTION
    aidb.create_model, aidb.delete_model, aidb.encode_text, aidb.encode_text_batch,
    aidb.create_volume, aidb.delete_volume, aidb.list_volume,
    aidb.create_pipeline, aidb.update_pipeline, aidb.delete_pipeline,
    aidb.run_pipeline, aidb.reconcile_pipeline,
    aidb.retry_pipeline_errors, aidb.clear_pipeline_errors,
    aidb.retrieve_text, aidb.retrieve_key,
    aidb.chunk_text_config, aidb.knowledge_base_config, aidb.summarize_text_config,
    aidb.html_parse_config, aidb.pdf_parse_config, aidb.ocr_config
TO PUBLIC;

-- Every PL/Python entry point loads the engine first, as its caller.
GRANT EXECUTE ON FUNCTION aidb._engine_dir, aidb._preloaded, aidb._engine_init TO PUBLIC;
-- API functions call it, as their caller, to refuse non-members clearly.
GRANT EXECUTE ON FUNCTION aidb._require_aidb_user TO PUBLIC;
-- The engine reads the superuser-set bounds as its caller (read-only).
GRANT EXECUTE ON FUNCTION aidb._allowed_model_hosts, aidb._allowed_local_paths,
    aidb._allowed_credentials_env TO PUBLIC;
-- Row-level security policies and the views evaluate it as the reader.
GRANT EXECUTE ON FUNCTION aidb._owns_pipeline TO PUBLIC;
-- The monitoring views (pipes, pipem, workers) call them as the reader;
-- they read shared memory and aidb's own tables.
GRANT EXECUTE ON FUNCTION aidb._worker_entry, aidb._worker_state, aidb._external_worker_alive,
    aidb._pipeline_counts, aidb._pipeline_status TO PUBLIC;
-- retry_/clear_pipeline_errors call it as their caller; it checks ownership.
GRANT EXECUTE ON FUNCTION aidb._pipeline_for_change TO PUBLIC;
-- The engine reads a pipeline's key type as whoever runs or retrieves
-- (catalog facts only).
GRANT EXECUTE ON FUNCTION aidb._pipeline_key, aidb._key_type_facts TO PUBLIC;
-- Owners' destination functions and the engine turn float4 bytes into a
-- vector (a pure conversion).
GRANT EXECUTE ON FUNCTION aidb._float4_vector TO PUBLIC;
-- A batch records content hashes with the rights of whoever runs it; the
-- state table's own privileges decide.
GRANT EXECUTE ON FUNCTION aidb._add_state_rows TO PUBLIC;
-- Retrieval by readers of a destination: SECURITY DEFINER, checks the
-- caller's SELECT on the destination (50_retrieval.sql).
GRANT EXECUTE ON FUNCTION aidb._embed_query, aidb._check_retrieval_destination TO PUBLIC;

-- The SECURITY DEFINER installers that create_/update_/delete_pipeline call
-- as the aidb user; they check membership in the pipeline's owner role.
GRANT EXECUTE ON FUNCTION aidb._install_pipeline_objects, aidb._drop_pipeline_objects
TO aidb_users;
-- create_pipeline checks a source_filter as the aidb user creating it.
GRANT EXECUTE ON FUNCTION aidb._check_source_filter TO aidb_users;
-- Capture functions run as the pipeline's owner (an aidb user): they wake
-- the worker, and a Live pipeline's process the keys in the writing
-- transaction. The errors-cleared trigger wakes it as the owner too.
GRANT EXECUTE ON FUNCTION aidb._wake_pipeline, aidb._process_live, aidb._process_live_keys
TO aidb_users;
-- A background worker logs in as the pipeline's owner.
GRANT EXECUTE ON FUNCTION aidb._run_batch, aidb._record_worker_error TO aidb_users;
-- External workers report their heartbeat as the aidb user running them.
GRANT EXECUTE ON FUNCTION aidb._worker_heartbeat TO aidb_users;

-- No grant (only superusers and aidb's own SECURITY DEFINER functions):
-- _publish_pipeline, _depend_on_extension, _depend_on_extension_if_possible,
-- the trigger functions _capture_keys, _registry_row_changed and
-- _errors_cleared (a trigger needs EXECUTE only to be created), and the
-- installer's helpers (_build_pipeline_objects, _create_bookkeeping,
-- _define_owner_function, _source_sql, _create_source_functions,
-- _create_destination_function, _capture_body, _capture_enqueue,
-- _create_capture_triggers, _drop_pipeline_objects_unchecked).
