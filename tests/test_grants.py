"""Who may EXECUTE each function of schema aidb (issue #12, item 5).

Every function of the installed extension is listed with the roles that
hold EXECUTE on it (besides its owner), and compared with DECIDED below. A
function nobody decided fails the test by name: add it to DECIDED, and its
grant (with a one-line reason) to sql/ext/99_grants.sql. Then, as an
attacker: a plain login role calls the internal functions that matter and
is refused.
"""

import uuid

import psycopg
import pytest

from tests.support.common import TEST_API_KEY, wait_for
from tests.support.pipeline_checks import create_docs, create_fake_model, create_pipeline
from tests.support.workers import running_worker

PUBLIC = "PUBLIC"
USERS = "aidb_users"
NOBODY = frozenset()

# name (overloads share a decision) -> roles with EXECUTE besides the owner.
DECIDED = {
    # The user-facing API: each function checks the caller's rights itself.
    **{name: {PUBLIC} for name in (
        "create_model", "delete_model", "encode_text", "encode_text_batch",
        "create_volume", "delete_volume", "list_volume",
        "create_pipeline", "update_pipeline", "delete_pipeline", "run_pipeline",
        "reconcile_pipeline", "retry_pipeline_errors", "clear_pipeline_errors",
        "retrieve_text", "retrieve_key", "chunk_text_config", "knowledge_base_config",
        "summarize_text_config", "html_parse_config", "pdf_parse_config", "ocr_config")},
    # Internal, but run with the caller's rights by the API or the views.
    "_engine_dir": {PUBLIC}, "_preloaded": {PUBLIC}, "_engine_init": {PUBLIC},
    "_require_aidb_user": {PUBLIC}, "_check_may_delete": {PUBLIC},
    "_allowed_model_hosts": {PUBLIC}, "_allowed_local_paths": {PUBLIC},
    "_allowed_credentials_env": {PUBLIC},
    "_owns_pipeline": {PUBLIC},
    "_worker_entry": {PUBLIC}, "_worker_state": {PUBLIC}, "_external_worker_alive": {PUBLIC},
    "_pipeline_counts": {PUBLIC}, "_pipeline_status": {PUBLIC},
    "_pipeline_for_change": {PUBLIC},
    "_pipeline_key": {PUBLIC}, "_key_type_facts": {PUBLIC},
    "_float4_vector": {PUBLIC}, "_add_state_rows": {PUBLIC},
    "_embed_query": {PUBLIC}, "_check_retrieval_destination": {PUBLIC},
    "_destination_is_shared": {PUBLIC}, "_destination_scope": {PUBLIC},
    "_distance_operator": {PUBLIC},
    "_owner_function_problem": {PUBLIC},
    # Run by aidb users and pipeline owners only.
    "_install_pipeline_objects": {USERS}, "_drop_pipeline_objects": {USERS},
    "_check_source_filter": {USERS},
    "_wake_pipeline": {USERS}, "_process_live": {USERS}, "_process_live_keys": {USERS},
    "_run_batch": {USERS}, "_record_worker_error": {USERS}, "_worker_heartbeat": {USERS},
    # Nobody: superusers and aidb's own SECURITY DEFINER functions only.
    **{name: NOBODY for name in (
        "_publish_pipeline", "_depend_on_extension", "_protect_registry",
        "_capture_keys", "_registry_row_changed", "_errors_cleared",
        "_guard_aidb_objects", "_guard_aidb_grants", "_guard_aidb_drops", "_depend_restored_objects",
        "_note_source_columns", "_follow_source_changes", "_block_pipelines_of_dropped",
        "_follow_renamed_columns", "_column_now", "_check_key_type_unchanged", "_check_filter_still_parses",
        "_build_pipeline_objects", "_create_bookkeeping", "_define_owner_function",
        "_source_sql", "_create_source_functions", "_create_destination_function",
        "_capture_body", "_capture_enqueue", "_create_capture_triggers",
        "_destination_keys_as_text", "_destination_key_type", "_destination_key_match",
        "_check_shared_destination_kept",
        "_drop_pipeline_objects_unchecked", "_built_names_changed", "_partition_lacks_capture")},
}

# Every role holding EXECUTE on each function of the extension, its owner aside.
GRANTEES = """
    SELECT p.proname, p.oid::regprocedure::text AS signature,
           coalesce(array_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                   ELSE pg_get_userbyid(a.grantee) END ORDER BY 1)
                    FILTER (WHERE a.grantee IS NOT NULL), '{}') AS grantees
    FROM pg_proc p
    JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
    JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'aidb'
    LEFT JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
           ON a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
    GROUP BY p.oid, p.proname ORDER BY 2
"""


@pytest.fixture(scope="module")
def functions(cluster):
    with psycopg.connect(cluster.dsn("aidb_template"), autocommit=True) as conn:
        return conn.execute(GRANTEES).fetchall()


