"""Change capture for table sources: the body of the general capture
function aidb._capture_<id>().

The capture triggers are statement-level, with transition tables, so their
cost does not grow with a statement's rows beyond the keys themselves
(INSERT ... SELECT, COPY, bulk UPDATE). aidb._install_pipeline_objects
creates them (sql/ext/20_pipelines.sql). INSERT and UPDATE triggers of
non-Live pipelines call the C fast path aidb._capture_keys() (src/capture.c),
which appends keys to the backlog itself and calls this function only for
an UPDATE that changes a key; every other trigger calls this function.
What it does:
  INSERT    enqueue the new keys
  UPDATE    enqueue keys whose data changed, new keys of a key change, and
            the old keys of a key change (after deleting their rows at once)
  DELETE    delete the keys' destination rows at once, and enqueue them (so
            that a batch already running on them cannot resurrect them)
  TRUNCATE  empty destination, backlog and state
With a source_filter, any change of an updated row enqueues its key (the
filter may read any column); a batch then skips keys whose content hash did
not change, so nothing is re-embedded needlessly.

In Live mode the same triggers hand the keys to the engine inside the
writing transaction instead of the backlog.
"""


def capture_function_body(pipeline, live):
    """plpgsql body of aidb._capture_<id>(); `live` hands keys to the engine."""
    key, data = pipeline.key_column, pipeline.data_column
    changed = (f"o.{data}::text IS DISTINCT FROM n.{data}::text" if not pipeline.source_filter
               else "row_to_json(o)::text IS DISTINCT FROM row_to_json(n)::text")
    forget_keys = (f"DELETE FROM {pipeline.destination} d USING {{keys}} g "
                   f"WHERE d.source_key = g.{key}; "
                   f"DELETE FROM {pipeline.state} s USING {{keys}} g WHERE s.key = g.{key};")
    gone_keys = (f"(SELECT o.{key} FROM aidb_old o "
                 f"WHERE NOT EXISTS (SELECT FROM aidb_new n WHERE n.{key} = o.{key}))")
    enqueue = _enqueue_live(pipeline) if live else _enqueue_backlog(pipeline)
    return f"""
BEGIN
    IF TG_OP = 'INSERT' THEN
        {enqueue.format(keys=f"SELECT n.{key} FROM aidb_new n")}
    ELSIF TG_OP = 'UPDATE' THEN
        {forget_keys.format(keys=gone_keys)}
        {enqueue.format(keys=f'''SELECT n.{key} FROM aidb_new n
                 LEFT JOIN aidb_old o ON o.{key} = n.{key}
                 WHERE o.{key} IS NULL OR {changed}
              UNION ALL SELECT g.{key} FROM {gone_keys} g''')}
    ELSIF TG_OP = 'DELETE' THEN
        {forget_keys.format(keys="aidb_old")}
        {enqueue.format(keys=f"SELECT o.{key} FROM aidb_old o")}
    ELSIF TG_OP = 'TRUNCATE' THEN
        TRUNCATE {pipeline.destination}, {pipeline.backlog}, {pipeline.state};
    END IF;
    RETURN NULL;
END
"""


def _enqueue_backlog(pipeline):
    # The worker wakes when this transaction commits (a no-op without workers).
    return (f"INSERT INTO {pipeline.backlog} (key) {{keys}}; "
            f"PERFORM aidb._wake_pipeline({pipeline.id});")


def _enqueue_live(pipeline):
    # The engine processes the keys now, in this transaction, as the owner.
    return (f"PERFORM aidb._process_live({pipeline.id}, "
            f"ARRAY(SELECT k::text FROM ({{keys}}) AS live_keys(k)));")