@pytest.mark.smoke
def test_every_function_has_a_decided_grant(functions):
    undecided = [f"{signature}: EXECUTE held by {sorted(grantees) or 'nobody'}"
                 for name, signature, grantees in functions if name not in DECIDED]
    assert not undecided, (
        "nobody decided who may EXECUTE these functions; add each to DECIDED in "
        "tests/test_grants.py and its GRANT (with a reason) to sql/ext/99_grants.sql:\n  "
        + "\n  ".join(undecided))


def test_each_function_is_granted_as_decided(functions):
    wrong = [f"{signature}: EXECUTE held by {sorted(grantees) or 'nobody'}, "
             f"decided {sorted(DECIDED[name]) or 'nobody'}"
             for name, signature, grantees in functions
             if name in DECIDED and set(grantees) != set(DECIDED[name])]
    assert not wrong, "grants differ from DECIDED (sql/ext/99_grants.sql):\n  " + "\n  ".join(wrong)


def test_every_decision_names_an_existing_function(functions):
    stale = sorted(set(DECIDED) - {name for name, _, _ in functions})
    assert not stale, f"DECIDED names functions the extension no longer has: {stale}"


# --- as an attacker ------------------------------------------------------------------------------

@pytest.fixture
def stranger(cluster, dbname):
    """A login role with no aidb membership, connected to the test database."""
    role = "r_" + uuid.uuid4().hex[:10]
    cluster.psql(f"CREATE ROLE {role} LOGIN")
    with psycopg.connect(cluster.dsn(dbname, user=role), autocommit=True) as connection:
        yield connection
    cluster.psql(f"DROP ROLE {role}")


@pytest.mark.parametrize("call", [
    "aidb._wake_pipeline(1, true)",
    "aidb._run_batch(1)",
    "aidb._record_worker_error(1, 'forged')",
    "aidb._publish_pipeline(1, 10, true, 'forged', true)",
    "aidb._process_live(1, ARRAY[1])",
    "aidb._drop_pipeline_objects_unchecked(1)",
    "aidb._depend_on_extension('pg_class'::regclass, 1)",
])
def test_a_stranger_cannot_call_internal_functions(stranger, call):
    with pytest.raises(psycopg.errors.InsufficientPrivilege,
                       match="permission denied for function"):
        stranger.execute(f"SELECT {call}")


def test_a_stranger_still_reads_the_views_and_uses_the_api(stranger):
    for view in ("aidb.pipelines", "aidb.pipem", "aidb.pipeline_errors", "aidb.models",
                 "aidb.workers"):
        stranger.execute(f"SELECT * FROM {view}").fetchall()
    assert stranger.execute("SELECT aidb.chunk_text_config(100)").fetchone()[0] is not None
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not a member of aidb_users"):
        stranger.execute("SELECT aidb.delete_model('minilm')")


@pytest.fixture
def make_role(cluster, dbname):
    """Creates login roles (optionally in aidb_users); dropped after the test."""
    made = []

    def make(in_aidb_users):
        role = "r_" + uuid.uuid4().hex[:10]
        cluster.psql(f"CREATE ROLE {role} LOGIN" + (" IN ROLE aidb_users" if in_aidb_users else ""))
        made.append(role)
        return role
    yield make
    for role in made:
        cluster.psql(f"REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role}", dbname=dbname)
        cluster.psql(f"DROP ROLE {role}")


def test_a_pipeline_owner_outside_aidb_users_still_captures(cluster, dbname, conn, model_server,
                                                           make_role):
    """Its capture functions run as the owner and call internal functions
    (_wake_pipeline): the installer grants them to each owner."""
    owner = make_role(in_aidb_users=False)
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    create_docs(conn, [(1, "one"), (2, "two")])
    conn.execute(f"GRANT SELECT, TRIGGER ON docs TO {owner}")
    create_pipeline(conn, owner_role=owner)
    conn.execute("INSERT INTO docs VALUES (3, 'three')")
    conn.execute("UPDATE docs SET id = 4 WHERE id = 3")       # a key change: the capture function
    conn.execute("DELETE FROM docs WHERE id = 1")
    conn.execute("TRUNCATE docs")


def test_another_aidb_user_cannot_wake_a_pipelines_worker(cluster, dbname, conn, model_server,
                                                          make_role):
    """Waking ends a failing worker's back-off: only the owner's members may."""
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    create_docs(conn, [(1, "one")])
    create_pipeline(conn, auto_processing="Background")
    wait_for(lambda: running_worker(conn), message="the victim's worker")
    victim = conn.execute("SELECT id FROM aidb.pipeline_registry WHERE name = 'p'").fetchone()[0]
    attacker = make_role(in_aidb_users=True)
    with psycopg.connect(cluster.dsn(dbname, user=attacker), autocommit=True) as session:
        with pytest.raises(psycopg.errors.InsufficientPrivilege,
                           match=f"permission denied to wake the worker of aidb pipeline {victim}"):
            session.execute("SELECT aidb._wake_pipeline(%s, true)", (victim,))
    conn.execute("SELECT aidb._wake_pipeline(%s, true)", (victim,))     # its owner may
